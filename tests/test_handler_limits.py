"""Rate limits from inside a handler: ``ctx.acquire`` / ``ctx.limit`` take tokens from the
bucket claims take from, and ``ctx.drain`` empties it for every process."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import trioforge
from tests.support.virtual import run_virtual
from trioforge import JobContext, JobState, RateLimit, Registry, Retry, VirtualClock
from trioforge.storage import MemoryBackend

#: One call every 10 s, no burst.
STRIPE = RateLimit("stripe", rate=1, per=10)


def make_registry() -> tuple[Registry, dict[str, Any]]:
    registry = Registry()
    seen: dict[str, Any] = {"calls": [], "charges": []}

    @registry.job("charge", rate_limit=STRIPE)  # declares the limit; claimed through it
    async def charge(ctx: JobContext) -> None:
        seen["charges"].append(trio.current_time())

    @registry.job("sync")
    async def sync(ctx: JobContext, n: int) -> None:
        async with ctx.limit("stripe"):
            seen["calls"].append((n, trio.current_time()))

    @registry.job("throttled")
    async def throttled(ctx: JobContext) -> None:
        await ctx.acquire("stripe")
        await ctx.drain("stripe", retry_after=30)  # the upstream said 429
        seen["calls"].append(("drained", trio.current_time()))

    @registry.job("typo", retry=Retry(max_attempts=1))
    async def typo(ctx: JobContext) -> None:
        await ctx.acquire("stirpe")

    @registry.job("waits")
    async def waits(ctx: JobContext) -> None:
        seen["calls"].append(("waiting", trio.current_time()))
        await ctx.acquire("stripe")
        seen["calls"].append(("waited", trio.current_time()))

    return registry, seen


def test_calls_through_a_limit_are_spaced_by_its_rate() -> None:
    registry, seen = make_registry()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        queues = {"default": 4}
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues=queues
        ) as rt:
            began = trio.current_time()
            jobs = await rt.enqueue_many("sync", [1, 2, 3])
            for job in jobs:
                assert (await rt.wait(job)).status is JobState.COMPLETED
        times = sorted(t - began for _, t in seen["calls"])
        assert [round(t, 3) for t in times] == [0.0, 10.0, 20.0]

    run_virtual(scenario)


def test_a_drained_limit_starts_no_call_and_no_limited_job_before_its_time() -> None:
    registry, seen = make_registry()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            began = trio.current_time()
            await rt.wait(await rt.enqueue("throttled"))
            follow = await rt.enqueue("sync", 1)
            limited = await rt.enqueue("charge")
            assert (await rt.wait(follow)).status is JobState.COMPLETED
            assert (await rt.wait(limited)).status is JobState.COMPLETED
        (_, drained), (_, called) = seen["calls"]
        assert round(drained - began, 3) == 0.0
        # The call waited out the 30 s; the charge job got the token after it, 10 s on.
        assert round(called - began, 3) == 30.0
        assert [round(t - began, 3) for t in seen["charges"]] == [40.0]

    run_virtual(scenario)


def test_an_undeclared_limit_is_a_configuration_error_naming_the_declared_ones() -> None:
    registry, _ = make_registry()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            info = await rt.wait(await rt.enqueue("typo"))
        assert info.status is JobState.DEAD
        assert "ConfigurationError" in (info.error or "")
        assert "no rate limit 'stirpe' is declared (declared: stripe)" in (info.error or "")

    run_virtual(scenario)


def test_a_handler_cancelled_while_it_waits_takes_no_token() -> None:
    registry, seen = make_registry()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            began = trio.current_time()
            await rt.wait(await rt.enqueue("sync", 1))  # the one token: next in 10 s
            waiting = await rt.enqueue("waits")
            await trio.sleep(5)
            assert await rt.cancel(waiting)
            assert (await rt.wait(waiting)).status is JobState.CANCELLED
            await rt.wait(await rt.enqueue("sync", 2))
        assert [(n, round(t - began, 3)) for n, t in seen["calls"]] == [
            (1, 0.0),
            ("waiting", 0.0),
            (2, 10.0),  # the cancelled wait took nothing
        ]

    run_virtual(scenario)
