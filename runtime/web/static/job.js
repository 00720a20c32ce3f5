// A job page: draws the progress bar, and follows the job while it is not finished.
// Loaded as a file (the dashboard's CSP runs no inline script); its data comes from the
// attributes of its own <script id="job-script"> tag.
import { track } from "../track.js";

const { root, job: jobId, live } = document.getElementById("job-script").dataset;
const text = (id, value) => { document.getElementById(id).textContent = value; };
const bar = document.getElementById("bar");
const draw = (pct) => {
  bar.firstElementChild.style.width = `${pct}%`;
  bar.setAttribute("aria-valuenow", String(pct));
};
draw(Number(bar.getAttribute("aria-valuenow")) || 0);

if (live === "true") {
  const store = track(root, Number(jobId));
  store.subscribe((job) => {
    if (job.status === "unknown") return;
    const state = document.getElementById("state");
    state.textContent = job.status;
    state.className = `state ${job.status}`;
    // A completed job is done, whatever it last reported.
    const pct = job.status === "completed" ? 100 : job.progress;
    draw(pct ?? 0);
    text("progress", pct === null ? "" : `${Math.round(pct)}%`);
    text("message", job.message ?? "");
    text("attempt", `${job.attempt} of ${job.max_attempts}`);
    text("error", job.error ?? "none");
    text("result", job.result === null ? "none" : JSON.stringify(job.result, null, 2));
    if (job.terminal) {
      document.getElementById("cancel")?.closest("form")?.remove();
      // Finished: it may be deleted now (the server refuses it before).
      document.getElementById("delete")?.closest("form")?.removeAttribute("hidden");
      text("finished", job.finished_at ? new Date(job.finished_at).toISOString() : "—");
    }
  });
}
