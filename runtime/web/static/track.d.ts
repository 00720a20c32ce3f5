// Types of track.js: one trioforge job, or one workflow run, followed live over
// Server-Sent Events.

export type JobStatus =
  | "scheduled" | "available" | "running" | "retrying"
  | "completed" | "dead" | "cancelled" | "compensated";

/** Seconds a finished job is kept, per final state (null: forever). */
export interface Retention {
  completed: number | null;
  cancelled: number | null;
  dead: number | null;
  compensated: number | null;
}

/** What a job's store holds; `R` is the job's result type (generated bindings give it). */
export interface JobUpdate<R = unknown> {
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
  /** The handler's JSON return value, once completed (null before). */
  result: R | null;
  cancel_requested: boolean;
  /** ISO 8601 in UTC ("2026-12-03T10:24:38.123Z"); `new Date(value)` reads it. */
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  /** Its own retention once finished (`retain=`): seconds per final state, null for
   * kept forever; null when its queue's retention applies. */
  retain: Retention | null;
  /** Whether the event stream is open right now. */
  connected: boolean;
}

export type StepKind =
  | "step" | "sleep" | "signal" | "child" | "compensating" | "compensation";

export type StepStatus = "pending" | "running" | "completed" | "failed" | "compensated";

/** One entry of a run's durable record. */
export interface StepUpdate {
  seq: number;
  kind: StepKind;
  name: string;
  status: StepStatus;
  attempts: number;
  started_at: string | null;
  finished_at: string | null;
  /** Seconds from start to finish, once finished. */
  duration: number | null;
  /** The step's JSON result (a child start: the child's job id). */
  result: unknown;
  error: string | null;
  /** A sleep's wake time, a signal wait's deadline, a failed step's next attempt. */
  wake_at: string | null;
  /** A child start's job id. */
  child: number | null;
  /** Whether the entry belongs to the run's undo. */
  compensation: boolean;
  /** The result, error or wake time in a few words. */
  detail: string;
}

/** What a run's store holds: the job's fields, its workflow and every step so far. */
export interface RunUpdate<R = unknown> extends JobUpdate<R> {
  /** The workflow's name (without its version); null until the first event. */
  workflow: string | null;
  version: number | null;
  /** When a waiting run wakes; null while it runs, or waits for a signal or its children. */
  wake_at: string | null;
  updated_at: string | null;
  steps: StepUpdate[];
  /** Signals sent and not yet taken by a wait, by name. */
  pending_signals: string[];
  /** The run's child jobs, by id. */
  children: number[];
}

export interface TrackOptions {
  /** First reconnect delay in ms (default 500), doubling up to maxRetryDelay. */
  retryDelay?: number;
  /** Longest reconnect delay in ms (default 10000). */
  maxRetryDelay?: number;
}

/** A Svelte-contract store: also usable with React's useSyncExternalStore. */
export interface JobStore<R = unknown> {
  subscribe(run: (value: JobUpdate<R>) => void): () => void;
  getSnapshot(): JobUpdate<R>;
}

/** A run's store, with the same contract as {@link JobStore}. */
export interface RunStore<R = unknown> {
  subscribe(run: (value: RunUpdate<R>) => void): () => void;
  getSnapshot(): RunUpdate<R>;
}

export function track(baseUrl: string, jobId: number, options?: TrackOptions): JobStore;
/** With the job's result type (`track<Receipt>(base, id)`): the generated bindings use it. */
export function track<R>(baseUrl: string, jobId: number, options?: TrackOptions): JobStore<R>;

export function trackRun(baseUrl: string, runId: number, options?: TrackOptions): RunStore;
/** With the workflow's result type. */
export function trackRun<R>(baseUrl: string, runId: number, options?: TrackOptions): RunStore<R>;
