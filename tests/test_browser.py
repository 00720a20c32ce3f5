"""The dashboard and track.js in real Chromium (Playwright driving the system binary).

Screenshots of the main pages go to ``$TRIOFORGE_SCREENSHOTS`` when set (``make
screenshots`` writes them to docs/screenshots/).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import trioforge
from tests.support import codegen_jobs
from tests.support.browser import CHROMIUM, Served, require_browser
from tests.support.typescript import compile_ts, track_file, with_track
from trioforge import JobContext, JobState, Registry, Retry, WorkflowContext
from trioforge._codegen import typescript

TOKEN = "browser-test-token"


def make_registry(gate: threading.Event) -> Registry:
    """The test jobs; ``images:track`` holds at 50% until ``gate`` is set."""
    registry = Registry()

    @registry.job("reports:crawl", queue="reports")
    async def crawl(ctx: JobContext, pages: int) -> None:
        for page in range(pages):
            await ctx.progress(100 * page / pages, f"page {page} of {pages}")
            await trio.sleep(0.25)
        await trio.sleep_forever()  # until cancelled from the dashboard

    @registry.job("images:resize", public=True)
    async def resize(ctx: JobContext, size: int) -> dict[str, int]:
        for pct in (25, 50, 75):
            await ctx.progress(pct, f"{pct}% <resized>")
            await trio.sleep(0.15)
        return {"pixels": size * size}

    @registry.job("images:track", public=True)
    async def tracked(ctx: JobContext, size: int) -> dict[str, int]:
        await ctx.progress(50, "50% <resized>")
        await trio.to_thread.run_sync(gate.wait, abandon_on_cancel=True)
        return {"pixels": size * size}

    def release(order: str) -> None:
        pass

    @registry.workflow("orders:fulfil", queue="default")
    async def fulfil(ctx: WorkflowContext, order: str) -> str:
        await ctx.step("reserve <stock>", lambda o: f"reserved {o}", order, compensate=release)
        await ctx.step("charge", lambda: {"amount": 42})
        await ctx.start_child("images:resize", 8)
        approved = await ctx.wait_for_signal("approved")
        await ctx.step("ship", lambda: f"shipped by {approved}")
        return f"fulfilled {order}"

    @registry.job("mail:send", queue="mail", retry=Retry(max_attempts=1))
    async def send(ctx: JobContext, to: str) -> None:
        raise ConnectionError(f"SMTP refused <{to}>")

    return registry


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # no job thread outlives the test


@pytest.fixture
def served(tmp_path: Path, gate: threading.Event) -> Iterator[Served]:
    require_browser()
    options: dict[str, Any] = {"queues": {"reports": 2, "default": 2, "mail": 1},
                               "heartbeat_interval": 0.2, "poll_interval": 0.2}  # fmt: skip
    server = Served(make_registry(gate), f"sqlite:///{tmp_path / 'jobs.db'}", TOKEN, **options)
    with server.running():
        yield server


@pytest.fixture
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    # trio-asyncio (imported by the PostgreSQL backend) installs an event loop policy whose
    # loops run trio; Playwright's own loop must be a plain asyncio one.
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        asyncio.set_event_loop_policy(policy)


def shoot(page: Any, name: str) -> None:
    folder = os.environ.get("TRIOFORGE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_progress_moves_on_the_job_page_and_cancel_ends_it(served: Served, browser: Any) -> None:
    rt = served.runtime
    assert rt is not None
    job_id = served.call(rt.enqueue, "reports:crawl", 40)
    dead_id = served.call(rt.enqueue, "mail:send", "ops@example.com")
    served.call(rt.enqueue_many, "images:resize", [64, 128])
    served.call(rt.wait, dead_id)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(f"{served.url}/login")
    page.fill("input[name=token]", TOKEN)
    page.click("form button")
    page.wait_for_url(f"{served.url}/")
    page.goto(f"{served.url}/jobs/{job_id}")
    bar = page.locator("#bar")
    page.wait_for_function("() => Number(document.querySelector('#bar').ariaValueNow) > 0")
    first = float(bar.get_attribute("aria-valuenow") or 0)
    page.wait_for_function(
        f"() => Number(document.querySelector('#bar').ariaValueNow) > {first}", timeout=10_000
    )
    later = float(bar.get_attribute("aria-valuenow") or 0)
    assert later > first > 0
    assert page.locator("#state").text_content() == "running"
    assert (page.locator("#message").text_content() or "").startswith("page ")
    shoot(page, "job")
    page.click("#cancel")
    page.wait_for_function("() => document.querySelector('#state').textContent === 'cancelled'")
    assert served.call(rt.get, job_id).status is JobState.CANCELLED
    for name, path in (("jobs", "/jobs"), ("dead", "/dead"), ("processes", "/processes")):
        page.goto(f"{served.url}{path}")
        shoot(page, name)
    page.goto(f"{served.url}/dead")
    assert "SMTP refused &lt;ops@example.com&gt;" in page.content()  # escaped, not markup


FITS = """() => [document.documentElement, document.querySelector('.wide')].every(
    (box) => box.scrollWidth <= box.clientWidth)
    && document.querySelector('#queues').getBoundingClientRect().right
        <= document.querySelector('header').getBoundingClientRect().right"""
#: A queue name longer than its column: it wraps inside its cell.
LONG_QUEUE = "catalogue_thumbnails_for_the_spring_export_of_every_product_image"


def cell(page: Any, queue: str, state: str) -> str:
    shown: str = page.locator(f'tr[data-queue="{queue}"] td[data-state="{state}"]').inner_text()
    return shown


def test_the_queues_page_updates_itself_charts_throughput_and_fits_1200_px(
    served: Served, browser: Any
) -> None:
    rt = served.runtime
    assert rt is not None
    first = served.call(rt.enqueue_many, "images:resize", [2, 3])
    served.call(rt.wait, served.call(rt.enqueue, "mail:send", "ops@example.com"))
    for job_id in first:
        served.call(rt.wait, job_id)
    crawl = served.call(rt.enqueue, "reports:crawl", 400)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(f"{served.url}/")
    page.evaluate("() => { window.notReloaded = true; }")
    assert cell(page, "default", "completed") == "2"
    heads = page.locator("#queues th")
    heights = {round(heads.nth(i).bounding_box()["height"]) for i in range(heads.count())}
    assert len(heights) == 1, heights  # one line each: no header wraps into a column
    assert page.evaluate(FITS)
    # Without a reload: more jobs finish, and the crawl holds one of the two reports slots.
    later = served.call(partial(rt.enqueue_many, priority="high"), "images:resize", [4, 5, 6])
    for job_id in later:
        served.call(rt.wait, job_id)
    page.wait_for_function(
        """() => window.notReloaded && document.querySelector(
            'tr[data-queue="default"] td[data-state="completed"]').textContent === '5'
            && document.querySelector('tr[data-queue="reports"] td.utilisation')
                .textContent.startsWith('1 / 2')""",
        timeout=15_000,
    )
    assert cell(page, "reports", "running") == "1"
    assert page.evaluate(FITS)
    # The chart: a completed bar per minute jobs completed in, holding their count.
    done = [served.call(rt.get, i) for i in [*first, *later]]
    minutes = sorted({int(j.finished_at or 0) // 60 * 60 for j in done})
    chart = page.locator('figure[data-queue="default"] svg rect.completed')
    assert chart.count() == len(minutes)
    shown = [chart.nth(i) for i in range(chart.count())]
    counts = {int(r.get_attribute("data-minute") or 0): int(r.get_attribute("data-count") or 0)
              for r in shown}  # fmt: skip
    assert sorted(counts) == minutes
    assert sum(counts.values()) == 5
    assert page.locator('figure[data-queue="default"] svg rect.dead').count() == 0
    dead = page.locator('figure[data-queue="mail"] svg rect.dead')
    assert [dead.nth(i).get_attribute("data-count") for i in range(dead.count())] == ["1"]
    shoot(page, "queues")
    # A queue name longer than its column wraps in its cell; the table still fits.
    served.call(partial(rt.enqueue, queue=LONG_QUEUE), "images:resize", 7)  # nobody serves it
    page.wait_for_selector(f'tr[data-queue="{LONG_QUEUE}"]', timeout=15_000)
    assert page.evaluate("() => window.notReloaded")
    assert page.evaluate(FITS)
    # A completed job that last reported 75% reads 100%; its priority reads as its name.
    page.goto(f"{served.url}/jobs?queue=default")
    row = page.locator("tr", has=page.locator(f'a[href="/jobs/{later[0]}"]'))
    assert "100%" in row.inner_text()
    assert "75%" not in page.locator("table").inner_text()
    page.goto(f"{served.url}/jobs/{later[0]}")
    assert page.locator("#progress").inner_text() == "100%"
    assert float(page.locator("#bar").get_attribute("aria-valuenow") or 0) == 100
    assert page.locator("#priority").inner_text() == "high"
    page.goto(f"{served.url}/jobs/{first[0]}")
    assert page.locator("#priority").inner_text() == "normal"
    served.call(rt.cancel, crawl)


TRACK = """
(jobId) => {
  window.tracked = import("/track.js").then(({ track }) => new Promise((resolve) => {
    const seen = (window.seen = []);
    const store = track("", jobId);
    const unsubscribe = store.subscribe((job) => {
      seen.push([job.status, job.progress, job.message]);
      if (job.terminal) {
        unsubscribe();
        resolve({ seen, final: job, snapshot: store.getSnapshot() });
      }
    });
  }));
}
"""


def test_track_js_follows_a_job_to_completed(
    served: Served, browser: Any, gate: threading.Event
) -> None:
    page = browser.new_page()
    page.goto(f"{served.url}/processes")  # any page of the app's origin
    created = page.evaluate(
        """async () => (await fetch("/api/jobs/images:track", {
            method: "POST", headers: {"content-type": "application/json"}, body: "96"
        })).json()"""
    )
    page.evaluate(TRACK, created["id"])
    # The job holds at 50% until the page has seen it there: no race with the browser.
    page.wait_for_function(
        "() => (window.seen || []).some(([s, p, m]) => s === 'running' && p === 50"
        " && m === '50% <resized>')"
    )
    gate.set()
    outcome = page.evaluate("() => window.tracked")
    seen, final = outcome["seen"], outcome["final"]
    assert seen[0] == ["unknown", None, None]  # the Svelte contract: called at once
    assert (final["status"], final["result"], final["terminal"]) == (
        "completed", {"pixels": 9216}, True,
    )  # fmt: skip
    assert outcome["snapshot"] == final
    page.evaluate(TRACK, 987654)
    missing = page.evaluate("() => window.tracked")
    assert missing["final"]["status"] == "not_found"
    assert trioforge.JobState(final["status"]) is JobState.COMPLETED


async def waiting_for_a_signal(client: trioforge.Client, run_id: int) -> None:
    async with client.watch_workflow(run_id) as views:
        async for view in views:
            if (
                view.job.status is JobState.SCHEDULED
                and view.steps[-1:]
                and (view.steps[-1].kind.value == "signal")
            ):
                return


def test_a_run_page_follows_its_timeline_to_completed(served: Served, browser: Any) -> None:
    rt = served.runtime
    assert rt is not None
    done = served.call(rt.enqueue, "orders:fulfil", "o-1")
    served.call(rt.signal, done, "approved", "ops")
    served.call(rt.wait, done)
    undone = served.call(rt.enqueue, "orders:fulfil", "o-0")
    run_id = served.call(rt.enqueue, "orders:fulfil", "o-2")
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(f"{served.url}/workflows/{run_id}")
    page.wait_for_function(
        """() => document.querySelector('#state').textContent === 'scheduled'
            && [...document.querySelectorAll('#steps tbody tr')].some(
                (row) => row.cells[1].textContent === 'signal'
                    && row.cells[3].textContent === 'running')"""
    )
    steps = page.locator("#steps").text_content() or ""
    assert "reserve <stock>" in steps  # shown as text, not markup
    child = page.locator("#steps a").first
    child_id = (child.text_content() or "").removeprefix("child job ")
    assert child.get_attribute("href") == f"/jobs/{int(child_id)}"
    shoot(page, "run")
    served.call(waiting_for_a_signal, rt, undone)
    served.call(rt.cancel, undone)
    assert served.call(rt.wait, undone).status is JobState.COMPENSATED
    page.goto(f"{served.url}/workflows/{undone}")
    undo = page.locator("#steps tr.undo td.kind")
    assert undo.all_text_contents() == ["compensating", "compensation"]  # shown apart
    page.goto(f"{served.url}/workflows")
    page.wait_for_selector(f'a[href="/workflows/{run_id}"]')
    shoot(page, "workflows")
    page.goto(f"{served.url}/workflows/{run_id}")
    page.wait_for_function("() => document.querySelector('#state').textContent === 'scheduled'")
    served.call(rt.signal, run_id, "approved", "ops")
    page.wait_for_function("() => document.querySelector('#state').textContent === 'completed'")
    ship = page.locator("#steps tbody tr", has_text="ship")
    assert ship.locator("td").nth(3).text_content() == "completed"
    assert page.locator("#result").text_content() == '"fulfilled o-2"'
    assert served.call(rt.get, run_id).status is JobState.COMPLETED


TRACK_RUN = """
(runId) => {
  window.followed = import("/track.js").then(({ trackRun }) => new Promise((resolve) => {
    const seen = (window.runSeen = []);
    const store = trackRun("", runId);
    const unsubscribe = store.subscribe((run) => {
      seen.push([run.status, run.steps.map((step) => [step.kind, step.status])]);
      if (run.terminal) {
        unsubscribe();
        resolve({ seen, final: run, snapshot: store.getSnapshot() });
      }
    });
  }));
}
"""

WAITING_SEEN = """() => (window.runSeen || []).some(([status, steps]) => status === 'scheduled'
    && steps.some(([kind, status]) => kind === 'signal' && status === 'running'))"""


def test_track_run_follows_a_run_step_by_step_to_completed(served: Served, browser: Any) -> None:
    rt = served.runtime
    assert rt is not None
    run_id = served.call(rt.enqueue, "orders:fulfil", "o-9").id
    page = browser.new_page()
    page.goto(f"{served.url}/processes")  # any page of the app's origin
    page.evaluate(TRACK_RUN, run_id)
    # The run waits for its signal until the page has seen it waiting: no race.
    page.wait_for_function(WAITING_SEEN)
    served.call(rt.signal, run_id, "approved", "ops")
    outcome = page.evaluate("() => window.followed")
    seen, final = outcome["seen"], outcome["final"]
    assert seen[0] == ["unknown", []]  # the Svelte contract: called at once
    assert (final["status"], final["terminal"], final["result"]) == (
        "completed", True, "fulfilled o-9",
    )  # fmt: skip
    assert (final["workflow"], final["version"], final["id"]) == ("orders:fulfil", 1, run_id)
    steps = [(s["kind"], s["name"], s["status"]) for s in final["steps"]]
    assert [(kind, status) for kind, _, status in steps] == [
        ("step", "completed"), ("step", "completed"), ("child", "completed"),
        ("signal", "completed"), ("step", "completed"),
    ]  # fmt: skip
    assert [name for kind, name, _ in steps if kind == "step"] == [
        "reserve <stock>", "charge", "ship",
    ]  # fmt: skip
    assert final["steps"][-1]["result"] == "shipped by ops"
    assert final["children"] == [final["steps"][2]["child"]]
    waiting = [len(s) for status, s in seen if status == "scheduled"]
    assert waiting  # the steps arrived while the run went on, not only at its end
    assert max(waiting) < len(steps)
    assert outcome["snapshot"] == final
    page.evaluate(TRACK_RUN, 987654)
    assert page.evaluate("() => window.followed")["final"]["status"] == "not_found"


BINDINGS = """async () => {
  const jobs = await import("/gen/jobs.js");
  const follow = (store) => new Promise((resolve) => {
    const seen = [];
    const stop = store.subscribe((value) => {
      seen.push(value.status);
      if (value.terminal) {
        stop();
        resolve({ seen, final: value });
      }
    });
  });
  const refused = await jobs.reportsExport({ format: "pdf", columns: [] }).then(
    () => null, (e) => [e.name, e.status, e.message, e instanceof jobs.EnqueueError]);
  const job = await follow(await jobs.reportsExport({
    format: "xlsx", columns: [{ name: "id", width: 4 }], since: "2026-01-01T00:00:00.000Z",
  }));
  const run = await follow(await jobs.ordersShip({ order: "o-7", parcels: 2 }));
  const pinged = await follow(await jobs.ping());
  return { refused, job, run, pinged };
}"""


def test_generated_bindings_enqueue_and_follow_to_completed(tmp_path: Path, browser: Any) -> None:
    """jobs.ts of tests/codegen_jobs.py, compiled to JavaScript by tsc, in a page of the
    app: typed enqueues through the public API, followed by their stores to the end."""
    folder = with_track(tmp_path)
    (folder / "jobs.ts").write_text(typescript(codegen_jobs.registry))
    compile_ts(folder, "jobs.ts", out=folder / "js")
    files = {"/gen/jobs.js": (folder / "js" / "jobs.js").read_bytes(),
             "/gen/track.js": track_file("track.js")}  # fmt: skip
    server = Served(
        codegen_jobs.registry, f"sqlite:///{tmp_path / 'jobs.db'}", TOKEN, files=files,
        queues={"default": 2}, heartbeat_interval=0.2, poll_interval=0.2,
    )  # fmt: skip
    with server.running():
        page = browser.new_page()
        page.goto(f"{server.url}/processes")
        outcome = page.evaluate(BINDINGS)
    name, status, message, typed = outcome["refused"]
    assert (name, status, typed) == ("EnqueueError", 422, True)
    assert message.startswith("POST /api/jobs/reports:export: payload of job 'reports:export'")
    assert "$.format" in message
    request = codegen_jobs.ExportRequest(
        codegen_jobs.Format.XLSX, [codegen_jobs.Column("id", 4)],
        since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )  # fmt: skip
    expected = codegen_jobs.registry.codec.encode(
        codegen_jobs.Export, codegen_jobs.export_of(request), "expected"
    )
    job = outcome["job"]
    assert (job["seen"][0], job["seen"][-1]) == ("unknown", "completed")
    final = job["final"]
    assert (final["name"], final["progress"], final["message"]) == (
        "reports:export", 100, "written",
    )  # fmt: skip
    assert final["result"] == json.loads(expected)
    run = outcome["run"]["final"]
    assert (run["status"], run["workflow"], run["version"]) == ("completed", "orders:ship", 2)
    assert run["result"] == ["o-7/1", "o-7/2", "label for 2 parcels"]
    assert [(s["name"], s["status"]) for s in run["steps"]] == [
        ("pack", "completed"), ("label", "completed"),
    ]  # fmt: skip
    pinged = outcome["pinged"]["final"]
    assert (pinged["name"], pinged["status"], pinged["result"]) == ("ping", "completed", None)


# --- security: another origin, a replayed cookie, a body too large -----------------------

ATTACK = """<!doctype html><title>another port</title><body>
<form id="cancel" method="post" action="{target}/jobs/{job_id}/cancel">
  <input name="csrf" value="guessed"></form>
