"""Errors from a nursery inside a handler arrive as exception groups; retry and discard
rules look through them."""

from __future__ import annotations

import trio

import trioforge
from tests.support.fast import FAST
from trioforge import JobContext, JobState, Registry, Retry
from trioforge._core.retry import discard_reason, failure_outcome
from trioforge.storage import Backend
from trioforge.testing import open_test_runtime

RETRY_CONNECTION = Retry(max_attempts=3, base_delay=0, on=(ConnectionError,))


def group(*errors: Exception) -> ExceptionGroup[Exception]:
    return ExceptionGroup("from a nursery", list(errors))


def test_a_group_retries_only_if_every_leaf_is_retryable() -> None:
    assert RETRY_CONNECTION.retries(group(ConnectionResetError()))
    assert RETRY_CONNECTION.retries(group(ConnectionError(), group(BrokenPipeError())))
    assert not RETRY_CONNECTION.retries(group(ConnectionError(), ValueError()))
    assert not RETRY_CONNECTION.retries(group(group(ValueError())))
    assert Retry(on=()).retries(group(ValueError()))  # no `on`: everything retries
    assert failure_outcome(RETRY_CONNECTION, 1, group(ConnectionError()), 0.0).retry_at == 0.0
    assert failure_outcome(RETRY_CONNECTION, 1, group(KeyError()), 0.0).retry_at is None


def test_a_group_holding_a_discard_discards_with_its_reasons() -> None:
    assert discard_reason(trioforge.Discard("plain")) == "plain"
    assert discard_reason(ValueError()) is None
    assert discard_reason(group(ValueError(), group(KeyError()))) is None
    assert discard_reason(group(ConnectionError(), group(trioforge.Discard("gone")))) == "gone"
    many = group(trioforge.Discard("a"), group(trioforge.Discard("b"), trioforge.Discard("a")))
    assert discard_reason(many) == "a; b"


def make_registry(calls: list[str]) -> Registry:
    registry = Registry()

    async def raise_in_child(error: Exception) -> None:
        async def child() -> None:
            raise error

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)

    @registry.job("flaky", retry=RETRY_CONNECTION)
    async def flaky(ctx: JobContext) -> int:
        calls.append("flaky")
        if ctx.attempt < 3:
            await raise_in_child(ConnectionResetError("peer went away"))
        return ctx.attempt

    @registry.job("refuse", retry=RETRY_CONNECTION)
    async def refuse(ctx: JobContext) -> None:
        calls.append("refuse")
        await raise_in_child(trioforge.Discard("address bounced"))

    @registry.job("broken", retry=RETRY_CONNECTION)
    async def broken(ctx: JobContext) -> None:
        calls.append("broken")
        await raise_in_child(ValueError("bad data"))

    return registry


async def test_group_outcomes_in_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    calls: list[str] = []
    async with open_test_runtime(make_registry(calls)) as rt:
        flaky = await rt.enqueue("flaky")
        refuse = await rt.enqueue("refuse")
        broken = await rt.enqueue("broken")
        await rt.run_until_idle()
        done, dead, failed = [await rt.get(i) for i in (flaky, refuse, broken)]
    assert (done.status, done.attempt, done.result) == (JobState.COMPLETED, 3, 3)
    assert (dead.status, dead.attempt, dead.error) == (JobState.DEAD, 1, "address bounced")
    assert (failed.status, failed.attempt) == (JobState.DEAD, 1)
    assert "ValueError: bad data" in (failed.error or "")
    assert sorted(calls) == ["broken", "flaky", "flaky", "flaky", "refuse"]


async def test_group_outcomes_on_every_backend(database: str | Backend) -> None:
    calls: list[str] = []
    async with trioforge.open_runtime(make_registry(calls), database=database, **FAST) as rt:
        done = await rt.wait(await rt.enqueue("flaky"))
        dead = await rt.wait(await rt.enqueue("refuse"))
    assert (done.status, done.attempt) == (JobState.COMPLETED, 3)
    assert (dead.status, dead.attempt, dead.error) == (JobState.DEAD, 1, "address bounced")
