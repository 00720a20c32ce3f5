"""Faults from storage: the runtime backs off, keeps serving, and loses nothing."""

from __future__ import annotations

from collections.abc import Sequence

import trio

import trioforge
from tests.virtual import run_virtual
from trioforge import DatabaseUnavailableError, JobContext, JobState, Registry, VirtualClock
from trioforge.storage import MemoryBackend, ops


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
