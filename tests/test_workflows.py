"""Workflows in virtual time on the memory backend: steps, sleeps, signals, children,
compensation, versioning and non-determinism."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter

import attrs
import pytest
import trio

import trioforge
from trioforge import JobState, Retry, StepKind, StepStatus, WorkflowContext
from trioforge.testing import open_test_runtime


@attrs.frozen
class Req:
    user: str


@attrs.frozen
class Token:
    value: str


async def test_steps_run_once_across_a_durable_sleep_and_results_decode(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    calls: Counter[str] = Counter()
    seen: list[Token] = []

    def make_token(user: str) -> Token:
        calls["make_token"] += 1
        return Token(f"t-{user}")

    async def send(token: Token) -> str:
        calls["send"] += 1
        return f"sent {token.value}"

    @registry.workflow("verify")
    async def verify(ctx: WorkflowContext, req: Req) -> str:
        token = await ctx.step("token", make_token, req.user)
        seen.append(token)
        await ctx.sleep(dt.timedelta(hours=1))
        return str(await ctx.step("send", send, token))

    async with open_test_runtime(registry) as rt:
        run_id = await rt.enqueue(verify, Req("u1"))
        start = trio.current_time()
        info = await rt.wait(run_id)
        elapsed = trio.current_time() - start
    assert info.status is JobState.COMPLETED
    assert info.result == "sent t-u1"
    assert calls == {"make_token": 1, "send": 1}
    assert seen == [Token("t-u1"), Token("t-u1")]  # the replay saw the same, decoded value
    assert 3600 <= elapsed < 3600 + 5
    assert info.attempt == 1  # suspensions are not attempts


async def test_a_sleeping_run_holds_no_worker_slot(autojump_clock: trio.abc.Clock) -> None:
    registry = trioforge.Registry()

    @registry.workflow("napper")
    async def napper(ctx: WorkflowContext) -> None:
        await ctx.sleep(3600)

    @registry.job("quick")
    async def quick(ctx: trioforge.JobContext) -> None:
        pass

    async with open_test_runtime(registry, queues={"default": 1}) as rt:
        runs = [await rt.enqueue(napper) for _ in range(5)]
        await rt.advance(1)
        job = await rt.enqueue(quick)
        with trio.fail_after(5):
            assert (await rt.wait(job)).status is JobState.COMPLETED
        assert {(await rt.get(r)).status for r in runs} == {JobState.SCHEDULED}
        for r in runs:
            assert (await rt.wait(r)).status is JobState.COMPLETED


async def test_signals_sent_early_are_kept_and_a_wait_times_out_to_none(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()

    @registry.workflow("waiter")
    async def waiter(ctx: WorkflowContext) -> list[object]:
        first = await ctx.wait_for_signal("go", type=Req)
        assert isinstance(first, Req)
        second = await ctx.wait_for_signal("never", timeout=dt.timedelta(hours=24))
        return [first.user, second]

    async with open_test_runtime(registry) as rt:
        early = await rt.enqueue(waiter)
        await rt.signal(early, "go", Req("early"))  # before the run even started
        assert (await rt.wait(early)).result == ["early", None]
        late = await rt.enqueue(waiter)
        await rt.advance(60)
        assert (await rt.get(late)).status is JobState.SCHEDULED
        await rt.signal(late, "go", {"user": "late"})
        start = trio.current_time()
        info = await rt.wait(late)
        assert (info.status, info.result) == (JobState.COMPLETED, ["late", None])
        assert trio.current_time() - start >= 24 * 3600 - 60
        with pytest.raises(trioforge.InvalidStateError, match="finished"):
            await rt.signal(late, "go")


async def test_children_are_gathered_and_a_failed_child_raises(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()

    @registry.job("square")
    async def square(ctx: trioforge.JobContext, n: int) -> int:
        if n < 0:
            raise trioforge.Discard("negative")
        return n * n

    @registry.workflow("fan")
    async def fan(ctx: WorkflowContext, numbers: list[int]) -> object:
        children = [await ctx.start_child(square, n) for n in numbers]
        try:
            return sum(await ctx.gather(*children))
        except trioforge.ChildFailed as exc:
            return f"child {exc.job_id} {exc.status}"

    async with open_test_runtime(registry) as rt:
        ok = await rt.wait(await rt.enqueue(fan, [1, 2, 3]))
        assert (ok.status, ok.result) == (JobState.COMPLETED, 14)
        bad_id = await rt.enqueue(fan, [1, -1])
        bad = await rt.wait(bad_id)
        view = await rt.workflow(bad_id)
        assert bad.result == f"child {view.children[1]} dead"
        assert [s.kind for s in view.steps] == [StepKind.CHILD, StepKind.CHILD]


async def test_a_step_out_of_attempts_undoes_completed_steps_newest_first(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    log: list[str] = []

    def do(name: str) -> str:
        log.append(f"do {name}")
        if name == "c":
            raise ConnectionError("c is down")
        return name

    def undo(name: str) -> None:
        log.append(f"undo {name}")

    @registry.workflow("saga")
    async def saga(ctx: WorkflowContext) -> None:
        await ctx.step("a", do, "a", compensate=undo)
        await ctx.step("b", do, "b")  # nothing to undo
        await ctx.step("x", do, "x", compensate=undo)
        await ctx.step("c", do, "c", retry=Retry(max_attempts=2, base_delay=10))

    async with open_test_runtime(registry) as rt:
        run_id = await rt.enqueue(saga)
        info = await rt.wait(run_id)
        view = await rt.workflow(run_id)
    assert info.status is JobState.COMPENSATED
    assert "c is down" in (info.error or "")
    assert log == ["do a", "do b", "do x", "do c", "do c", "undo x", "undo a"]
    status = {(s.kind, s.name): s.status for s in view.steps}
    assert status[(StepKind.STEP, "a")] is StepStatus.COMPENSATED
    assert status[(StepKind.STEP, "b")] is StepStatus.COMPLETED
    assert status[(StepKind.STEP, "c")] is StepStatus.FAILED
    assert [s.attempts for s in view.steps if s.name == "c"] == [2]


async def test_cancelling_a_waiting_run_undoes_it_and_cancels_its_children(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    undone: list[str] = []

    @registry.job("slow_child")
    async def slow_child(ctx: trioforge.JobContext) -> None:
        await trio.sleep(10_000)

    @registry.workflow("parent")
    async def parent(ctx: WorkflowContext, undo: bool) -> None:
        if undo:
            await ctx.step("reserve", lambda: "r", compensate=lambda: undone.append("reserve"))
        child = await ctx.start_child(slow_child)
        await ctx.gather(child)

    async with open_test_runtime(registry) as rt:
        with_undo = await rt.enqueue(parent, True)
        plain = await rt.enqueue(parent, False)
        await rt.advance(5)
        assert (await rt.get(with_undo)).status is JobState.SCHEDULED  # waiting on a child
        assert await rt.cancel(with_undo)
        assert await rt.cancel(plain)
        assert (await rt.wait(with_undo)).status is JobState.COMPENSATED
        assert (await rt.wait(plain)).status is JobState.CANCELLED
        for run_id in (with_undo, plain):
            [child] = (await rt.workflow(run_id)).children
            assert (await rt.wait(child)).status is JobState.CANCELLED
    assert undone == ["reserve"]


async def test_cancelling_a_running_run_undoes_its_completed_steps(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    undone: list[str] = []
    started = trio.Event()

    async def hang() -> None:
        started.set()
        await trio.sleep(10_000)

    @registry.workflow("busy")
    async def busy(ctx: WorkflowContext) -> None:
        await ctx.step("book", lambda: 1, compensate=lambda: undone.append("book"))
        await ctx.step("hang", hang)

    async with open_test_runtime(registry) as rt:
        run_id = await rt.enqueue(busy)
        await started.wait()
        await rt.cancel(run_id)
        info = await rt.wait(run_id)
    assert info.status is JobState.COMPENSATED
    assert info.error == "cancelled by request"
    assert undone == ["book"]


async def test_new_runs_take_the_highest_version_and_old_runs_keep_theirs(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()

    @registry.workflow("flow", version=1)
    async def v1(ctx: WorkflowContext) -> str:
        await ctx.sleep(60)
        return "v1"

    @registry.workflow("flow", version=2)
    async def v2(ctx: WorkflowContext) -> str:
        return "v2"

    async with open_test_runtime(registry) as rt:
        old = await rt.enqueue("flow@v1")
        new = await rt.enqueue(v1)  # the definition of v1, but new runs take v2
        by_name = await rt.enqueue("flow")
        assert [(await rt.wait(r)).result for r in (old, new, by_name)] == ["v1", "v2", "v2"]
        assert (await rt.workflow(old)).version == 1


async def test_changed_code_under_a_running_version_fails_the_run_loudly(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    order = ["a", "b"]

    @registry.workflow("drift")
    async def drift(ctx: WorkflowContext) -> None:
        await ctx.step(order[0], lambda: 1)
        await ctx.sleep(10)
        await ctx.step(order[1], lambda: 2)

    async with open_test_runtime(registry) as rt:
        run_id = await rt.enqueue(drift)
        await rt.advance(1)
        order.reverse()  # "deploy" different code while the run sleeps
        info = await rt.wait(run_id)
    assert info.status is JobState.DEAD
    assert "NonDeterminismError" in (info.error or "")
    assert "version=2" in (info.error or "")


async def test_a_failing_step_backs_off_durably_and_then_succeeds(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    times: list[float] = []

    def flaky() -> str:
        times.append(trio.current_time())
        if len(times) < 3:
            raise ConnectionError("not yet")
        return "ok"

    @registry.workflow("retrying")
    async def retrying(ctx: WorkflowContext) -> str:
        return str(await ctx.step("flaky", flaky, retry=Retry(max_attempts=3, base_delay=100)))

    async with open_test_runtime(registry) as rt:
        run_id = await rt.enqueue(retrying)
        info = await rt.wait(run_id)
        [step] = (await rt.workflow(run_id)).steps
    assert (info.status, info.result, step.attempts) == (JobState.COMPLETED, "ok", 3)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 100
    assert gaps[1] >= 200


async def test_a_run_past_its_timeout_is_undone(autojump_clock: trio.abc.Clock) -> None:
    registry = trioforge.Registry()
    undone: list[str] = []

    @registry.workflow("bounded", timeout=dt.timedelta(hours=1))
    async def bounded(ctx: WorkflowContext) -> None:
        await ctx.step("hold", lambda: 1, compensate=lambda: undone.append("hold"))
        await ctx.wait_for_signal("never")

    async with open_test_runtime(registry) as rt:
        run_id = await rt.enqueue(bounded)
        start = trio.current_time()
        info = await rt.wait(run_id)
    assert info.status is JobState.COMPENSATED
    assert "WorkflowTimeoutError" in (info.error or "")
    assert 3600 <= trio.current_time() - start < 3600 + 5
    assert undone == ["hold"]


async def test_a_cancel_before_the_replay_reaches_an_undoable_step_still_undoes_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    undone: list[str] = []
    resumed = trio.Event()

    @registry.workflow("late_cancel")
    async def late_cancel(ctx: WorkflowContext) -> None:
        if ctx.is_step_completed("book") and not resumed.is_set():
            resumed.set()  # the resumed attempt is cancelled here, before the step's replay
            await trio.sleep_forever()
        await ctx.step("book", lambda: 1, compensate=lambda: undone.append("book"))
        await ctx.sleep(10)

    async with open_test_runtime(registry) as rt:
        run_id = await rt.enqueue(late_cancel)
        await resumed.wait()
        await rt.cancel(run_id)
        assert (await rt.wait(run_id)).status is JobState.COMPENSATED
    assert undone == ["book"]


async def test_a_record_longer_than_the_code_fails_the_run_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    steps = ["a", "b"]

    @registry.workflow("shrinking")
    async def shrinking(ctx: WorkflowContext) -> None:
        for name in steps:
            await ctx.step(name, lambda: 1)
        if len(steps) == 2:
            await ctx.sleep(10)

    async with open_test_runtime(registry) as rt:
        run_id = await rt.enqueue(shrinking)
        await rt.advance(1)
        steps.pop()  # "deployed" while it sleeps: the replay makes a prefix of the calls
        info = await rt.wait(run_id)
    assert info.status is JobState.DEAD
    assert info.attempt == 1  # not retried: replaying again cannot help
    assert "NonDeterminismError" in (info.error or "")


async def test_a_step_result_that_is_not_json_fails_the_step_without_retries(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()
    calls: list[int] = []

    def not_json() -> object:
        calls.append(1)
        return object()

    @registry.workflow("opaque")
    async def opaque(ctx: WorkflowContext) -> None:
        await ctx.step("opaque", not_json)

    async with open_test_runtime(registry) as rt:
        run_id = await rt.enqueue(opaque)
        info = await rt.wait(run_id)
        [step] = (await rt.workflow(run_id)).steps
    assert (info.status, info.attempt, len(calls)) == (JobState.DEAD, 1, 1)
    assert (step.status, step.attempts) == (StepStatus.FAILED, 1)
    assert "expected a JSON value" in (step.error or "")


async def test_a_child_takes_enqueue_options_and_refuses_unknown_ones(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = trioforge.Registry()

    @registry.job("later")
    async def later(ctx: trioforge.JobContext) -> float:
        return trio.current_time()

    @registry.workflow("delayed_child")
    async def delayed_child(ctx: WorkflowContext, bad: bool) -> list[float]:
        if bad:
            await ctx.start_child(later, colour="blue")
        child = await ctx.start_child(later, delay=60, max_attempts=1, idempotency_key="k")
        return list(await ctx.gather(child))

    async with open_test_runtime(registry) as rt:
        start = trio.current_time()
        ok = await rt.wait(await rt.enqueue(delayed_child, False))
        bad = await rt.wait(await rt.enqueue(delayed_child, True))
    assert ok.status is JobState.COMPLETED
    assert ok.result[0] >= start + 60
    assert bad.status is JobState.DEAD
    assert "unknown options ['colour']" in (bad.error or "")


def test_retention_keeps_undone_runs_as_long_as_dead_jobs_by_default() -> None:
    kept = dict(trioforge.Retention().ages())
    assert kept[JobState.COMPENSATED] == kept[JobState.DEAD]
