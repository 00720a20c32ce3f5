"""Workflow semantics that match the jobs': a step's Discard, step retries under
``run_until_idle``, hooks and metrics of workflow attempts, replay flags."""

from __future__ import annotations

import logging
import time

import pytest
import trio

import trioforge
from tests.support.fast import FAST
from trioforge import JobState, Retry, StepKind, StepStatus, WorkflowContext
from trioforge._core.outcomes import AttemptOutcome
from trioforge._core.retry import rescue_outcome
from trioforge._registry import AttemptEnd
from trioforge.metrics import Metrics
from trioforge.storage import Backend, ClaimResult, StepRecord, StepWrite, ops
from trioforge.testing import open_test_runtime


def _discarding_saga(log: list[str]) -> trioforge.Registry:
    """A saga whose second step discards itself on its first attempt."""
    registry = trioforge.Registry()

    def reserve(item: str) -> str:
        log.append(f"reserve {item}")
        return item

    def release(item: str) -> None:
        log.append(f"release {item}")

    def charge(card: str) -> None:
        log.append(f"charge {card}")
        raise trioforge.Discard(f"card {card} declined")

    @registry.workflow("order")
    async def order(ctx: WorkflowContext) -> None:
        await ctx.step("reserve", reserve, "book", compensate=release)
        await ctx.step("charge", charge, "4242", retry=Retry(max_attempts=5, base_delay=10))
        await ctx.step("ship", reserve, "never")

    @registry.workflow("plain")
    async def plain(ctx: WorkflowContext) -> None:
        await ctx.step("charge", charge, "0000")

    return registry


async def test_a_step_that_discards_discards_the_run_at_once_and_undoes_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[str] = []
    async with open_test_runtime(_discarding_saga(log)) as rt:
        run_id = await rt.enqueue("order")
        plain_id = await rt.enqueue("plain")
        info = await rt.wait(run_id)
        plain = await rt.wait(plain_id)
        view = await rt.workflow(run_id)
    assert (info.status, info.error, info.attempt) == (
        JobState.COMPENSATED,
        "card 4242 declined",
        1,
    )
    assert log.count("charge 4242") == 1
    assert "reserve never" not in log
    assert log.index("release book") > log.index("charge 4242")
    steps = {(s.kind, s.name): s for s in view.steps}
    charge = steps[(StepKind.STEP, "charge")]
    assert (charge.status, charge.attempts, charge.wake_at) == (StepStatus.FAILED, 1, None)
    assert steps[(StepKind.STEP, "reserve")].status is StepStatus.COMPENSATED
    # Nothing to undo: dead at once, with the reason.
    assert (plain.status, plain.error, plain.attempt) == (JobState.DEAD, "card 0000 declined", 1)


async def test_a_step_that_discards_discards_the_run_on_every_backend(
    database: str | Backend,
) -> None:
    log: list[str] = []
    registry = _discarding_saga(log)
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        with trio.fail_after(30):
            info = await rt.wait(await rt.enqueue("order"))
            plain = await rt.wait(await rt.enqueue("plain"))
    assert (info.status, info.error) == (JobState.COMPENSATED, "card 4242 declined")
    assert (plain.status, plain.error) == (JobState.DEAD, "card 0000 declined")
    assert log.count("charge 4242") == 1
    assert "release book" in log


