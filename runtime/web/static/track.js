// track(baseUrl, jobId): a store of one trioforge job's status and progress, live.
// trackRun(baseUrl, runId): the same for a workflow run, its steps included.
//
// Each store follows the Svelte store contract (subscribe(fn) calls fn with the current
// value at once and on every change, and returns an unsubscribe function), so it is
// `$store` in Svelte; getSnapshot() makes it React's useSyncExternalStore(store.subscribe,
// store.getSnapshot). It listens to the job's (or run's) Server-Sent Events while anyone
// subscribes, reconnects with backoff when the stream drops, and stops at a terminal state.

const TERMINAL = new Set(["completed", "dead", "cancelled", "compensated"]);

function jobBefore(id) {
  return {
    id, name: null, queue: null, status: "unknown", terminal: false, attempt: 0,
    max_attempts: 0, progress: null, message: null, error: null, result: null,
    cancel_requested: false, created_at: null, started_at: null, finished_at: null,
    retain: null, connected: false,
  };
}

function trimmed(baseUrl) {
  return String(baseUrl).replace(/\/+$/, "");
}

export function track(baseUrl, jobId, options = {}) {
  const url = `${trimmed(baseUrl)}/api/jobs/${encodeURIComponent(jobId)}`;
  return follow(url, jobBefore(jobId), options);
}

export function trackRun(baseUrl, runId, options = {}) {
  const url = `${trimmed(baseUrl)}/api/workflows/${encodeURIComponent(runId)}`;
  const before = {
    ...jobBefore(runId), workflow: null, version: null, wake_at: null, updated_at: null,
    steps: [], pending_signals: [], children: [],
  };
  return follow(url, before, options);
}

// The store of the view at `url` (its stream at `${url}/events`), `value` until the first
// event: one implementation for jobs and runs, whose views differ only in their fields.
function follow(url, value, options) {
  const firstDelay = options.retryDelay ?? 500;
  const maxDelay = options.maxRetryDelay ?? 10000;
  const subscribers = new Set();
  let source = null;
  let timer = null;
  let delay = firstDelay;
  let done = false;

  function set(next) {
    value = next;
    for (const fn of [...subscribers]) fn(value);
  }

  function finish() {
    done = true;
    close();
  }

  function close() {
    if (source !== null) source.close();
    source = null;
    clearTimeout(timer);
    timer = null;
  }

  function connect() {
    if (done || source !== null || subscribers.size === 0) return;
    source = new EventSource(`${url}/events`);
    source.addEventListener("update", (event) => {
      delay = firstDelay;
      const view = JSON.parse(event.data);
      set({ ...view, connected: true });
      if (view.terminal || TERMINAL.has(view.status)) finish();
    });
    source.addEventListener("end", finish);
    source.onerror = () => {
      if (done) return;
      close();
      set({ ...value, connected: false });
      // Is it there at all (a 404 ends the stream for good), or already finished?
      fetch(url).then(async (response) => {
        if (response.status === 404) {
          set({ ...value, status: "not_found", terminal: true });
          finish();
        } else if (response.ok) {
          const view = await response.json();
          if (view.terminal) {
            set({ ...view, connected: false });
            finish();
            return;
          }
          retry();
        } else {
          retry();
        }
      }, retry);
    };
  }

  function retry() {
    if (done || subscribers.size === 0 || timer !== null) return;
    timer = setTimeout(() => { timer = null; connect(); }, delay);
    delay = Math.min(delay * 2, maxDelay);
  }

  return {
    subscribe(fn) {
      subscribers.add(fn);
      fn(value);
      connect();
      return () => {
        subscribers.delete(fn);
        if (subscribers.size === 0) close();
      };
    },
    getSnapshot() {
      return value;
    },
  };
}
