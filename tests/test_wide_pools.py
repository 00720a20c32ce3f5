"""Wide pools (virtual time, memory backend): a slot that holds no job costs no task,
shrinking a pool whose workers never started strands nothing, a claim of many jobs starts
them a bounded number per scheduler pass, and two attempts of one job are held apart."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import attrs
import pytest
import trio

from trioforge import JobContext, JobState, Registry, Retry
from trioforge.actors import attempts, leases, outcome_writer, queue
from trioforge.actors.running import RunningJobs, StopReason
from trioforge.actors.storage_actor import StorageHandle
from trioforge.storage import ClaimedJob, Outcome, ops
from trioforge.testing import open_test_runtime, run

SLEEP = 10.0


def sleeper(starts: list[float]) -> Registry:
    registry = Registry()

    @registry.job("sleep")
    async def sleep(ctx: JobContext) -> None:
        starts.append(trio.current_time())
        await trio.sleep(SLEEP)

    return registry


def all_tasks() -> list[trio.lowlevel.Task]:
    """Every task of this trio run."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    found: list[trio.lowlevel.Task] = []
    nurseries = list(root.child_nurseries)
    while nurseries:
        nursery = nurseries.pop()
        found.extend(nursery.child_tasks)
        for task in nursery.child_tasks:
            nurseries.extend(task.child_nurseries)
    return found


def tasks() -> int:
    return len(all_tasks())


def workers(queue_name: str) -> int:
    """The queue's worker tasks alive."""
    return sum(task.name == f"{queue_name}-worker" for task in all_tasks())


def test_slots_that_never_held_a_job_start_no_task() -> None:
    async def main() -> None:
        async with open_test_runtime(sleeper([]), queues={"narrow": 1}):
            await trio.sleep(1.0)
            narrow = tasks()
        async with open_test_runtime(sleeper([]), queues={"narrow": 20_000}):
            await trio.sleep(1.0)
            assert tasks() == narrow

    run(main)


def test_idle_workers_beyond_the_cap_leave_and_the_next_burst_runs_at_full_width() -> None:
    """A burst 500 jobs wider than ``IDLE_KEEP`` runs on one worker per job; once it is
    over ``IDLE_KEEP`` workers are left, not one per slot used, and the next burst as wide
    still starts every job at once."""
    width = queue.IDLE_KEEP + 500
    starts: list[float] = []

    async def main() -> None:
        async with open_test_runtime(sleeper(starts), queues={"default": 2 * width}) as rt:
            for burst in range(2):
                t0 = trio.current_time()
                jobs = await rt.enqueue_many("sleep", [None] * width)
                await trio.sleep(1.0)
                assert workers("default") == width
                for job in jobs:
                    assert (await rt.wait(job.id)).status is JobState.COMPLETED
                assert starts[burst * width :] == [t0] * width
                assert workers("default") == queue.IDLE_KEEP

    run(main)


def test_a_pool_with_a_backlog_keeps_its_workers() -> None:
    """A backlog four pools wide runs on the same worker tasks round after round: while
    claims come back full, workers that come free stay (a drain does not start a task per
    job)."""
    width = queue.IDLE_KEEP + 500
    seen: list[set[trio.lowlevel.Task]] = []

    async def main() -> None:
        async with open_test_runtime(sleeper([]), queues={"default": width}) as rt:
            jobs = await rt.enqueue_many("sleep", [None] * (4 * width))
            await trio.sleep(1.0)
            for _ in range(4):
                seen.append({t for t in all_tasks() if t.name == "default-worker"})
                await trio.sleep(SLEEP)
            for job in jobs:
                await rt.wait(job.id)
            assert workers("default") == queue.IDLE_KEEP

    run(main)
    assert len(seen[0]) == width
    assert all(tasks == seen[0] for tasks in seen)


def test_workers_idle_when_the_backlog_ends_are_let_go() -> None:
    """Jobs that end before the next claim lands leave the whole pool idle; the claim that
    finds the backlog gone retires the idle workers beyond ``IDLE_KEEP``."""
    width = queue.IDLE_KEEP + 500
    registry = Registry()

    @registry.job("noop")
    async def noop(ctx: JobContext) -> None:
        pass

    async def main() -> None:
        async with open_test_runtime(registry, queues={"default": width}) as rt:
            jobs = await rt.enqueue_many("noop", [None] * (2 * width))
            for job in jobs:
                await rt.wait(job.id)
            await trio.sleep(1.0)  # (virtual) the claims after the last jobs ended
            assert workers("default") == queue.IDLE_KEEP

    run(main)


@attrs.define
class Parcel:
    items: list[int]


def test_a_waiting_worker_and_the_outcome_writer_hold_nothing_of_the_last_job() -> None:
    """Once a job's outcome is written, its decoded payload, its claimed record and its
    outcome are garbage, though the worker that ran it, the writer that wrote it and the
    storage actor that served the write are still alive: memory follows the jobs running,
    not the slots that ever held one."""
    registry = Registry()
    payloads: list[weakref.ref[Parcel]] = []

    @registry.job("keep")
    async def keep(ctx: JobContext, parcel: Parcel) -> list[int]:
        payloads.append(weakref.ref(parcel))
        return parcel.items

    async def main() -> None:
        async with open_test_runtime(registry, queues={"default": 1}) as rt:
            job = await rt.enqueue(keep, Parcel([1, 2, 3]))
            assert (await rt.wait(job.id)).result == [1, 2, 3]
            gc.collect()
            assert workers("default") == 1
            assert payloads[0]() is None
            objects = gc.get_objects()
            assert [o for o in objects if isinstance(o, ClaimedJob) and o.id == job.id] == []
            assert [o for o in objects if isinstance(o, Outcome) and o.job_id == job.id] == []

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