async def test_a_compensation_that_discards_fails_without_retries(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    undos: list[str] = []

    def refuse(item: str) -> None:
        undos.append(item)
        raise trioforge.Discard("cannot be undone")

    def boom() -> None:
        raise ConnectionError("down")

    @registry.workflow("saga")
    async def saga(ctx: WorkflowContext) -> None:
        await ctx.step("a", str, "a", compensate=refuse)
        await ctx.step("b", boom, retry=Retry(max_attempts=1))

    async with open_test_runtime(registry) as rt:
        info = await rt.wait(await rt.enqueue(saga))
    assert info.status is JobState.DEAD
    assert "cannot be undone" in (info.error or "")
    assert undos == ["a"]


async def test_run_until_idle_runs_through_step_retries_but_not_sleeps(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    tries: list[str] = []

    def flaky(label: str) -> str:
        tries.append(label)
        if tries.count(label) < 3:
            raise ConnectionError("not yet")
        return label

    def undo(label: str) -> None:
        tries.append(f"undo {label}")

    @registry.workflow("retrying")
    async def retrying(ctx: WorkflowContext) -> str:
        return str(await ctx.step("flaky", flaky, "r", retry=Retry(base_delay=100)))

    @registry.workflow("failing")
    async def failing(ctx: WorkflowContext) -> None:
        await ctx.step("kept", str, "k", compensate=undo)
        await ctx.step("flaky", flaky, "f", retry=Retry(max_attempts=2, base_delay=50))

    @registry.workflow("sleeper")
    async def sleeper(ctx: WorkflowContext) -> None:
        await ctx.step("before", str, "s")
        await ctx.sleep(3600)

    async with open_test_runtime(registry) as rt:
        done = await rt.enqueue(retrying)
        undone = await rt.enqueue(failing)
        asleep = await rt.enqueue(sleeper)
        await rt.run_until_idle()
        states = [(await rt.get(run)).status for run in (done, undone, asleep)]
    assert states == [JobState.COMPLETED, JobState.COMPENSATED, JobState.SCHEDULED]
    assert tries.count("r") == 3
    assert tries.count("f") == 2
    assert "undo k" in tries


async def test_a_run_lost_on_its_last_attempt_is_undone_on_every_backend(
    database: str | Backend,
) -> None:
    registry = trioforge.Registry()
    undone: list[str] = []

    def undo(item: str) -> None:
        undone.append(item)

    @registry.workflow("lost", retry=Retry(max_attempts=1))
    async def lost(ctx: WorkflowContext) -> None:
        await ctx.step("reserve", str, "book", compensate=undo)
        await ctx.sleep(3600)

    async with trioforge.open_client(database, registry=registry) as client:
        run_id = (await client.enqueue(lost)).id
        # A worker claims the run, records its first step, and vanishes (its lease runs out).
        now = time.time()
        claim = ops.Claim("default", {lost.name}, 1, "vanished", now + 0.2)
        result: ClaimResult = await client._storage.call(claim)
        [job] = result.jobs
        step = StepRecord(0, StepKind.STEP, "reserve", StepStatus.COMPLETED, 1, '"book"',
                          compensable=True, started_at=now, finished_at=now)  # fmt: skip
        written: StepWrite = await client._storage.call(
            ops.RecordStep(run_id, job.lease, step, None, None, False)
        )
        assert written.applied
    async with trioforge.open_runtime(
        registry, database=database, rescue_interval=0.05, **FAST
    ) as rt:
        with trio.fail_after(30):
            info = await rt.wait(run_id)
    assert info.status is JobState.COMPENSATED
    assert "attempt 1 lost: its worker stopped heartbeating" in (info.error or "")
    assert undone == ["book"]


def test_a_rescued_run_gets_one_attempt_past_its_last_and_no_more() -> None:
    assert rescue_outcome(attempt=1, max_attempts=1, now=5.0, workflow=True).retry_at == 5.0
    assert rescue_outcome(attempt=2, max_attempts=1, now=5.0, workflow=True).retry_at is None
    assert rescue_outcome(attempt=1, max_attempts=1, now=5.0).retry_at is None


async def test_workflow_attempts_go_through_hooks_metrics_and_log_lines(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = trioforge.Registry()
    before: list[tuple[int, int]] = []
    after: list[tuple[AttemptOutcome, str | None, bool]] = []

    @registry.before_perform
    async def note(ctx: trioforge.JobContext) -> None:
        before.append((ctx.job_id, ctx.attempt))

    @registry.after_perform
    async def record(end: AttemptEnd) -> None:
        after.append((end.outcome, end.payload, isinstance(end.ctx, WorkflowContext)))

    @registry.workflow("napper")
    async def napper(ctx: WorkflowContext, who: str) -> str:
        await ctx.step("hello", str, who)
        await ctx.sleep(60)
        return who

    metrics = Metrics()
    caplog.set_level(logging.INFO, logger="trioforge.attempts")
    async with open_test_runtime(registry, metrics=metrics) as rt:
        run_id = (await rt.enqueue(napper, "ada")).id
        info = await rt.wait(run_id)
    assert info.status is JobState.COMPLETED
    assert before == [(run_id, 1), (run_id, 1)]  # a suspension does not count an attempt
    assert after == [
        (AttemptOutcome.SUSPENDED, "ada", True),
        (AttemptOutcome.COMPLETED, "ada", True),
    ]
    labels = {"queue": "default", "job": napper.name}
    started = metrics.registry.get_sample_value("trioforge_jobs_started_total", labels)
    completed = metrics.registry.get_sample_value("trioforge_jobs_completed_total", labels)
    assert (started, completed) == (2.0, 1.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "trioforge.attempts"]
    assert any("suspended on sleep" in line for line in lines)
    assert any("completed in" in line for line in lines)


async def test_a_failing_before_hook_fails_a_run_as_its_handler_would(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    undone: list[str] = []

    @registry.before_perform
    async def refuse(ctx: trioforge.JobContext) -> None:
        if ctx.attempt > 1 or (isinstance(ctx, WorkflowContext) and ctx.is_step_completed("a")):
            raise ConnectionError("hook down")

    @registry.workflow("hooked", retry=Retry(max_attempts=2, base_delay=1))
    async def hooked(ctx: WorkflowContext) -> None:
        await ctx.step("a", str, "a", compensate=undone.append)
        await ctx.sleep(10)

    async with open_test_runtime(registry) as rt:
        info = await rt.wait((await rt.enqueue(hooked)).id)
    assert info.status is JobState.COMPENSATED
    assert "hook down" in (info.error or "")
    assert undone == ["a"]


async def test_is_replaying_and_is_resumed_say_where_the_attempt_is(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    seen: list[tuple[str, bool, bool]] = []

    @registry.workflow("tracked")
    async def tracked(ctx: WorkflowContext) -> None:
        seen.append(("top", ctx.is_replaying, ctx.is_resumed))
        await ctx.step("one", str, "1")
        seen.append(("after one", ctx.is_replaying, ctx.is_resumed))
        await ctx.sleep(60)
        seen.append(("after sleep", ctx.is_replaying, ctx.is_resumed))
        await ctx.step("two", str, "2")
        seen.append(("after two", ctx.is_replaying, ctx.is_resumed))

    async with open_test_runtime(registry) as rt:
        info = await rt.wait((await rt.enqueue(tracked)).id)
    assert info.status is JobState.COMPLETED
    assert seen == [
        ("top", False, False),
        ("after one", False, False),  # the first attempt: nothing to replay
        ("top", True, True),
        ("after one", True, True),  # the sleep is recorded: still replaying
        ("after sleep", False, True),  # past the record: live again
        ("after two", False, True),
    ]
