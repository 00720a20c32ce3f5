// Types of track.js: one trioforge job followed live over Server-Sent Events.

export type JobStatus =
  | "scheduled" | "available" | "running" | "retrying"
  | "completed" | "dead" | "cancelled";

export interface JobUpdate {
  id: number;
  name: string | null;
  queue: string | null;
  /** "unknown" until the first event; "not_found" if the server has no such job. */
  status: JobStatus | "unknown" | "not_found";
  terminal: boolean;
  attempt: number;
  max_attempts: number;
  /** 0-100, as the handler reported it with ctx.progress(); null before any. */
  progress: number | null;
  message: string | null;
  error: string | null;
  /** The handler's JSON return value, once completed. */
  result: unknown;
  cancel_requested: boolean;
  /** ISO 8601 in UTC ("2026-12-03T10:24:38.123Z"); `new Date(value)` reads it. */
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  /** Whether the event stream is open right now. */
  connected: boolean;
}

export interface TrackOptions {
  /** First reconnect delay in ms (default 500), doubling up to maxRetryDelay. */
  retryDelay?: number;
  /** Longest reconnect delay in ms (default 10000). */
  maxRetryDelay?: number;
}

/** A Svelte-contract store: also usable with React's useSyncExternalStore. */
export interface JobStore {
  subscribe(run: (value: JobUpdate) => void): () => void;
  getSnapshot(): JobUpdate;
}

export function track(baseUrl: string, jobId: number, options?: TrackOptions): JobStore;
