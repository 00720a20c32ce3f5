"""The storage contract for workflow runs: suspension, wake-ups, the record, signals,
children and cancel, on every backend, with explicit times."""

from __future__ import annotations

import json

import attrs
import pytest
import trio

from tests.contract.test_contract import T0, changed_ids, claim, enqueue, finish, get, one
from trioforge import InvalidArgumentError, InvalidStateError, JobInfo, JobNotFoundError, JobState
from trioforge._core.states import Compensated, Succeeded, Suspended
from trioforge.storage import (
    Backend,
    CancelResult,
    ClaimedJob,
    NewJob,
    Outcome,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
    WorkflowRecord,
    ops,
)


def run(name: str = "a", *, run_at: float = T0, key: str | None = None) -> NewJob:
    return NewJob(name, "q", "{}", 10, run_at, 3, key, workflow=True)


def entry(seq: int, name: str = "s", status: StepStatus = StepStatus.COMPLETED) -> StepRecord:
    return StepRecord(seq, StepKind.STEP, name, status, 1, '"r"', started_at=T0, finished_at=T0)


async def claim_one(backend: Backend, now: float = T0) -> ClaimedJob:
    [claimed] = (await claim(backend, now, limit=1)).jobs
    return claimed


async def load(backend: Backend, job: ClaimedJob, now: float = T0) -> WorkflowRecord:
    record: WorkflowRecord | None = await one(backend, ops.LoadWorkflow(job.id, job.lease), now)
    assert record is not None
    return record


async def record(
    backend: Backend,
    job: ClaimedJob,
    step: StepRecord,
    now: float = T0,
    *,
    consume_signal: int | None = None,
    child: NewJob | None = None,
    clear_cancel: bool = False,
) -> StepWrite:
    op = ops.RecordStep(job.id, job.lease, step, consume_signal, child, clear_cancel)
    written: StepWrite = await one(backend, op, now)
    return written


async def test_a_suspended_run_waits_until_its_wake_time_uncounted(backend: Backend) -> None:
    [run_id] = await enqueue(backend, run())
    job = await claim_one(backend)
    assert await finish(backend, job, Outcome(job.id, job.lease, Suspended(T0 + 100)), T0 + 1)
    info = await get(backend, run_id)
    assert (info.status, info.run_at, info.attempt) == (JobState.SCHEDULED, T0 + 100, 0)
    result = await claim(backend, T0 + 99)
    assert (result.jobs, result.next_run_at) == ((), T0 + 100)
    again = await claim_one(backend, T0 + 100)
    assert (again.id, again.attempt) == (run_id, 1)


async def test_a_run_woken_while_running_is_due_when_it_suspends(backend: Backend) -> None:
    [run_id] = await enqueue(backend, run())
    job = await claim_one(backend)
    await load(backend, job)
    await one(backend, ops.SendSignal(run_id, "go", "true"), T0 + 1)
    await finish(backend, job, Outcome(job.id, job.lease, Suspended(T0 + 1000)), T0 + 2)
    assert (await get(backend, run_id)).run_at == T0 + 2
    # The next load takes the signal and clears the wake-up: a later suspension waits.
    job = await claim_one(backend, T0 + 2)
    loaded = await load(backend, job, T0 + 2)
    assert [(s.name, s.payload) for s in loaded.signals] == [("go", "true")]
    await finish(backend, job, Outcome(job.id, job.lease, Suspended(T0 + 1000)), T0 + 3)
    assert (await get(backend, run_id)).run_at == T0 + 1000


async def test_the_record_is_fenced_by_the_run_lease_and_kept_in_order(backend: Backend) -> None:
    [run_id] = await enqueue(backend, run())
    job = await claim_one(backend)
    failed = attrs.evolve(entry(1, "b", StepStatus.FAILED), error="boom", wake_at=T0 + 5)
    assert (await record(backend, job, failed)).applied
    assert (await record(backend, job, entry(0, "a"))).applied
    assert (await record(backend, job, attrs.evolve(entry(1, "b"), attempt=2))).applied
    stale = attrs.evolve(job, lease=job.lease + 1)
    assert not (await record(backend, stale, entry(2, "c"))).applied
    assert await one(backend, ops.LoadWorkflow(job.id, job.lease + 1)) is None
    loaded = await load(backend, job)
    assert [(s.seq, s.name, s.status, s.attempt) for s in loaded.steps] == [
        (0, "a", StepStatus.COMPLETED, 1),
        (1, "b", StepStatus.COMPLETED, 2),
    ]
    assert loaded.steps[0] == entry(0, "a")
    assert (loaded.run_id, loaded.created_at, loaded.cancel_requested) == (run_id, T0, False)


