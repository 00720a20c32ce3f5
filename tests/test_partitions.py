"""A replica cut off from storage mid-job, in virtual time: nothing lost, stale writes fenced.

Two runtimes share one memory backend. Replica A runs the queue; replica B stands by with
a pool of 0. At a random instant A is cut off: every storage call it makes waits (a
network partition, or a process frozen mid-job), while its handlers run on. B grows its
pool at that instant. A's leases expire, the maintenance leader rescues A's jobs as new
attempts and B runs them. Later the partition heals (or only once everything is done) and
A's delayed writes (outcomes, renewals, claims) land: every one that belongs to a lost
attempt must be fenced off.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio
from hypothesis import event, given
from hypothesis import strategies as st

import trioforge
from tests.support.strategies import priorities
from trioforge import JobContext, JobState, Priority, VirtualClock
from trioforge.storage import Changed, Listening, MemoryBackend, Notice, SchemaStatus, ops
from trioforge.testing import EPOCH, run

HEARTBEAT = 1.0
LEASE = 5.0
TIMINGS: dict[str, Any] = {
    "heartbeat_interval": HEARTBEAT,
    "lease_seconds": LEASE,
    "poll_interval": HEARTBEAT,
}


class Partition:
    """A view of a shared backend whose calls wait while ``cut`` (their data still flows
    once healed, carrying whatever they were sent with)."""

    shared = True
    notifies = False
    max_in_flight = 1

    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend
        self.healed = trio.Event()
        self.healed.set()

    def cut(self) -> None:
        self.healed = trio.Event()

    def heal(self) -> None:
        self.healed.set()

    def listen(self, on_notice: Callable[[Notice], None]) -> AbstractAsyncContextManager[Listening]:
        raise NotImplementedError

    def changes(self) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Changed]]:
        return self._backend.changes()

    @asynccontextmanager
    async def environment(self) -> AsyncIterator[None]:
        yield

    async def open(self, *, migrate: bool = True) -> None:
        await self._backend.open(migrate=migrate)

    async def aclose(self) -> None:
        pass  # the shared backend outlives this view

    async def create_database(self) -> bool:
        return await self._backend.create_database()

    async def drop(self) -> None:
        await self._backend.drop()

    async def schema_status(self) -> SchemaStatus:
        return await self._backend.schema_status()

    async def migrate(self) -> SchemaStatus:
        return await self._backend.migrate()

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        await self.healed.wait()
        return await self._backend.execute(batch, now)


@attrs.frozen
class Attempt:
    owner: str
    number: int
    start: float
    end: float


@attrs.frozen
class Scenario:
    jobs: tuple[tuple[Priority, int], ...]  # (priority, seconds each attempt takes)
    workers: int
    cut_at: float
    heal_after: float | None  # None: only once every job is done


scenarios = st.builds(
    Scenario,
    jobs=st.lists(st.tuples(priorities, st.integers(1, 8)), min_size=1, max_size=8).map(tuple),
    workers=st.integers(1, 3),
    cut_at=st.builds(lambda s, k: s + k / 64, st.integers(0, 8), st.integers(1, 63)),
    heal_after=st.none() | st.integers(3 * int(LEASE), 40).map(float),
)


def replica(owner: str, attempts: dict[int, list[Attempt]]) -> trioforge.Registry:
    registry = trioforge.Registry()

    @registry.job("work")
    async def work(ctx: JobContext, job: tuple[int, int]) -> str:
        index, seconds = job
        start = trio.current_time()
        try:
            await trio.sleep(seconds)
        finally:
            attempts[index].append(Attempt(owner, ctx.attempt, start, trio.current_time()))
        return f"{owner}:{ctx.attempt}"

    return registry


@given(scenarios)
def test_a_cut_off_replicas_jobs_are_rescued_and_its_stale_writes_fenced(
    scenario: Scenario,
) -> None:
    attempts: dict[int, list[Attempt]] = {i: [] for i in range(len(scenario.jobs))}
    registry_a, registry_b = replica("A", attempts), replica("B", attempts)

    async def main() -> tuple[float, list[trioforge.JobInfo]]:
        shared = MemoryBackend()
        partition = Partition(shared)
        clock = VirtualClock(EPOCH - trio.current_time())
        async with trioforge.open_client(shared, registry=registry_a, clock=clock) as client:
            ids = [
                await client.enqueue("work", (i, seconds), priority=priority)
                for i, (priority, seconds) in enumerate(scenario.jobs)
            ]
        t0 = trio.current_time()
        async with (
            trioforge.open_runtime(
                registry_a, database=partition, clock=clock, owner="A", **TIMINGS
            ) as a,
            trioforge.open_runtime(
                registry_b,
                database=shared,
                clock=clock,
                owner="B",
                queues={"default": 0},
                **TIMINGS,
            ) as b,
        ):
            a.resize("default", scenario.workers)
            await trio.sleep_until(t0 + scenario.cut_at)
            partition.cut()
            b.resize("default", scenario.workers)
            if scenario.heal_after is not None:
                await trio.sleep(scenario.heal_after)
                partition.heal()
            finals = [await b.wait(job_id) for job_id in ids]
            partition.heal()
        return t0 + scenario.cut_at, finals

    cut, finals = run(main)
    for index, info in enumerate(finals):
        mine = sorted(attempts[index], key=lambda a: a.number)
        assert info.status is JobState.COMPLETED, (index, info)
        # Every claim is a fresh attempt number; a lost attempt counts.
        assert [a.number for a in mine] == list(range(1, len(mine) + 1)), mine
        assert info.attempt == len(mine)
        # The stored result is the last attempt's: nothing stale overwrote it.
        assert info.result == f"{mine[-1].owner}:{mine[-1].number}"
        for attempt, successor in itertools.pairwise(mine):
            if attempt.owner == "A" and attempt.start < cut:
                # Claimed before the cut: its outcome could not be the last word, and the
                # job was not handed on while that attempt's lease was alive.
                assert successor.start >= cut - HEARTBEAT + LEASE, (attempt, successor)
        if any(a.owner == "A" and a.start < cut < a.end for a in mine):
            event("a job was running on A when it was cut off")
            assert mine[-1].start > cut
