"""Cancellation, in every direction: user cancel by id, runtime teardown, cancelled callers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

import trioforge
from tests.support.fast import FAST
from tests.support.virtual import run_virtual
from trioforge import JobContext, JobState, Registry, Retry, VirtualClock
from trioforge.actors.running import RunningJobs, StopReason
from trioforge.storage import Backend, MemoryBackend, ops


def make_registry() -> tuple[Registry, dict[str, Any]]:
    registry = Registry()
    seen: dict[str, Any] = {"started": trio.Event(), "cleaned": [], "runs": 0}

    @registry.job("hang", retry=Retry(max_attempts=5, base_delay=0))
    async def hang(ctx: JobContext) -> None:
        seen["runs"] += 1
        seen["started"].set()
        try:
            await trio.sleep_forever()
        finally:
            seen["cleaned"].append(ctx.job_id)

    @registry.job("stubborn", retry=Retry(max_attempts=5, base_delay=0))
    async def stubborn(ctx: JobContext) -> str:
        seen["started"].set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            return "swallowed the cancel"  # a badly behaved handler
        return "unreachable"

    @registry.job("quick")
    async def quick(ctx: JobContext) -> None:
        seen["runs"] += 1

    return registry, seen


async def test_cancelling_a_pending_job_means_it_never_runs(database: str | Backend) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        job_id = await rt.enqueue("quick", delay=3600)
        assert await rt.cancel(job_id)
        info = await rt.wait(job_id)
        assert not await rt.cancel(job_id)  # already finished
    assert (info.status, info.attempt, seen["runs"]) == (JobState.CANCELLED, 0, 0)


async def test_cancelling_a_running_job_fires_its_scope_runs_finally_and_never_retries(
    database: str | Backend,
) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        job_id = await rt.enqueue("hang")
        await seen["started"].wait()
        assert await rt.cancel(job_id)
        info = await rt.wait(job_id)
    assert info.status is JobState.CANCELLED
    assert seen["cleaned"] == [job_id]
    assert (seen["runs"], info.attempt) == (1, 1)


async def test_a_handler_that_swallows_the_cancel_still_ends_cancelled(
    database: str | Backend,
) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        job_id = await rt.enqueue("stubborn")
        await seen["started"].wait()
        await rt.cancel(job_id)
        info = await rt.wait(job_id)
    assert (info.status, info.result) == (JobState.CANCELLED, None)


async def test_cancel_from_another_process_reaches_the_owner_through_its_heartbeat(
    shared_url: str,
) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(registry, database=shared_url, **FAST) as rt:
        job_id = await rt.enqueue("hang")
        await seen["started"].wait()
        # A separate client (own connection, no in-process link to the runtime's scopes).
        async with trioforge.open_client(shared_url) as other:
            assert await other.cancel(job_id)
            with trio.fail_after(10):
                info = await other.wait(job_id)
    assert info.status is JobState.CANCELLED
    assert seen["cleaned"] == [job_id]


async def test_cancelling_the_runtime_from_outside_releases_running_jobs(
    database: str | Backend,
) -> None:
    registry, seen = make_registry()
    with trio.CancelScope() as outer:
        async with trioforge.open_runtime(
            registry, database=database, shutdown_grace=3600, **FAST
        ) as rt:
            job_id = await rt.enqueue("hang")
            await seen["started"].wait()
            outer.cancel()  # no grace on cancellation: jobs stop at once
            await trio.sleep_forever()
    assert outer.cancelled_caught
    assert seen["cleaned"] == [job_id]
    async with trioforge.open_client(database) as client:
        info = await client.get(job_id)
    assert (info.status, info.attempt) == (JobState.AVAILABLE, 0)  # handed back, not counted


async def test_a_cancelled_wait_changes_nothing(database: str | Backend) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        job_id = await rt.enqueue("hang")
        await seen["started"].wait()
        with trio.move_on_after(0.01) as waited:
            await rt.wait(job_id)
        assert waited.cancelled_caught
        assert (await rt.get(job_id)).status is JobState.RUNNING
        await rt.cancel(job_id)
        assert (await rt.wait(job_id)).status is JobState.CANCELLED


async def test_using_a_client_after_its_block_is_a_clear_error(database: str | Backend) -> None:
    async with trioforge.open_client(database) as client:
        pass
    with pytest.raises(trioforge.TrioforgeError, match="storage is closed"):
        await client.get(1)


async def test_ctx_heartbeat_picks_up_a_cancel_from_another_process(shared_url: str) -> None:
    registry = Registry()
    started, stopped = trio.Event(), trio.Event()

    @registry.job("poller")
    async def poller(ctx: JobContext) -> None:
        started.set()
        try:
            while True:  # a long loop that checks in with storage itself
                await ctx.heartbeat()
                await trio.sleep(0.01)
        finally:
            stopped.set()

    # The runtime's own heartbeat is far away: only ctx.heartbeat() can notice the cancel.
    options = {**FAST, "heartbeat_interval": 60.0, "lease_seconds": 120.0}
    async with trioforge.open_runtime(registry, database=shared_url, **options) as rt:
        job_id = await rt.enqueue("poller")
        await started.wait()
        async with trioforge.open_client(shared_url) as other:
            await other.cancel(job_id)
        with trio.fail_after(10):
            await stopped.wait()
            info = await rt.wait(job_id)
    assert info.status is JobState.CANCELLED


class HeldClaims(MemoryBackend):
    """Claims wait at a gate once ``hold`` is set, so one can be in flight at a chosen time."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.claiming = trio.Event()
        self.gate = trio.Event()

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        if self.hold and any(isinstance(op, ops.Claim) for op in batch):
            self.claiming.set()
            await self.gate.wait()
        return await super().execute(batch, now)