async def test_a_child_started_with_its_step_wakes_its_parent_when_it_ends(
    backend: Backend,
) -> None:
    [run_id] = await enqueue(backend, run())
    parent = await claim_one(backend)
    child = NewJob("b", "q", "{}", 10, T0, 3, parent_id=run_id)
    step = StepRecord(0, StepKind.CHILD, "b", StepStatus.COMPLETED, 1)
    written = await record(backend, parent, step, child=child)
    assert written.applied
    assert written.child_id is not None
    await finish(backend, parent, Outcome(run_id, parent.lease, Suspended(1e15)), T0 + 1)
    [started] = (await claim(backend, T0 + 2)).jobs
    assert started.id == written.child_id
    view: WorkflowRecord = await one(backend, ops.ReadWorkflow(run_id))
    assert view.steps[0].result == str(written.child_id)
    assert [(c.id, c.status) for c in view.children] == [(written.child_id, JobState.RUNNING)]
    await finish(backend, started, Outcome(started.id, started.lease, Succeeded(), "4"), T0 + 3)
    assert (await get(backend, run_id)).run_at == T0 + 3
    view = await one(backend, ops.ReadWorkflow(run_id))
    assert [(c.status, c.result) for c in view.children] == [(JobState.COMPLETED, "4")]


async def test_signals_are_kept_consumed_once_and_refused_after_the_end(
    backend: Backend,
) -> None:
    [run_id] = await enqueue(backend, run(run_at=T0 + 500))
    first = await one(backend, ops.SendSignal(run_id, "go", '{"n": 1}'), T0 + 1)
    await one(backend, ops.SendSignal(run_id, "go", '{"n": 2}'), T0 + 1)
    assert (await get(backend, run_id)).run_at == T0 + 1  # woken
    job = await claim_one(backend, T0 + 1)
    loaded = await load(backend, job, T0 + 1)
    assert [s.payload for s in loaded.signals] == ['{"n": 1}', '{"n": 2}']
    step = StepRecord(0, StepKind.SIGNAL, "go", StepStatus.COMPLETED, 1, '{"n": 1}')
    await record(backend, job, step, T0 + 1, consume_signal=first)
    assert [s.payload for s in (await load(backend, job, T0 + 1)).signals] == ['{"n": 2}']
    await finish(backend, job, Outcome(run_id, job.lease, Succeeded()), T0 + 2)
    with pytest.raises(InvalidStateError, match="finished"):
        await one(backend, ops.SendSignal(run_id, "go", "true"), T0 + 3)
    with pytest.raises(JobNotFoundError):
        await one(backend, ops.SendSignal(run_id + 100, "go", "true"), T0 + 3)


async def test_cancelling_a_waiting_run_hands_it_to_a_worker_and_cancels_children(
    backend: Backend,
) -> None:
    [run_id] = await enqueue(backend, run())
    parent = await claim_one(backend)
    pending = NewJob("b", "q", "{}", 10, T0 + 900, 3, parent_id=run_id)
    running = NewJob("b", "q", "{}", 10, T0, 3, parent_id=run_id)
    a = await record(backend, parent, StepRecord(0, StepKind.CHILD, "b", StepStatus.COMPLETED, 1),
                     child=pending)  # fmt: skip
    b = await record(backend, parent, StepRecord(1, StepKind.CHILD, "b", StepStatus.COMPLETED, 1),
                     child=running)  # fmt: skip
    await finish(backend, parent, Outcome(run_id, parent.lease, Suspended(1e15)), T0 + 1)
    child = await claim_one(backend, T0 + 1)
    assert child.id == b.child_id
    assert await one(backend, ops.Cancel(run_id), T0 + 2) is CancelResult.REQUESTED
    info = await get(backend, run_id)
    assert (info.status, info.run_at, info.cancel_requested) == (
        JobState.SCHEDULED, T0 + 2, True,
    )  # fmt: skip
    assert a.child_id is not None
    assert (await get(backend, a.child_id)).status is JobState.CANCELLED
    assert (await get(backend, child.id)).cancel_requested
    again = await claim_one(backend, T0 + 2)
    assert (await load(backend, again, T0 + 2)).cancel_requested
    marker = StepRecord(2, StepKind.COMPENSATING, "compensating", StepStatus.COMPLETED, 1, "{}")
    await record(backend, again, marker, T0 + 2, clear_cancel=True)
    assert not (await load(backend, again, T0 + 2)).cancel_requested