<script>
window.attack = (async () => {{
  const send = (path, body, type) => fetch("{target}" + path, {{
    method: "POST", mode: "no-cors", credentials: "include",
    headers: {{"content-type": type}}, body,
  }}).then(() => "answered", (e) => String(e));
  return [
    await send("/jobs/{job_id}/cancel", "csrf=guessed", "application/x-www-form-urlencoded"),
    await send("/queues/idle/pause", "csrf=guessed", "application/x-www-form-urlencoded"),
    await send("/api/jobs/images:resize", "96", "text/plain"),
  ];
}})();
</script></body>"""


@contextmanager
def attack_site(html: str) -> Iterator[str]:
    """``html`` served at / from another port of 127.0.0.1: the same site, another origin."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def log_in(page: Any, url: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=token]", TOKEN)
    page.click("form button")
    page.wait_for_url(f"{url}/")


def test_a_page_on_another_port_cannot_act_through_the_logged_in_browser(
    served: Served, browser: Any
) -> None:
    rt = served.runtime
    assert rt is not None
    job_id = served.call(partial(rt.enqueue, "reports:crawl", 1, queue="idle")).id
    context = browser.new_context()
    page = context.new_page()
    log_in(page, served.url)
    with attack_site(ATTACK.format(target=served.url, job_id=job_id)) as evil:
        assert evil.rsplit(":", 1)[0] == served.url.rsplit(":", 1)[0]  # same host
        page.goto(evil)
        fetched = page.evaluate("() => window.attack")
        with page.expect_navigation():
            page.evaluate("() => document.getElementById('cancel').submit()")
        form_status = page.evaluate("() => document.body.innerText")
    assert fetched == ["answered"] * 3  # every request reached the server
    assert "refused" in form_status
    assert served.call(rt.get, job_id).status is JobState.AVAILABLE
    assert [q.paused for q in served.call(rt.queues) if q.name == "idle"] == [False]
    assert [j.name for j in served.call(rt.list)] == ["reports:crawl"]  # nothing enqueued
    # The same browser, from the dashboard's own page, still acts: its session was live.
    page.goto(f"{served.url}/jobs/{job_id}")
    page.click("#cancel")
    page.wait_for_function("() => document.querySelector('#state').textContent === 'cancelled'")
    assert served.call(rt.get, job_id).status is JobState.CANCELLED
    context.close()