def test_a_claim_that_lands_while_the_pool_is_cancelled_is_handed_back() -> None:
    registry, _ = make_registry()
    held = HeldClaims()
    job_ids: list[int] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        assert isinstance(backend, HeldClaims)
        async with trio.open_nursery() as nursery:

            async def cancel_mid_claim(outer: trio.CancelScope) -> None:
                await backend.claiming.wait()
                outer.cancel()
                backend.gate.set()  # the claim is shielded: it completes all the same

            with trio.CancelScope() as outer:
                nursery.start_soon(cancel_mid_claim, outer)
                async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
                    await trio.testing.wait_all_tasks_blocked()  # the start-up claim is done
                    backend.hold = True
                    job_ids.append((await rt.enqueue("hang")).id)
                    await trio.sleep_forever()
        async with trioforge.open_client(backend, clock=clock) as client:
            info = await client.get(job_ids[0])
        # Claimed as the workers went away: released, not stranded as running.
        assert (info.status, info.attempt) == (JobState.AVAILABLE, 0)

    run_virtual(scenario, held)


def test_a_job_retried_after_a_cancel_is_not_cancelled_again() -> None:
    """The cancel of an attempt that ended before storage answered must not stop a later
    attempt of the same job (after an operator's retry) when it starts here."""
    registry, seen = make_registry()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            job = await rt.enqueue("hang")
            await seen["started"].wait()
            assert await rt.cancel(job)
            assert (await rt.wait(job)).status is JobState.CANCELLED
            seen["started"] = trio.Event()
            assert await rt.retry(job)
            with trio.fail_after(60):  # virtual seconds
                await seen["started"].wait()
            await trio.testing.wait_all_tasks_blocked()
            assert (await rt.get(job)).status is JobState.RUNNING
            assert await rt.cancel(job)  # a running job: requested, so True
            assert (await rt.wait(job)).status is JobState.CANCELLED
        assert seen["runs"] == 2

    run_virtual(scenario)


async def test_an_early_cancel_applies_to_the_claim_in_flight_only() -> None:
    """A cancel heard while a claim was in flight stops the attempt that claim starts; one
    heard before a claim was sent is about an earlier attempt and stops nothing."""
    running = RunningJobs()
    in_flight = running.claiming()
    running.cancel_running(7)  # storage: job 7 runs (this claim may have taken it)
    running.hold(7, 1, until=100.0, claimed_at=in_flight)
    first = running.start(7, 1)
    assert first.scope.cancel_called
    assert first.reason is StopReason.USER
    running.finish(7, 1)
    running.release(7, 1)

    running.cancel_running(8)  # job 8 runs elsewhere; it is then cancelled and retried
    later = running.claiming()
    running.hold(8, 2, until=100.0, claimed_at=later)
    second = running.start(8, 2)
    assert not second.scope.cancel_called
    assert second.reason is None


def test_a_worker_s_next_job_is_untouched_by_the_last_one_s_cancel_or_deadline() -> None:
    """A worker's attempts share a cancel scope until one fires it: with one worker, a job
    after a cancelled one, after a timed-out one and after one that finished well within its
    timeout (or heartbeat timeout) runs for as long as it needs, and a cancel of a finished
    job reaches no later one."""
    registry = Registry()
    ran: list[str] = []
    started = {"stubborn": trio.Event(), "sleeper": trio.Event()}

    @registry.job("stubborn", retry=Retry(max_attempts=1))
    async def stubborn(ctx: JobContext) -> str:
        started["stubborn"].set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            return "swallowed the cancel"
        return "unreachable"

    @registry.job("quick", timeout=5, retry=Retry(max_attempts=1))
    async def quick(ctx: JobContext) -> None:
        ran.append("quick")

    @registry.job("beats", heartbeat_timeout=5, retry=Retry(max_attempts=1))
    async def beats(ctx: JobContext) -> None:
        ran.append("beats")

    @registry.job("slow", timeout=2, retry=Retry(max_attempts=1))
    async def slow(ctx: JobContext) -> None:
        await trio.sleep(10)

    @registry.job("sleeper", retry=Retry(max_attempts=1))
    async def sleeper(ctx: JobContext, seconds: float) -> None:
        started["sleeper"].set()
        await trio.sleep(seconds)
        ran.append(f"slept {seconds}")

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 1}
        ) as rt:
            with trio.fail_after(600):  # virtual seconds
                cancelled = await rt.enqueue("stubborn")
                await started["stubborn"].wait()
                assert await rt.cancel(cancelled)
                assert (await rt.wait(cancelled)).status is JobState.CANCELLED
                after_cancel = await rt.enqueue(sleeper, 3.0)
                assert (await rt.wait(after_cancel)).status is JobState.COMPLETED
                timed_out = await rt.enqueue("slow")
                assert (await rt.wait(timed_out)).status is JobState.DEAD
                after_timeout = await rt.enqueue(sleeper, 3.0)
                assert (await rt.wait(after_timeout)).status is JobState.COMPLETED
                for name in ("quick", "beats"):  # each leaves a deadline 5s ahead
                    assert (await rt.wait(await rt.enqueue(name))).status is JobState.COMPLETED
                    started["sleeper"] = trio.Event()
                    after_deadline = await rt.enqueue(sleeper, 30.0)
                    await started["sleeper"].wait()
                    assert not await rt.cancel(timed_out)  # finished: stops nothing here
                    assert (await rt.wait(after_deadline)).status is JobState.COMPLETED
        assert ran == ["slept 3.0", "slept 3.0", "quick", "slept 30.0", "beats", "slept 30.0"]

    run_virtual(scenario)
