"""Resizing a queue's worker pool while it runs (virtual time, memory backend)."""

from __future__ import annotations

import pytest
import trio

import trioforge
from trioforge import InvalidArgumentError, InvalidStateError, JobContext, JobState, Registry
from trioforge.testing import open_test_runtime, run

JOB_SECONDS = 10.0


def slow_registry(starts: dict[int, float]) -> Registry:
    registry = Registry()

    @registry.job("slow")
    async def slow(ctx: JobContext, index: int) -> None:
        starts[index] = trio.current_time()
        await trio.sleep(JOB_SECONDS)

    return registry


def test_growing_the_pool_starts_due_jobs_at_once() -> None:
    starts: dict[int, float] = {}

    async def main() -> list[trioforge.JobInfo]:
        async with open_test_runtime(slow_registry(starts), queues={"default": 1}) as rt:
            t0 = trio.current_time()
            ids = [await rt.enqueue("slow", i) for i in range(3)]
            await trio.sleep(1.0)
            rt.resize("default", 3)
            assert rt.statistics().queues == {"default": 3}
            infos = [await rt.wait(job_id) for job_id in ids]
        assert sorted(t - t0 for t in starts.values()) == [0.0, 1.0, 1.0]
        return infos

    assert all(info.status is JobState.COMPLETED for info in run(main))


def test_shrinking_the_pool_lets_running_jobs_finish_and_then_claims_less() -> None:
    starts: dict[int, float] = {}

    async def main() -> list[trioforge.JobInfo]:
        async with open_test_runtime(slow_registry(starts), queues={"default": 3}) as rt:
            t0 = trio.current_time()
            ids = [await rt.enqueue("slow", i) for i in range(6)]
            await trio.sleep(1.0)
            rt.resize("default", 1)
            infos = [await rt.wait(job_id) for job_id in ids]
        # Three run to the end; after that one at a time.
        assert sorted(t - t0 for t in starts.values()) == [0.0, 0.0, 0.0, 10.0, 20.0, 30.0]
        return infos

    infos = run(main)
    assert [(i.status, i.attempt) for i in infos] == [(JobState.COMPLETED, 1)] * 6


def test_a_pool_of_zero_claims_nothing_until_it_grows() -> None:
    starts: dict[int, float] = {}

    async def main() -> None:
        async with open_test_runtime(slow_registry(starts), queues={"default": 2}) as rt:
            t0 = trio.current_time()
            rt.resize("default", 0)
            job_id = await rt.enqueue("slow", 0)
            await trio.sleep(5.0)
            assert (await rt.get(job_id)).status is JobState.AVAILABLE
            rt.resize("default", 1)
            await rt.wait(job_id)
        assert starts == {0: t0 + 5.0}

    run(main)


def test_resize_refuses_unknown_queues_bad_sizes_and_closed_runtimes() -> None:
    async def main() -> None:
        async with open_test_runtime(slow_registry({}), queues={"default": 2}) as rt:
            with pytest.raises(InvalidArgumentError, match="no workers for queue 'emails'"):
                rt.resize("emails", 2)
            with pytest.raises(InvalidArgumentError, match=">= 0"):
                rt.resize("default", -1)
            assert rt.statistics().queues == {"default": 2}
        with pytest.raises(InvalidStateError, match="shutting down"):
            rt.resize("default", 4)

    run(main)
