"""Lifecycle hooks: after hooks see the end of every attempt, however it ended."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import trioforge
from tests.support.fast import FAST
from tests.support.jobs import Greeting
from trioforge import AttemptEnd, AttemptOutcome, JobContext, JobState, Registry, Retry
from trioforge.actors.queue import AFTER_HOOKS_SECONDS
from trioforge.storage import Backend
from trioforge.testing import open_test_runtime

NO_RETRY = Retry(max_attempts=1)


def make_registry() -> tuple[Registry, list[tuple[Any, ...]], dict[str, trio.Event]]:
    registry = Registry()
    ends: list[tuple[Any, ...]] = []
    events = {"started": trio.Event()}

    @registry.job("greet", retry=NO_RETRY)
    async def greet(ctx: JobContext, payload: Greeting) -> str:
        if payload.user == "nobody":
            raise LookupError("no such user")
        if payload.user == "spam":
            raise trioforge.Discard("spam")
        return f"hello {payload.user}"

    @registry.job("hang", retry=NO_RETRY, timeout=5.0)
    async def hang(ctx: JobContext, label: str) -> None:
        events["started"].set()
        await trio.sleep_forever()

    @registry.after_perform
    async def record(end: AttemptEnd) -> None:
        await trio.sleep(1.0)  # a hook that waits: it must survive the attempt's cancel
        ends.append((end.ctx.name, end.payload, end.outcome, type(end.error).__name__))

    @registry.after_perform
    async def legacy(ctx: JobContext, error: BaseException | None) -> None:
        ends.append(("legacy", ctx.name, type(error).__name__ if error else None))

    return registry, ends, events


async def test_after_hooks_see_each_outcome_with_the_payload(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry, ends, events = make_registry()
    async with open_test_runtime(registry, shutdown_grace=1.0) as rt:
        ok = await rt.enqueue("greet", Greeting("ada"))
        await rt.wait(ok)
        assert ends == [
            ("greet", Greeting("ada"), AttemptOutcome.COMPLETED, "NoneType"),
            ("legacy", "greet", None),
        ]  # the hooks ran before the outcome was visible to wait()
        ends.clear()
        await rt.wait(await rt.enqueue("greet", Greeting("nobody")))
        await rt.wait(await rt.enqueue("greet", Greeting("spam")))
        timed_out = await rt.wait(await rt.enqueue("hang", "slow"))
        assert timed_out.status is JobState.DEAD
        events["started"] = trio.Event()
        cancelled = await rt.enqueue("hang", "stop me")
        await events["started"].wait()
        await rt.cancel(cancelled)
        assert (await rt.wait(cancelled)).status is JobState.CANCELLED
        events["started"] = trio.Event()
        await rt.enqueue("hang", "at shutdown")
        await events["started"].wait()
    assert ends == [
        ("greet", Greeting("nobody"), AttemptOutcome.FAILED, "LookupError"),
        ("legacy", "greet", "LookupError"),
        ("greet", Greeting("spam"), AttemptOutcome.DISCARDED, "Discard"),
        ("legacy", "greet", "Discard"),
        ("hang", "slow", AttemptOutcome.TIMED_OUT, "JobTimeoutError"),
        ("legacy", "hang", "JobTimeoutError"),
        ("hang", "stop me", AttemptOutcome.CANCELLED, "NoneType"),
        ("hang", "at shutdown", AttemptOutcome.RELEASED, "NoneType"),
    ]


async def test_a_stuck_or_failing_hook_does_not_change_or_lose_the_outcome(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()

    @registry.job("tick", retry=NO_RETRY)
    async def tick(ctx: JobContext) -> int:
        return 1

    @registry.after_perform
    async def stuck(end: AttemptEnd) -> None:
        await trio.sleep_forever()

    @registry.after_perform
    async def broken(end: AttemptEnd) -> None:
        raise RuntimeError("hook bug")

    with trio.fail_after(AFTER_HOOKS_SECONDS * 3):  # virtual seconds
        async with open_test_runtime(registry) as rt:
            start = trio.current_time()
            info = await rt.wait(await rt.enqueue("tick"))
            assert trio.current_time() - start >= AFTER_HOOKS_SECONDS
    assert (info.status, info.result) == (JobState.COMPLETED, 1)
    assert "after hooks stopped" in caplog.text


async def test_a_timed_out_attempt_reaches_the_hooks(database: str | Backend) -> None:
    registry = Registry()
    seen: list[tuple[AttemptOutcome, str]] = []

    @registry.job("sleepy", retry=NO_RETRY, timeout=0.05)
    async def sleepy(ctx: JobContext, label: str) -> None:
        await trio.sleep_forever()

    @registry.after_perform
    async def record(end: AttemptEnd) -> None:
        await trio.lowlevel.checkpoint()
        seen.append((end.outcome, end.payload))

    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        await rt.wait(await rt.enqueue("sleepy", "x"))
    assert seen == [(AttemptOutcome.TIMED_OUT, "x")]


def test_a_hook_must_take_one_or_two_arguments() -> None:
    async def three(a: object, b: object, c: object) -> None: ...

    with pytest.raises(trioforge.ConfigurationError, match=r"\(end: AttemptEnd\)"):
        Registry().after_perform(three)  # type: ignore[type-var]


async def test_hooks_run_when_the_runtime_is_left_by_an_exception(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry, ends, events = make_registry()

    class Boom(Exception):
        pass

    async def leave_by_an_exception() -> None:
        async with open_test_runtime(registry) as rt:
            await rt.enqueue("hang", "torn down")
            await events["started"].wait()
            raise Boom

    with pytest.raises(Boom):
        await leave_by_an_exception()
    assert ends == [("hang", "torn down", AttemptOutcome.RELEASED, "NoneType")]