def test_a_big_claim_starts_its_jobs_in_passes_that_timers_run_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each start costs 0.1 s (a jump of the virtual clock, standing for CPU time); 100 jobs
    are claimed at once, 10 handed out a pass. A timer due 1 s later (the heartbeat is one)
    runs one or two passes after it fell due, with 10 to 30 jobs started, not after all 100: a
    claim handed out in one pass held the heartbeat up for as long as every start took."""
    monkeypatch.setattr(queue, "HAND_OUT", 10)
    registry = Registry()
    started: list[int] = []

    @registry.job("wide")
    async def wide(ctx: JobContext, index: int) -> None:
        started.append(index)
        trio.lowlevel.current_clock().jump(0.1)  # type: ignore[attr-defined]
        await trio.sleep(60.0)

    async def main() -> tuple[int, float, int]:
        async with open_test_runtime(registry, queues={"default": 100}) as rt:
            t0 = trio.current_time()
            jobs = await rt.enqueue_many(wide, list(range(100)))
            await trio.sleep(1.0)
            seen, late = len(started), trio.current_time() - t0 - 1.0
            for job in jobs:
                await rt.wait(job.id)
            return seen, late, len(started)

    seen, late, total = run(main)
    assert total == 100
    # It fell due in a pass; it runs in the next one, before or after that pass's starts.
    assert 1 <= seen <= 30
    assert late < 2.5  # two passes of 10 starts (1 s each) at most


def test_two_attempts_of_one_job_are_held_and_stopped_apart() -> None:
    """After a stall, a stale attempt and its rescued successor can run here at once: each
    is found by its lease, a stop by job id reaches both, and finishing one keeps the
    other."""

    async def main() -> None:
        running = RunningJobs()
        stale, fresh = running.start(5, 1), running.start(5, 2)
        other = running.start(6, 1)
        assert len(running) == 3
        running.stop(5, StopReason.LOST, lease=1)
        assert stale.reason is StopReason.LOST
        assert fresh.reason is None
        running.finish(5, 1)
        assert len(running) == 2
        running.stop(5, StopReason.USER)
        assert fresh.reason is StopReason.USER
        assert other.reason is None
        running.finish(5, 2)
        running.finish(6, 1)
        assert len(running) == 0

    run(main)


def test_a_worker_whose_loop_raises_logs_it_and_starts_over(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker loop restarts itself (no supervising frame above it): a bug that escapes
    it for one job (here in deciding the outcome of its attempt, after its handler ran) is
    logged, and the same one-slot pool runs the next job."""
    registry = Registry()
    ran: list[int] = []

    @registry.job("work")
    async def work(ctx: JobContext, index: int) -> None:
        ran.append(index)

    real = attempts.decide_outcome

    def decide_outcome(job: ClaimedJob, retry: Retry, **how: Any) -> Outcome | None:
        if job.payload == "0":
            raise RuntimeError("a bug in the worker loop")
        return real(job, retry, **how)

    monkeypatch.setattr(queue, "decide_outcome", decide_outcome)

    async def main() -> JobState:
        async with open_test_runtime(registry, queues={"default": 1}) as rt:
            await rt.enqueue(work, 0)
            second = await rt.enqueue(work, 1)
            return (await rt.wait(second.id)).status

    assert run(main) is JobState.COMPLETED
    assert ran == [0, 1]
    assert "queue default: actor crashed; restarting it" in caplog.messages


def test_leases_are_renewed_and_outcomes_written_a_bounded_number_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most ``RENEW_MAX`` leases a renewal and ``WRITE_MAX`` outcomes a write: 10 jobs
    running through two heartbeats are renewed 3 a request, every lease each beat, and
    their 10 outcomes, reported at once, go out 4 a write."""
    monkeypatch.setattr(leases, "RENEW_MAX", 3)
    monkeypatch.setattr(outcome_writer, "WRITE_MAX", 4)
    renewals: list[int] = []
    writes: list[int] = []
    call = StorageHandle.call

    async def counted(self: StorageHandle, op: ops.Op[Any]) -> Any:
        if isinstance(op, ops.Renew):
            renewals.append(len(op.leases))
        elif isinstance(op, ops.Finish):
            writes.append(len(op.outcomes))
        return await call(self, op)

    monkeypatch.setattr(StorageHandle, "call", counted)
    registry = Registry()

    @registry.job("long")
    async def long(ctx: JobContext, index: int) -> None:
        await trio.sleep(25.0)

    async def main() -> list[JobState]:
        async with open_test_runtime(registry, queues={"default": 10}) as rt:
            jobs = await rt.enqueue_many(long, list(range(10)))
            return [(await rt.wait(job.id)).status for job in jobs]

    assert run(main) == [JobState.COMPLETED] * 10
    # The heartbeats at 10 s and 20 s, each sending its requests at once.
    assert sorted(renewals) == sorted([3, 3, 3, 1] * 2)
    assert writes == [4, 4, 2]
