"""Wide pools (virtual time, memory backend): a slot that holds no job costs no task, and
shrinking a pool whose workers never started strands nothing."""

from __future__ import annotations

import trio

from trioforge import JobContext, JobState, Registry
from trioforge.testing import open_test_runtime, run

SLEEP = 10.0


def sleeper(starts: list[float]) -> Registry:
    registry = Registry()

    @registry.job("sleep")
    async def sleep(ctx: JobContext) -> None:
        starts.append(trio.current_time())
        await trio.sleep(SLEEP)

    return registry


def tasks() -> int:
    """Every task of this trio run."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, nurseries = 0, list(root.child_nurseries)
    while nurseries:
        nursery = nurseries.pop()
        count += len(nursery.child_tasks)
        for task in nursery.child_tasks:
            nurseries.extend(task.child_nurseries)
    return count


def test_slots_that_never_held_a_job_start_no_task() -> None:
    async def main() -> None:
        async with open_test_runtime(sleeper([]), queues={"narrow": 1}):
            await trio.sleep(1.0)
            narrow = tasks()
        async with open_test_runtime(sleeper([]), queues={"narrow": 20_000}):
            await trio.sleep(1.0)
            assert tasks() == narrow

    run(main)


def test_shrinking_a_pool_before_its_workers_started_strands_no_job() -> None:
    starts: list[float] = []

    async def main() -> list[JobState]:
        async with open_test_runtime(sleeper(starts), queues={"default": 5}) as rt:
            rt.resize("default", 2)
            t0 = trio.current_time()
            ids = [j.id for j in await rt.enqueue_many("sleep", [None] * 4)]
            states = [(await rt.wait(job_id)).status for job_id in ids]
        assert [t - t0 for t in starts] == [0.0, 0.0, SLEEP, SLEEP]
        return states

    assert run(main) == [JobState.COMPLETED] * 4
