"""A workflow step shows ``running`` (with its attempt) from its start, within 0.1 s: in
virtual time on the memory backend, over HTTP (the run's JSON, its event stream and pages) on
every backend, and from a worker in another process on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from typing import Any

import trio

import trioforge
import trioforge.web
from tests.support import silent_jobs
from tests.support.fast import FAST
from tests.support.postgres import URL, schema_url
from tests.test_web_api import NO_POLLING, events, served
from trioforge import JobState, Retry, StepInfo, StepStatus, WorkflowContext
from trioforge.storage import MemoryBackend
from trioforge.testing import open_test_runtime

#: How soon a step must show as running after its function starts.
WITHIN = 0.1


def step_named(steps: Any, name: str) -> StepInfo | None:
    return next((s for s in steps if s.name == name), None)


async def test_a_step_shows_running_with_its_attempt_within_100_ms_in_virtual_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    gate = trio.Event()
    starts: list[float] = []

    async def slow(n: int) -> int:
        starts.append(trio.current_time())
        if len(starts) == 1:
            await trio.sleep(5)
            raise ConnectionError("flaky")
        await gate.wait()
        return n

    @registry.workflow("long")
    async def long(ctx: WorkflowContext) -> int:
        await ctx.step("quick", lambda: 1)
        return int(await ctx.step("slow", slow, 7, retry=Retry(max_attempts=2, base_delay=1)))

    async with open_test_runtime(registry) as rt:
        run_id = await rt.enqueue(long)
        seen: list[tuple[int, float]] = []  # (attempt, seconds after its start)
        with trio.fail_after(60):
            async with rt.watch_workflow(run_id) as views:
                async for view in views:
                    step = step_named(view.steps, "slow")
                    if step is None or step.status is not StepStatus.RUNNING:
                        continue
                    assert step.started_at is not None
                    seen.append((step.attempts, trio.current_time() - starts[-1]))
                    snapshot = step_named((await rt.workflow(run_id)).steps, "slow")
                    assert snapshot is not None
                    assert (snapshot.status, snapshot.attempts) == (StepStatus.RUNNING, len(starts))
                    if step.attempts == 2:
                        gate.set()
        final = await rt.workflow(run_id)
    assert [attempt for attempt, _ in seen] == [1, 2]
    assert all(0 <= after <= WITHIN for _, after in seen), seen
    assert final.job.result == 7
    assert [(s.name, s.status, s.attempts) for s in final.steps] == [
        ("quick", StepStatus.COMPLETED, 1),
        ("slow", StepStatus.COMPLETED, 2),
    ]


async def test_a_step_cut_short_shows_pending_and_runs_again_as_the_same_attempt(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    first_run = trio.Event()
    seen: list[tuple[int, bool, bool]] = []  # step_attempt, is_resumed, is_replaying

    async def slow(ctx: WorkflowContext) -> str:
        seen.append((ctx.step_attempt, ctx.is_resumed, ctx.is_replaying))
        if len(seen) == 1:
            first_run.set()
            await trio.sleep_forever()  # until the runtime stops and releases the run
        return "done"

    before: list[bool] = []  # is_replaying in the body, before the step

    @registry.workflow("cut")
    async def cut(ctx: WorkflowContext) -> str:
        before.append(ctx.is_replaying)
        return str(await ctx.step("slow", slow, ctx))

    backend = MemoryBackend()
    clock = trioforge.VirtualClock(1_000_000.0)
    async with trioforge.open_runtime(
        registry, database=backend, clock=clock, shutdown_grace=0
    ) as rt:
        run_id = await rt.enqueue(cut)
        await first_run.wait()
        await trio.sleep(1)  # virtual: long enough to be written as running
    async with trioforge.open_client(backend, clock=clock) as client:
        released = await client.workflow(run_id)
    async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
        with trio.fail_after(60):
            info = await rt.wait(run_id)
        final = await rt.workflow(run_id)
    assert released.job.status is JobState.AVAILABLE
    [step] = released.steps
    assert (step.name, step.status, step.attempts) == ("slow", StepStatus.PENDING, 1)
    assert info.result == "done"
    assert seen == [(1, False, False), (1, False, False)]  # the same attempt, run again
    assert before == [False, False]  # a step shown running is not a recorded one
    assert [(s.status, s.attempts) for s in final.steps] == [(StepStatus.COMPLETED, 1)]


def running_step(run: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in run["steps"] if s["name"] == name and s["status"] == "running"), None)


async def test_the_run_api_its_event_stream_and_pages_show_a_step_running_from_its_start(
    shared: Any,
) -> None:
    registry = trioforge.Registry()
    gate = trio.Event()
    started: list[float] = []

    async def slow() -> str:
        started.append(time.time())
        await gate.wait()
        return "slow done"

    @registry.workflow("long")
    async def long(ctx: WorkflowContext) -> str:
        await ctx.step("quick", lambda: 1)
        return str(await ctx.step("slow", slow))

    async with (
        trioforge.open_runtime(registry, database=shared, **FAST),
        trioforge.open_client(shared, poll_interval=NO_POLLING) as client,
        served(trioforge.web.app(client=client, registry=registry)) as http,
    ):
        with trio.fail_after(30):
            run_id = (await client.enqueue(long)).id
            async with http.stream("GET", f"/api/workflows/{run_id}/events") as response:
                async for event, data in events(response):
                    if event == "end":
                        break
                    step = running_step(data, "slow")
                    if step is not None and not gate.is_set():
                        seen_after = time.time() - started[0]
                        snapshot = (await http.get(f"/api/workflows/{run_id}")).json()
                        page = (await http.get(f"/workflows/{run_id}")).text
                        listing = (await http.get("/workflows")).text
                        shown = step
                        gate.set()
    print(f"a step shown running {seen_after * 1000:.0f} ms after its start")
    step = shown
    assert step["attempts"] == 1
    assert step["started_at"] is not None
    assert step["finished_at"] is None
    assert running_step(snapshot, "slow") == step
    assert data == {"id": run_id, "status": "completed"}
    row = re.search(r'<tr class="" data-seq="1">(.*?)</tr>', page, re.S)
    assert row is not None
    assert '<span class="state running">running</span>' in row.group(1)
    assert "attempt 1 running since" in row.group(1)
    assert re.search(r"slow\s*<span class=\"state running\">running</span>", listing)


async def test_a_step_running_in_another_process_shows_in_the_api_and_its_stream(
    shared_url: str,
) -> None:
    async with (
        trioforge.open_client(shared_url, poll_interval=NO_POLLING) as client,
        served(trioforge.web.app(client=client)) as http,
        silent_jobs.worker(shared_url),
    ):
        with trio.fail_after(30):
            run_id = (await client.enqueue(silent_jobs.quiet)).id
            async with http.stream("GET", f"/api/workflows/{run_id}/events") as response:
                async for event, data in events(response):
                    assert event == "update"
                    step = running_step(data, "long")
                    if step is not None:
                        seen_at = time.time()
                        break
            snapshot = (await http.get(f"/api/workflows/{run_id}")).json()
            view = await client.workflow(run_id)
            await client.cancel(run_id)
            assert (await client.wait(run_id)).status is JobState.CANCELLED
    started = step_named(view.steps, "long")
    assert started is not None
    assert started.started_at is not None
    after = seen_at - started.started_at
    print(f"a step in another process shown running {after * 1000:.0f} ms after its start")
    assert after < 1.0
    assert (started.status, started.attempts) == (StepStatus.RUNNING, 1)
    assert step is not None
    assert step["attempts"] == 1
    assert running_step(snapshot, "long") == step


async def test_a_step_running_in_another_process_shows_through_a_transaction_pooler() -> None:
    """PostgreSQL: a step's record write sends its run's change notice from its own
    statement, which behind a transaction pooler runs inside the batch's transaction; the
    NOTIFY goes out at that commit and through the pooler (only LISTEN needs the direct
    ``listen_url``). Nothing else is written after the step shows running, so only that
    write's notice can wake the watcher, which never polls."""
    async with schema_url() as url:
        worker_url = f"{url}&pooler=transaction"
        async with (
            trioforge.open_client(url, poll_interval=NO_POLLING) as client,
            silent_jobs.worker(worker_url, "--listen-url", URL),
        ):
            with trio.fail_after(30):
                run_id = (await client.enqueue(silent_jobs.quiet)).id
                async with client.watch_workflow(run_id) as views:
                    async for view in views:
                        step = step_named(view.steps, "long")
                        if step is not None and step.status is StepStatus.RUNNING:
                            seen_at = time.time()
                            break
                await client.cancel(run_id)
                assert (await client.wait(run_id)).status is JobState.CANCELLED
    assert step is not None
    assert step.started_at is not None
    after = seen_at - step.started_at
    print(f"a step shown running elsewhere {after * 1000:.0f} ms after its start (pooled)")
    assert after < 1.0