async def test_a_plain_child_cancelled_while_pending_wakes_its_parent(backend: Backend) -> None:
    [run_id] = await enqueue(backend, run())
    parent = await claim_one(backend)
    child = NewJob("b", "q", "{}", 10, T0 + 900, 3, parent_id=run_id)
    step = StepRecord(0, StepKind.CHILD, "b", StepStatus.COMPLETED, 1)
    written = await record(backend, parent, step, child=child)
    await finish(backend, parent, Outcome(run_id, parent.lease, Suspended(1e15)), T0 + 1)
    assert written.child_id is not None
    assert await one(backend, ops.Cancel(written.child_id), T0 + 5) is CancelResult.CANCELLED
    assert (await get(backend, run_id)).run_at == T0 + 5


async def test_compensated_is_terminal_and_frees_the_idempotency_key(backend: Backend) -> None:
    [run_id] = await enqueue(backend, run(key="k"))
    job = await claim_one(backend)
    outcome = Outcome(run_id, job.lease, Compensated(), error="undone")
    assert await finish(backend, job, outcome, T0 + 1)
    info = await get(backend, run_id)
    assert (info.status, info.finished_at, info.error) == (JobState.COMPENSATED, T0 + 1, "undone")
    [again] = await enqueue(backend, run(key="k"), now=T0 + 2)
    assert again != run_id
    assert await one(backend, ops.Cancel(run_id), T0 + 3) is CancelResult.FINISHED


async def test_a_lost_run_asked_to_cancel_is_rescued_to_be_undone(backend: Backend) -> None:
    [run_id] = await enqueue(backend, run())
    await claim_one(backend)
    assert await one(backend, ops.Cancel(run_id), T0 + 1) is CancelResult.REQUESTED
    assert [r.id for r in await one(backend, ops.Rescue(), T0 + 31)] == [run_id]
    info = await get(backend, run_id)
    assert (info.status, info.cancel_requested) == (JobState.RETRYING, True)
    assert await one(backend, ops.ReadWorkflow(run_id + 100)) is None


async def test_a_run_lost_on_its_last_attempt_gets_one_more_to_be_undone(
    backend: Backend,
) -> None:
    one_try = NewJob("a", "q", "{}", 10, T0, 1, workflow=True)
    plain = NewJob("b", "q", "{}", 10, T0, 1)
    run_id, job_id = await enqueue(backend, one_try, plain)
    await claim(backend, T0, limit=2)
    rescued = {r.id: r for r in await one(backend, ops.Rescue(), T0 + 31)}
    assert (rescued[run_id].status, rescued[job_id].status) == (JobState.RETRYING, JobState.DEAD)
    info = await get(backend, run_id)
    assert (info.status, info.run_at, info.finished_at) == (JobState.RETRYING, T0 + 31, None)
    again = await claim_one(backend, T0 + 31)
    assert (again.id, again.attempt, again.max_attempts) == (run_id, 2, 1)
    # Lost again on that extra attempt: dead, so a run that kills its worker cannot loop.
    [lost] = await one(backend, ops.Rescue(), T0 + 62)
    assert (lost.id, lost.status) == (run_id, JobState.DEAD)
    assert (await get(backend, run_id)).finished_at == T0 + 62