def test_the_session_cookie_cannot_be_replayed_after_logging_out(
    served: Served, browser: Any
) -> None:
    rt = served.runtime
    assert rt is not None
    job_id = served.call(partial(rt.enqueue, "reports:crawl", 1, queue="idle")).id
    context = browser.new_context()
    page = context.new_page()
    log_in(page, served.url)
    captured = context.cookies()
    page.goto(f"{served.url}/jobs/{job_id}")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    page.click("header form button")  # log out
    page.wait_for_url(f"{served.url}/")
    context.add_cookies(captured)  # the copy taken before logging out
    replayed = page.evaluate(
        """async ([jobId, csrf]) => (await fetch(`/jobs/${jobId}/cancel`, {
            method: "POST", body: new URLSearchParams({csrf}), redirect: "manual",
        })).status""",
        [job_id, csrf],
    )
    page.reload()
    assert replayed == 403
    assert "log in to act" in page.content()
    assert served.call(rt.get, job_id).status is JobState.AVAILABLE
    assert captured
    assert all(TOKEN not in c["value"] for c in captured)  # a session id, not the token
    context.close()


def test_a_finished_job_is_deleted_from_its_page(
    served: Served, browser: Any, gate: threading.Event
) -> None:
    """The delete button appears once the job the page follows finishes; it asks first
    (no removes nothing), and yes removes the job and lands on the job list, which no
    longer has it."""
    rt = served.runtime
    assert rt is not None
    job_id = served.call(rt.enqueue, "images:track", 3).id
    page = browser.new_page()
    log_in(page, served.url)
    page.goto(f"{served.url}/jobs/{job_id}")
    page.wait_for_function("() => document.querySelector('#message').textContent !== ''")
    assert not page.locator("#delete").is_visible()  # running: nothing to delete yet
    gate.set()
    page.wait_for_function("() => document.querySelector('#state').textContent === 'completed'")
    page.locator("#delete").wait_for(state="visible")
    questions: list[str] = []

    def answer(dialog: Any, yes: bool) -> None:
        questions.append(dialog.message)
        dialog.accept() if yes else dialog.dismiss()

    page.once("dialog", lambda dialog: answer(dialog, yes=False))
    page.click("#delete")
    assert questions == [f"Delete job {job_id}, its attempts and its record for good?"]
    assert page.url == f"{served.url}/jobs/{job_id}"
    assert served.call(rt.get, job_id).status is trioforge.JobState.COMPLETED  # kept
    page.once("dialog", lambda dialog: answer(dialog, yes=True))
    page.click("#delete")
    page.wait_for_url(f"{served.url}/jobs")
    assert len(questions) == 2
    assert page.locator(f'a[href="/jobs/{job_id}"]').count() == 0
    with pytest.raises(trioforge.JobNotFoundError):
        served.call(rt.get, job_id)
    assert page.goto(f"{served.url}/jobs/{job_id}").status == 404


