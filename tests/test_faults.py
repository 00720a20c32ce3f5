"""Faults from storage: the runtime backs off, keeps serving, and loses nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from hypothesis import given
from hypothesis import strategies as st

import trioforge
from tests.support.virtual import EPOCH, run_virtual
from trioforge import DatabaseUnavailableError, JobContext, JobState, Registry, VirtualClock
from trioforge.actors.outcome_writer import RETRY_MAX
from trioforge.storage import ClaimResult, MemoryBackend, ops


class FlakyClaims(MemoryBackend):
    """A memory backend whose claims fail while ``down`` is set (a database outage)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.claims = 0

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        results: list[object] = []
        for op in batch:
            if isinstance(op, ops.Claim):
                self.claims += 1
                if self.claims > 100:  # a claim storm: end the outage so the test can fail
                    self.down = False
                if self.down:
                    results.append(DatabaseUnavailableError("claims are failing"))
                    continue
            results.extend(await super().execute([op], now))
        return results


def test_failing_claims_are_retried_on_the_poll_interval_not_in_a_loop() -> None:
    registry = Registry()

    @registry.job("work")
    async def work(ctx: JobContext) -> str:
        return "done"

    flaky = FlakyClaims()
    seen: list[trioforge.JobInfo] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        assert isinstance(backend, FlakyClaims)
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, poll_interval=1.0
        ) as rt:
            job_id = await rt.enqueue("work")
            await trio.sleep(10.0)
            assert backend.claims <= 12  # about one per poll interval, not thousands
            backend.down = False  # the outage ends: the job still runs
            seen.append(await rt.wait(job_id))

    run_virtual(scenario, flaky)
    assert seen[0].status is JobState.COMPLETED
    assert flaky.claims > 1


HEARTBEAT = 1.0
LEASE = 6.0
TIMINGS: dict[str, Any] = {
    "heartbeat_interval": HEARTBEAT,
    "lease_seconds": LEASE,
    "poll_interval": HEARTBEAT,
}


class Outage(MemoryBackend):
    """A memory backend that is away while ``start <= now < end`` (epoch seconds): the
    operations of the types in ``failing`` fail then (None: every operation, as when the
    database restarts)."""

    def __init__(self, start: float, end: float, failing: frozenset[type] | None = None) -> None:
        super().__init__()
        self.start, self.end, self.failing = start, end, failing

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        if not self.start <= now < self.end:
            return await super().execute(batch, now)
        if self.failing is None:
            raise DatabaseUnavailableError("the database is restarting")
        results: list[object] = []
        for op in batch:
            if type(op) in self.failing:
                results.append(DatabaseUnavailableError("the database is restarting"))
            else:
                results.extend(await super().execute([op], now))
        return results


def play_outage(
    backend: Outage, seconds: list[float], workers: int
) -> tuple[list[trioforge.JobInfo], dict[int, list[tuple[float, float]]]]:
    """Run one job per entry of ``seconds`` (each lasting that long) through the outage;
    return their final infos and every attempt's (start, end) by job index."""
    registry = Registry()
    runs: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(seconds))}
    finals: list[trioforge.JobInfo] = []

    async def scenario(db: MemoryBackend, clock: VirtualClock) -> None:
        @registry.job("work", retry=trioforge.Retry(max_attempts=5))
        async def work(ctx: JobContext, index: int) -> None:
            start = clock.now()
            await trio.sleep(seconds[index])
            runs[index].append((start, clock.now()))

        async with trioforge.open_runtime(
            registry, database=db, clock=clock, queues={"default": workers}, **TIMINGS
        ) as rt:
            ids = [await rt.enqueue(work, i) for i in range(len(seconds))]
            # This test's own calls would fail during the outage too: wait it out.
            await trio.sleep(max(0.0, backend.end - clock.now()))
            finals.extend([await rt.wait(job_id) for job_id in ids])

    run_virtual(scenario, backend)
    return finals, runs