async def test_listing_runs_only_and_by_workflow_name_over_versions(backend: Backend) -> None:
    plain = NewJob("pay@v1", "q", "{}", 10, T0, 3)  # a plain job whose name looks like a run
    await enqueue(backend, run("pay@v1"), run("pay@v2"), run("payroll@v1"), plain, run("p@v1"))
    runs: list[JobInfo] = await one(backend, ops.ListJobs(runs_only=True))
    assert [j.name for j in runs] == ["p@v1", "payroll@v1", "pay@v2", "pay@v1"]
    pay: list[JobInfo] = await one(backend, ops.ListJobs(workflow="pay"))
    assert [j.name for j in pay] == ["pay@v2", "pay@v1"]
    limited = await one(backend, ops.ListJobs(workflow="pay", limit=1))
    assert [j.name for j in limited] == ["pay@v2"]
    assert await one(backend, ops.ListJobs(workflow="pa")) == []
    named: list[JobInfo] = await one(backend, ops.ListJobs(name="pay@v1"))
    assert len(named) == 2  # without the filter, plain jobs are listed too


async def test_a_signal_to_a_plain_job_is_refused_and_changes_nothing(backend: Backend) -> None:
    [job_id] = await enqueue(backend, NewJob("a", "q", "{}", 10, T0 + 3600, 3))
    with pytest.raises(InvalidArgumentError, match="not a workflow run"):
        await one(backend, ops.SendSignal(job_id, "go", "true"), T0 + 1)
    assert (await get(backend, job_id)).run_at == T0 + 3600
    record: WorkflowRecord = await one(backend, ops.ReadWorkflow(job_id))
    assert (record.workflow, record.signals) == (False, ())


async def test_an_undone_run_is_purged_with_its_record(backend: Backend) -> None:
    [run_id] = await enqueue(backend, run())
    job = await claim_one(backend)
    await record(backend, job, entry(0, "a"))
    await one(backend, ops.SendSignal(run_id, "left", "true"))
    await finish(backend, job, Outcome(run_id, job.lease, Compensated(), error="undone"), T0 + 1)
    purge = ops.Purge((JobState.COMPENSATED,), before=T0 + 10)
    assert await one(backend, purge, T0 + 20) == [run_id]
    assert await one(backend, ops.ReadWorkflow(run_id)) is None
    assert await one(backend, purge, T0 + 20) == []


async def test_a_deleted_run_takes_its_record_and_signals_along(backend: Backend) -> None:
    [run_id, other] = await enqueue(backend, run(), run())
    job = await claim_one(backend)
    await record(backend, job, entry(0, "a"))
    await one(backend, ops.SendSignal(run_id, "left", "true"))
    await one(backend, ops.SendSignal(other, "kept", "true"))
    with pytest.raises(InvalidStateError, match="cancel it first"):
        await one(backend, ops.Delete(run_id))
    await finish(backend, job, Outcome(run_id, job.lease, Compensated(), error="undone"), T0 + 1)
    assert await one(backend, ops.Delete(run_id), T0 + 2) is JobState.COMPENSATED
    assert await one(backend, ops.ReadWorkflow(run_id)) is None
    assert await one(backend, ops.LatestSteps((run_id,))) == {}
    kept: WorkflowRecord = await one(backend, ops.ReadWorkflow(other))
    assert [s.name for s in kept.signals] == ["kept"]


async def test_latest_steps_gives_each_runs_newest_entry(backend: Backend) -> None:
    a, b, c = await enqueue(backend, run(), run(), run())
    first = await claim_one(backend)
    second = await claim_one(backend)
    await record(backend, first, entry(0, "x"))
    await record(backend, first, entry(1, "y", StepStatus.FAILED))
    await record(backend, second, entry(0, "z"))
    latest = await one(backend, ops.LatestSteps((a, b, c, c + 100)))
    assert latest == {a: entry(1, "y", StepStatus.FAILED), b: entry(0, "z")}
    assert await one(backend, ops.LatestSteps(())) == {}


async def test_runs_are_paged_by_id_and_named_by_version(backend: Backend) -> None:
    ids = await enqueue(backend, *(run(f"w@v{1 + i % 2}") for i in range(5)))
    await enqueue(backend, NewJob("w@v1", "q", "{}", 10, T0, 3))  # a plain job, not listed
    page = await one(backend, ops.ListJobs(runs_only=True, limit=2, before=ids[-1]))
    assert [j.id for j in page] == ids[::-1][1:3]
    v1 = await one(backend, ops.ListJobs(runs_only=True, name="w@v1"))
    assert [j.id for j in v1] == ids[::2][::-1]