def test_deleting_every_dead_job_asks_first(served: Served, browser: Any) -> None:
    """Deleting every dead job cannot be undone: it asks, naming the filter; no keeps them."""
    rt = served.runtime
    assert rt is not None
    dead_id = served.call(rt.enqueue, "mail:send", "ops@example.com")
    served.call(rt.wait, dead_id)
    page = browser.new_page()
    log_in(page, served.url)
    page.goto(f"{served.url}/dead?queue=mail")
    questions: list[str] = []

    def answer(dialog: Any, yes: bool) -> None:
        questions.append(dialog.message)
        dialog.accept() if yes else dialog.dismiss()

    page.once("dialog", lambda dialog: answer(dialog, yes=False))
    page.click("#delete-all")
    assert questions == ["Delete every dead job of queue mail for good?"]
    assert served.call(rt.get, dead_id).status is JobState.DEAD  # kept
    page.once("dialog", lambda dialog: answer(dialog, yes=True))
    with page.expect_navigation(url=f"{served.url}/dead"):  # the action's redirect
        page.click("#delete-all")
    assert len(questions) == 2
    with pytest.raises(trioforge.JobNotFoundError):
        served.call(rt.get, dead_id)


WEB_APP = """
import trioforge
registry = trioforge.Registry()

@registry.job("echo", public=True, queue="idle")
async def echo(ctx: trioforge.JobContext, n: int) -> int:
    return n
"""


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert found is not None, status
    return int(found.group(1))


