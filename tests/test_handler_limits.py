"""Rate limits from inside a handler: ``ctx.acquire`` / ``ctx.limit`` take tokens from the
bucket claims take from, and ``ctx.drain`` empties it for every process."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import trio
import trio.testing

import trioforge
from tests.support.virtual import run_virtual
from trioforge import JobContext, JobState, RateLimit, Registry, Retry, VirtualClock
from trioforge.storage import MemoryBackend
from trioforge.testing import perform

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

    @registry.job("bad_drain", retry=Retry(max_attempts=1))
    async def bad_drain(ctx: JobContext) -> None:
        await ctx.drain("stripe", retry_after=-1)

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
        # Both waited out the 30 s, then shared the tokens as they came (whichever asked
        # first at 30 s got that one; the other the next, 10 s on).
        [charged] = seen["charges"]
        assert sorted(round(t - began, 3) for t in (called, charged)) == [30.0, 40.0]

    run_virtual(scenario)


def test_an_undeclared_limit_or_a_bad_retry_after_is_refused() -> None:
    registry, _ = make_registry()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            info = await rt.wait(await rt.enqueue("typo"))
            bad = await rt.wait(await rt.enqueue("bad_drain"))
        assert info.status is JobState.DEAD
        assert "ConfigurationError" in (info.error or "")
        assert "no rate limit 'stirpe' is declared (declared: stripe)" in (info.error or "")
        assert "InvalidArgumentError: retry_after must be a finite number" in (bad.error or "")

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


DRAINING_MODULE = """
import time

import trioforge

registry = trioforge.Registry()
STRIPE = trioforge.RateLimit("stripe", rate=100, per=1)


@registry.job("drain")
async def drain(ctx: trioforge.JobContext) -> float:
    await ctx.acquire("stripe")
    before = time.time()
    await ctx.drain("stripe", retry_after=2)  # the upstream said 429: none for 2 s from here
    return before


@registry.job("charge", rate_limit=STRIPE)
async def charge(ctx: trioforge.JobContext) -> float:
    return time.time()
"""


async def test_a_drain_in_one_process_holds_calls_and_claims_in_another(
    tmp_path: Path, shared_url: str
) -> None:
    (tmp_path / "draining.py").write_text(DRAINING_MODULE)
    here = Registry()
    here.job("drain")(_elsewhere)
    here.job("charge", rate_limit=RateLimit("stripe", rate=100, per=1))(_elsewhere)

    @here.job("call", queue="calls")  # the only queue this process serves
    async def call(ctx: JobContext) -> float:
        async with ctx.limit("stripe"):
            return time.time()

    command = [
        sys.executable, "-m", "trioforge", "worker", "draining:registry", "--database",
        shared_url, "--queue", "default=2", "--poll-interval", "0.1",
    ]  # fmt: skip
    log = tmp_path / "worker.log"
    process = await trio.lowlevel.open_process(
        command, cwd=tmp_path, stdout=log.open("ab"), stderr=log.open("ab")
    )
    try:
        async with trioforge.open_runtime(
            here, database=shared_url, poll_interval=0.1, queues={"calls": 1}
        ) as rt:
            with trio.fail_after(30):
                drained = await rt.wait(await rt.enqueue("drain"))
                called = await rt.wait(await rt.enqueue(call))
                charged = await rt.wait(await rt.enqueue("charge"))
    finally:
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            await process.wait()
    assert drained.status is JobState.COMPLETED, log.read_text()
    drained_at = drained.result
    # Neither a call here nor a claim there got a token before the 2 s were over.
    assert drained_at + 2 <= called.result < drained_at + 4
    assert called.result <= charged.result < drained_at + 6


async def _elsewhere(ctx: JobContext) -> None:
    """Stands in for a job the worker process runs: this process only enqueues it."""


async def test_perform_lets_a_handler_take_tokens_of_its_own_job_s_limit() -> None:
    registry = Registry()

    @registry.job("refund", rate_limit=STRIPE)
    async def refund(ctx: JobContext) -> str:
        async with ctx.limit("stripe"):
            return "refunded"

    assert await perform(refund) == "refunded"
