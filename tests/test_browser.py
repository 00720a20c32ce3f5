"""The dashboard and track.js in real Chromium (Playwright driving the system binary).

Screenshots of the main pages go to ``$TRIOFORGE_SCREENSHOTS`` when set (``make
screenshots`` writes them to docs/screenshots/).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioforge
from tests.browser import CHROMIUM, Served, require_browser
from trioforge import JobContext, JobState, Registry, Retry, WorkflowContext

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
    for name, path in (("queues", "/"), ("jobs", "/jobs"), ("dead", "/dead"),
                       ("processes", "/processes")):  # fmt: skip
        page.goto(f"{served.url}{path}")
        shoot(page, name)
    page.goto(f"{served.url}/dead")
    assert "SMTP refused &lt;ops@example.com&gt;" in page.content()  # escaped, not markup


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