@contextmanager
def web_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``trioforge web`` in a process of its own (its RSS is the web app's), and its URL."""
    (tmp_path / "webapp.py").write_text(WEB_APP)
    database = f"sqlite:///{tmp_path / 'jobs.db'}"
    command = [sys.executable, "-m", "trioforge", "web", "--port", "0",
               "--database", database, "--registry", "webapp:registry"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TRIOFORGE_WEB_TOKEN": TOKEN}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        seen = b""
        while (found := re.search(rb"serving on (http://\S+)", seen)) is None:
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        yield proc, found.group(1).decode()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


POST = """async (size) => {
  const body = new Uint8Array(size).fill(49);  // "1111…": a JSON number, were it read
  const init = {method: "POST", headers: {"content-type": "application/json"}, body};
  try { return (await fetch("/api/jobs/echo", init)).status; }
  catch (e) { return String(e); }
}"""


def test_a_50_mb_body_is_refused_without_being_read(tmp_path: Path, browser: Any) -> None:
    with web_process(tmp_path) as (proc, url):
        page = browser.new_page()
        page.goto(f"{url}/processes")
        assert page.evaluate(POST, 2) == 201  # "11": served, warmed up
        assert page.evaluate(POST, 3 * 2**20) == 413
        before = rss_kib(proc.pid)
        refused = page.evaluate(POST, 50 * 2**20)
        grown = rss_kib(proc.pid) - before
    print(f"RSS of the web process: {before} KiB, then grown by {grown} KiB")
    assert refused == 413
    assert grown < 5 * 1024, f"the web process grew by {grown} KiB"
