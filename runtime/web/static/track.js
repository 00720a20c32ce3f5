// track(baseUrl, jobId): a store of one trioforge job's status and progress, live.
//
// The store follows the Svelte store contract (subscribe(fn) calls fn with the current
// value at once and on every change, and returns an unsubscribe function), so it is
// `$store` in Svelte; getSnapshot() makes it React's useSyncExternalStore(store.subscribe,
// store.getSnapshot). It listens to the job's Server-Sent Events while anyone subscribes,
// reconnects with backoff when the stream drops, and stops at a terminal state.

const TERMINAL = new Set(["completed", "dead", "cancelled"]);

export function track(baseUrl, jobId, options = {}) {
  const base = String(baseUrl).replace(/\/+$/, "");
  const firstDelay = options.retryDelay ?? 500;
  const maxDelay = options.maxRetryDelay ?? 10000;
  const url = `${base}/api/jobs/${encodeURIComponent(jobId)}`;
  let value = {
    id: jobId, name: null, queue: null, status: "unknown", terminal: false, attempt: 0,
    max_attempts: 0, progress: null, message: null, error: null, result: null,
    cancel_requested: false, created_at: null, started_at: null, finished_at: null,
    connected: false,
  };
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
      const job = JSON.parse(event.data);
      set({ ...job, connected: true });
      if (job.terminal || TERMINAL.has(job.status)) finish();
    });
    source.addEventListener("end", finish);
    source.onerror = () => {
      if (done) return;
      close();
      set({ ...value, connected: false });
      // Is the job there at all (a 404 ends the stream for good), or already finished?
      fetch(url).then(async (response) => {
        if (response.status === 404) {
          set({ ...value, status: "not_found", terminal: true });
          finish();
        } else if (response.ok) {
          const job = await response.json();
          if (job.terminal) {
            set({ ...job, connected: false });
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