@given(
    seconds=st.lists(st.integers(0, 4).map(float), min_size=1, max_size=8),
    workers=st.integers(1, 4),
    start=st.integers(1, 6 * 64).map(lambda t: t / 64),  # after the enqueues
    # Renewals resume within a heartbeat of the end, so the lease never runs out.
    length=st.integers(1, int((LEASE - 2 * HEARTBEAT) * 64)).map(lambda t: t / 64),
    only_outcomes=st.booleans(),
)
def test_an_outage_shorter_than_the_lease_loses_no_outcome_and_runs_nothing_twice(
    seconds: list[float], workers: int, start: float, length: float, only_outcomes: bool
) -> None:
    failing = frozenset({ops.Finish}) if only_outcomes else None
    backend = Outage(EPOCH + start, EPOCH + start + length, failing)
    finals, runs = play_outage(backend, seconds, workers)
    for info, attempts in zip(finals, runs.values(), strict=True):
        assert info.status is JobState.COMPLETED
        assert len(attempts) == 1, (info, attempts)  # never rescued
        assert info.attempt == 1
        # Recorded as soon as the database is back: within one backoff pause of its end.
        assert info.finished_at is not None
        assert info.finished_at <= max(attempts[0][1], backend.end) + RETRY_MAX


def test_outcomes_wait_out_a_long_write_outage_while_their_leases_are_renewed() -> None:
    # Outcome writes fail for three leases' worth of time, renewals keep working: each job's
    # lease is kept alive until its outcome lands, so nothing is rescued or run twice.
    backend = Outage(EPOCH + 1.0, EPOCH + 1.0 + 3 * LEASE, frozenset({ops.Finish}))
    finals, runs = play_outage(backend, [2.0, 3.0, 5.0], workers=2)
    assert [len(r) for r in runs.values()] == [1, 1, 1]
    assert [(f.status, f.attempt) for f in finals] == [(JobState.COMPLETED, 1)] * 3
    assert all(f.finished_at is not None and f.finished_at >= backend.end for f in finals)


def test_an_outage_longer_than_the_lease_runs_the_job_again() -> None:
    # The fallback: past its lease, an outcome is given up and the job runs again
    # (at-least-once), rather than waiting forever: handed back by its own process after
    # the outage, or rescued, whichever storage sees first.
    backend = Outage(EPOCH + 1.0, EPOCH + 1.0 + 2 * LEASE)
    finals, runs = play_outage(backend, [2.0], workers=1)
    assert [f.status for f in finals] == [JobState.COMPLETED]
    assert len(runs[0]) == 2


def test_progress_and_heartbeats_during_an_outage_do_not_fail_the_attempt() -> None:
    backend = Outage(EPOCH + 1.0, EPOCH + 3.0)
    registry = Registry()
    runs: list[int] = []

    @registry.job("report")
    async def report(ctx: JobContext) -> None:
        runs.append(ctx.attempt)
        for step in range(10):
            await trio.sleep(0.5)
            await ctx.progress(step * 10, f"step {step}")
            await ctx.heartbeat()

    seen: list[trioforge.JobInfo] = []

    async def scenario(db: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=db, clock=clock, **TIMINGS) as rt:
            job_id = await rt.enqueue(report)
            await trio.sleep(backend.end - clock.now())
            seen.append(await rt.wait(job_id))

    run_virtual(scenario, backend)
    assert runs == [1]
    assert (seen[0].status, seen[0].attempt, seen[0].progress) == (JobState.COMPLETED, 1, 90)


class LostClaimReply(MemoryBackend):
    """A memory backend whose first claim that takes jobs commits but answers with an error,
    as when the connection dies right after the commit."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[int] = []

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        results = await super().execute(batch, now)
        for i, (op, result) in enumerate(zip(batch, results, strict=True)):
            first = not self.lost and isinstance(op, ops.Claim)
            if first and isinstance(result, ClaimResult) and result.jobs:
                self.lost.extend(j.id for j in result.jobs)
                results[i] = DatabaseUnavailableError("connection lost after the commit")
        return results


def test_jobs_of_a_claim_whose_reply_was_lost_are_handed_back_at_once() -> None:
    backend = LostClaimReply()
    registry = Registry()
    seen: list[trioforge.JobInfo] = []

    @registry.job("work")
    async def work(ctx: JobContext) -> None:
        pass

    async def scenario(db: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=db, clock=clock, **TIMINGS) as rt:
            ids = [await rt.enqueue(work) for _ in range(3)]
            seen.extend([await rt.wait(job_id) for job_id in ids])

    run_virtual(scenario, backend)
    assert backend.lost  # the fault happened
    # Handed back as released (the attempt not counted) at the next claim, one poll
    # interval later, not rescued once the lease ran out.
    assert [(i.status, i.attempt) for i in seen] == [(JobState.COMPLETED, 1)] * 3
    assert all(i.finished_at is not None and i.finished_at < EPOCH + 2 * HEARTBEAT for i in seen)