async def test_recorded_steps_and_signals_are_pushed_as_changes(backend: Backend) -> None:
    [run_id] = await enqueue(backend, run())
    job = await claim_one(backend)
    async with backend.changes() as changes:
        assert (await record(backend, job, entry(0, "a"))).applied
        await changed_ids(changes, run_id)
        await one(backend, ops.SendSignal(run_id, "go", "true"), T0 + 1)
        await changed_ids(changes, run_id)


async def test_a_run_past_its_own_retention_goes_with_its_record_and_signals(
    backend: Backend,
) -> None:
    """A workflow run's ``retain`` (``registry.workflow(retain=...)``) is a job's: the
    sweeper's ``PurgeExpired`` takes the run, its record and the signals it never took."""
    kept = json.dumps({"completed": 30.0, "cancelled": None, "dead": None, "compensated": None})
    run_id, other = await enqueue(backend, attrs.evolve(run(), retain=kept), run())
    job = await claim_one(backend)
    await record(backend, job, entry(0, "a"))
    await one(backend, ops.SendSignal(run_id, "left", "true"))
    await one(backend, ops.SendSignal(other, "kept", "true"))
    await finish(backend, job, Outcome(run_id, job.lease, Succeeded(), result='"done"'), T0 + 1)
    assert (await get(backend, run_id)).retain == json.loads(kept)
    assert await one(backend, ops.PurgeExpired(T0 + 30), T0 + 30) == []
    before: WorkflowRecord = await one(backend, ops.ReadWorkflow(run_id))
    assert ([s.name for s in before.steps], [s.name for s in before.signals]) == (["a"], ["left"])
    assert await one(backend, ops.PurgeExpired(T0 + 32), T0 + 32) == [run_id]
    assert await one(backend, ops.ReadWorkflow(run_id)) is None
    assert await one(backend, ops.LatestSteps((run_id,))) == {}
    left: WorkflowRecord = await one(backend, ops.ReadWorkflow(other))
    assert [s.name for s in left.signals] == ["kept"]


@pytest.mark.parametrize("beside", [False, True], ids=["alone", "with-a-signal"])
async def test_many_runs_record_writes_and_loads_in_one_batch_are_each_fenced(
    backend: Backend, beside: bool
) -> None:
    """Runs step in lockstep, so one batch carries many runs' record writes and loads
    (PostgreSQL: one statement for the writes, one for the loads, committed alone or, beside
    an op that needs a transaction, in it). Each is fenced by its own run's lease, a step
    shown running and ended in the same batch ends recorded, and every run written is
    pushed as a change."""
    await enqueue(backend, *(run() for _ in range(6)))
    a, b, c, d, e, f = (await claim(backend, limit=6)).jobs
    assert (await record(backend, d, entry(0, "kept"))).applied
    running = entry(0, "c", StepStatus.RUNNING)
    batch: list[ops.Op] = [
        ops.RecordStep(a.id, a.lease, entry(0, "a")),
        ops.RecordStep(b.id, b.lease + 1, entry(0, "b")),
        ops.RecordStep(c.id, c.lease, running),
        ops.LoadWorkflow(d.id, d.lease),
        ops.RecordStep(c.id, c.lease, entry(0, "c")),
        ops.LoadWorkflow(e.id, e.lease + 1),
    ]
    if beside:
        batch.append(ops.SendSignal(f.id, "go", "true"))
    async with backend.changes() as changes:
        results = await backend.execute(batch, T0)
        seen: set[int] = set()
        with trio.fail_after(10):
            while not seen >= {a.id, c.id}:
                notice = await changes.receive()
                if notice is None:  # SQLite: which jobs is not said
                    break
                seen |= notice
    writes = [r for r in results[:3] + results[4:5] if isinstance(r, StepWrite)]
    assert [w.applied for w in writes] == [True, False, True, True]
    loaded = results[3]
    assert isinstance(loaded, WorkflowRecord)
    assert (loaded.run_id, [s.name for s in loaded.steps]) == (d.id, ["kept"])
    assert results[5] is None
    for job, names in ((a, ["a"]), (b, []), (c, ["c"])):
        view: WorkflowRecord = await one(backend, ops.ReadWorkflow(job.id))
        assert [(s.name, s.status) for s in view.steps] == [
            (n, StepStatus.COMPLETED) for n in names
        ]
    signals = (await one(backend, ops.ReadWorkflow(f.id))).signals
    assert [s.name for s in signals] == (["go"] if beside else [])
