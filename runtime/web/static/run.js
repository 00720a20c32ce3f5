// A running workflow's page: follows its run's events and redraws its steps.
// Loaded as a file (the dashboard's CSP runs no inline script); its data comes from the
// attributes of its own <script id="run-script"> tag.
const { root, run: runId } = document.getElementById("run-script").dataset;
const pending = new Set(["scheduled", "available", "retrying"]);
const when = (iso) => iso === null ? "—"
  : new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC";
const text = (id, value) => { document.getElementById(id).textContent = value; };
const cell = (row, value, cls) => {
  const td = row.insertCell();
  if (cls) td.className = cls;
  if (value instanceof Node) td.append(value); else td.textContent = value;
  return td;
};
const badge = (status) => {
  const span = document.createElement("span");
  span.className = `state ${status}`;
  span.textContent = status;
  return span;
};
const render = (run) => {
  const state = document.getElementById("state");
  state.textContent = run.status;
  state.className = `state ${run.status}`;
  text("cancel-note", run.cancel_requested ? "(cancel requested)" : "");
  text("wake", run.wake_at !== null ? when(run.wake_at)
    : pending.has(run.status) ? "a signal or its children" : "—");
  text("attempt", `${run.attempt} of ${run.max_attempts}`);
  text("started", when(run.started_at));
  text("updated", when(run.updated_at));
  text("finished", when(run.finished_at));
  text("signals", run.pending_signals.join(", ") || "none");
  text("error", run.error ?? "none");
  text("result", run.result === null ? "none" : JSON.stringify(run.result, null, 2));
  const body = document.createElement("tbody");
  for (const s of run.steps) {
    const row = body.insertRow();
    row.dataset.seq = String(s.seq);
    if (s.compensation) row.className = "undo";
    cell(row, String(s.seq), "num");
    cell(row, s.kind, "kind");
    cell(row, s.name);
    cell(row, badge(s.status));
    cell(row, String(s.attempts), "num");
    cell(row, when(s.started_at));
    cell(row, when(s.finished_at));
    cell(row, s.duration === null ? "" : `${s.duration.toFixed(3)} s`, "num");
    if (s.child !== null) {
      const link = document.createElement("a");
      link.href = `${root}/jobs/${s.child}`;
      link.textContent = `child job ${s.child}`;
      cell(row, link);
    } else cell(row, s.detail);
  }
  if (!run.steps.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = 9; td.className = "note"; td.textContent = "no step recorded yet";
  }
  document.querySelector("#steps tbody").replaceWith(body);
  if (run.terminal) document.getElementById("cancel")?.closest("form")?.parentElement?.remove();
};
const events = new EventSource(`${root}/api/workflows/${runId}/events`);
events.addEventListener("update", (e) => render(JSON.parse(e.data)));
events.addEventListener("end", () => events.close());
