"""The storage contract: what every backend does, with explicit times (no clock, no sleep)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trioforge import ConcurrencyLimit, InvalidStateError, JobNotFoundError, JobState
from trioforge._core.flow import JobLimits
from trioforge._core.states import Cancelled, Discarded, Failed, Released, Succeeded
from trioforge.storage import (
    Backend,
    CancelResult,
    Changed,
    ClaimedJob,
    ClaimResult,
    Enqueued,
    JobInfo,
    NewJob,
    Outcome,
    RenewResult,
    RescuedJob,
    ops,
)

T0 = 1_000.0


def job(
    name: str = "a",
    *,
    queue: str = "q",
    payload: str = "{}",
    priority: int = 10,
    run_at: float = T0,
    max_attempts: int = 3,
    key: str | None = None,
) -> NewJob:
    return NewJob(name, queue, payload, priority, run_at, max_attempts, key)


async def one(backend: Backend, op: ops.Op, now: float = T0) -> Any:
    [result] = await backend.execute([op], now)
    if isinstance(result, Exception):
        raise result
    return result


async def enqueue(backend: Backend, *jobs: NewJob, now: float = T0) -> list[int]:
    enqueued: list[Enqueued] = await one(backend, ops.Enqueue(jobs), now)
    return [e.id for e in enqueued]


async def claim(
    backend: Backend,
    now: float = T0,
    *,
    limit: int = 10,
    queue: str = "q",
    names: frozenset[str] = frozenset({"a", "b"}),
    owner: str = "w1",
    lease: float = 30.0,
) -> ClaimResult:
    result: ClaimResult = await one(
        backend, ops.Claim(queue, names, limit, owner, now + lease), now
    )
    return result


async def get(backend: Backend, job_id: int) -> JobInfo:
    info: JobInfo | None = await one(backend, ops.Get(job_id))
    assert info is not None
    return info


async def finish(backend: Backend, claimed: ClaimedJob, outcome: Outcome, now: float) -> bool:
    [applied] = await one(backend, ops.Finish((outcome,)), now)
    assert isinstance(applied, bool)
    return applied


async def test_enqueue_and_get_round_trip(backend: Backend) -> None:
    [job_id] = await enqueue(backend, job(payload='{"user": "ada", "n": [1, 2]}', priority=20))
    info = await get(backend, job_id)
    assert (info.name, info.queue, info.status, info.priority) == ("a", "q", JobState.AVAILABLE, 20)
    assert info.payload == {"user": "ada", "n": [1, 2]}
    assert (info.attempt, info.max_attempts, info.run_at, info.created_at) == (0, 3, T0, T0)
    assert (info.started_at, info.finished_at, info.result, info.error) == (None, None, None, None)
    assert await one(backend, ops.Get(job_id + 100)) is None


async def test_future_jobs_are_scheduled_and_never_claimed_early(backend: Backend) -> None:
    [later] = await enqueue(backend, job(run_at=T0 + 60))
    assert (await get(backend, later)).status is JobState.SCHEDULED
    early = await claim(backend, T0 + 59.999)
    assert early.jobs == ()
    assert early.next_run_at == T0 + 60
    [claimed] = (await claim(backend, T0 + 60)).jobs
    assert claimed.id == later


async def test_claim_order_is_priority_then_run_at_then_enqueue_order(backend: Backend) -> None:
    ids = await enqueue(
        backend,
        job(priority=10, run_at=T0 - 5),  # 0
        job(priority=20, run_at=T0 - 1),  # 1
        job(priority=20, run_at=T0 - 1),  # 2
        job(priority=20, run_at=T0 - 3),  # 3
        job(priority=0, run_at=T0 - 9),  # 4
        job(priority=10, run_at=T0 - 5),  # 5
    )
    first = await claim(backend, limit=4)
    assert [j.id for j in first.jobs] == [ids[3], ids[1], ids[2], ids[0]]
    rest = await claim(backend, limit=4)
    assert [j.id for j in rest.jobs] == [ids[5], ids[4]]
    assert rest.next_run_at is None


async def test_claims_respect_queue_names_and_limit(backend: Backend) -> None:
    a, b, c, other_q = await enqueue(backend, job("a"), job("b"), job("c"), job("a", queue="other"))
    only_a = await claim(backend, names=frozenset({"a"}))
    assert [j.id for j in only_a.jobs] == [a]
    assert [j.id for j in (await claim(backend, limit=5)).jobs] == [b]  # never "c"
    assert (await claim(backend, names=frozenset({"c"}), limit=0)).jobs == ()
    assert [j.id for j in (await claim(backend, queue="other")).jobs] == [other_q]
    assert (await get(backend, c)).status is JobState.AVAILABLE


async def test_claim_issues_a_lease_and_counts_the_attempt(backend: Backend) -> None:
    [job_id] = await enqueue(backend, job(payload='"p"'))
    [claimed] = (await claim(backend, T0 + 1, owner="w9")).jobs
    assert (claimed.attempt, claimed.lease, claimed.payload, claimed.max_attempts) == (
        1,
        1,
        '"p"',
        3,
    )
    info = await get(backend, job_id)
    assert (info.status, info.attempt, info.started_at) == (JobState.RUNNING, 1, T0 + 1)


async def test_success_stores_the_result(backend: Backend) -> None:
    [job_id] = await enqueue(backend, job())
    [c] = (await claim(backend)).jobs
    assert await finish(backend, c, Outcome(c.id, c.lease, Succeeded(), result='{"ok": 1}'), T0 + 2)
    info = await get(backend, job_id)
    assert (info.status, info.result, info.finished_at) == (JobState.COMPLETED, {"ok": 1}, T0 + 2)
    assert not await finish(backend, c, Outcome(c.id, c.lease, Succeeded()), T0 + 3)  # once only


async def test_failure_with_retry_waits_for_its_backoff(backend: Backend) -> None:
    [job_id] = await enqueue(backend, job())
    [c] = (await claim(backend)).jobs
    assert await finish(backend, c, Outcome(c.id, c.lease, Failed(T0 + 8), error="boom"), T0 + 1)
    info = await get(backend, job_id)
    assert (info.status, info.run_at, info.error, info.attempt) == (
        JobState.RETRYING, T0 + 8, "boom", 1,
    )  # fmt: skip
    assert (await claim(backend, T0 + 7)).jobs == ()
    [again] = (await claim(backend, T0 + 8)).jobs
    assert (again.attempt, again.lease) == (2, 2)
    assert (await get(backend, job_id)).error is None  # cleared by the new attempt


async def test_failure_without_retry_and_discard_are_dead(backend: Backend) -> None:
    failed, discarded = await enqueue(backend, job(), job())
    c1, c2 = (await claim(backend)).jobs
    assert await finish(backend, c1, Outcome(c1.id, c1.lease, Failed(None), error="e"), T0)
    assert await finish(backend, c2, Outcome(c2.id, c2.lease, Discarded(), error="bad"), T0)
    assert (await get(backend, failed)).status is JobState.DEAD
    info = await get(backend, discarded)
    assert (info.status, info.error, info.finished_at) == (JobState.DEAD, "bad", T0)


async def test_release_hands_the_job_back_without_counting_the_attempt(backend: Backend) -> None:
    [job_id] = await enqueue(backend, job())
    [c] = (await claim(backend)).jobs
    assert await finish(backend, c, Outcome(c.id, c.lease, Released()), T0 + 1)
    info = await get(backend, job_id)
    assert (info.status, info.attempt, info.finished_at) == (JobState.AVAILABLE, 0, None)
    [again] = (await claim(backend, T0 + 1)).jobs
    assert (again.attempt, again.lease) == (1, 2)


async def test_orphaned_claims_of_an_owner_are_handed_back(backend: Backend) -> None:
    # w1 claimed three jobs of "q" but holds only one (the reply of the other claim was
    # lost); w2's job and w1's job on another queue are not orphans of "q".
    ids = await enqueue(backend, job(), job(), job(), job(), job(queue="r"))
    [held] = (await claim(backend, limit=1)).jobs
    lost = (await claim(backend, limit=2)).jobs
    [other] = (await claim(backend, limit=1, owner="w2")).jobs
    [elsewhere] = (await claim(backend, queue="r")).jobs
    op = ops.ReleaseOrphans("q", "w1", ((held.id, held.lease), (elsewhere.id, 99)))
    assert await one(backend, op, T0 + 1) == sorted(j.id for j in lost)
    states = {i: ((info := await get(backend, i)).status, info.attempt) for i in ids}
    assert states == {
        held.id: (JobState.RUNNING, 1),
        **{j.id: (JobState.AVAILABLE, 0) for j in lost},
        other.id: (JobState.RUNNING, 1),
        elsewhere.id: (JobState.RUNNING, 1),
    }
    assert await one(backend, op, T0 + 2) == []  # nothing left to hand back


async def test_cancel_pending_running_finished_and_unknown(backend: Backend) -> None:
    pending, running = await enqueue(backend, job(run_at=T0 + 100), job())
    assert await one(backend, ops.Cancel(pending)) is CancelResult.CANCELLED
    assert (await get(backend, pending)).status is JobState.CANCELLED
    [c] = (await claim(backend)).jobs
    assert await one(backend, ops.Cancel(running)) is CancelResult.REQUESTED
    assert (await get(backend, running)).cancel_requested
    assert await finish(backend, c, Outcome(c.id, c.lease, Cancelled()), T0 + 1)
    assert (await get(backend, running)).status is JobState.CANCELLED
    assert await one(backend, ops.Cancel(running)) is CancelResult.FINISHED
    [result] = await backend.execute([ops.Cancel(987_654)], T0)
    assert isinstance(result, JobNotFoundError)


async def test_renew_extends_leases_and_reports_cancels_and_losses(backend: Backend) -> None:
    a, b = await enqueue(backend, job(), job())
    ca, cb = (await claim(backend, owner="w1", lease=10)).jobs
    await one(backend, ops.Cancel(b))
    renewal: RenewResult = await one(
        backend, ops.Renew("w1", ((a, ca.lease), (b, cb.lease)), T0 + 40), T0 + 5
    )
    assert renewal == RenewResult(cancel_requested=frozenset({b}), lost=frozenset())
    wrong: RenewResult = await one(backend, ops.Renew("w1", ((a, ca.lease + 5),), T0 + 40))
    assert wrong.lost == frozenset({(a, ca.lease + 5)})  # a lease number never held
    assert await one(backend, ops.Rescue(), T0 + 30) == []  # renewed past T0 + 30
    other: RenewResult = await one(backend, ops.Renew("w2", ((a, ca.lease),), T0 + 99), T0 + 6)
    assert other.lost == frozenset({(a, ca.lease)})  # another owner holds nothing


async def test_expired_leases_are_rescued_as_new_attempts(backend: Backend) -> None:
    retried, exhausted, cancelled, healthy = await enqueue(
        backend, job(), job(max_attempts=1), job(), job()
    )
    claimed = {c.id: c for c in (await claim(backend, owner="ghost", lease=10)).jobs}
    await one(backend, ops.Cancel(cancelled))
    await one(backend, ops.Renew("ghost", ((healthy, claimed[healthy].lease),), T0 + 50), T0)
    assert await one(backend, ops.Rescue(), T0 + 9.999) == []
    rescued = await one(backend, ops.Rescue(), T0 + 10)
    assert rescued == sorted(
        [
            RescuedJob(retried, "a", "q", 1, 3, JobState.RETRYING),
            RescuedJob(exhausted, "a", "q", 1, 1, JobState.DEAD),
            RescuedJob(cancelled, "a", "q", 1, 3, JobState.CANCELLED),
        ],
        key=lambda r: r.id,
    )
    info = await get(backend, retried)
    assert (info.status, info.run_at, info.attempt) == (JobState.RETRYING, T0 + 10, 1)
    assert "stopped heartbeating" in (info.error or "")
    assert (await get(backend, exhausted)).status is JobState.DEAD
    assert (await get(backend, cancelled)).status is JobState.CANCELLED
    assert (await get(backend, healthy)).status is JobState.RUNNING


async def test_writes_fenced_by_an_old_lease_change_nothing(backend: Backend) -> None:
    [job_id] = await enqueue(backend, job())
    [old] = (await claim(backend, owner="w1", lease=10)).jobs
    await one(backend, ops.Rescue(), T0 + 10)
    [new] = (await claim(backend, T0 + 10, owner="w2")).jobs
    assert new.lease == old.lease + 1
    assert not await one(backend, ops.Progress(job_id, old.lease, 50.0, "stale"), T0 + 11)
    assert not await finish(backend, old, Outcome(job_id, old.lease, Succeeded(), '"old"'), T0 + 11)
    stale: RenewResult = await one(backend, ops.Renew("w1", ((job_id, old.lease),), T0 + 99))
    assert stale.lost == frozenset({(job_id, old.lease)})
    # One owner may run both attempts after a stall: only the stale one is lost.
    both = ops.Renew("w2", ((job_id, old.lease), (job_id, new.lease)), T0 + 99)
    assert (await one(backend, both)).lost == frozenset({(job_id, old.lease)})
    assert await one(backend, ops.Progress(job_id, new.lease, 75.0, "fresh"), T0 + 12)
    info = await get(backend, job_id)
    assert (info.status, info.progress, info.progress_message) == (JobState.RUNNING, 75.0, "fresh")
    assert await finish(backend, new, Outcome(job_id, new.lease, Succeeded(), '"new"'), T0 + 13)
    assert (await get(backend, job_id)).result == "new"


async def test_operator_retry_and_discard(backend: Backend) -> None:
    dead, pending, running = await enqueue(backend, job(), job(run_at=T0 + 50), job())
    c_dead, _ = (await claim(backend, limit=2)).jobs
    await finish(backend, c_dead, Outcome(dead, c_dead.lease, Failed(None), error="x"), T0)
    assert await one(backend, ops.RetryJob(dead), T0 + 5)
    info = await get(backend, dead)
    assert (info.status, info.attempt, info.run_at, info.error) == (
        JobState.AVAILABLE, 0, T0 + 5, None,
    )  # fmt: skip
    assert not await one(backend, ops.RetryJob(running))
    assert await one(backend, ops.Discard(pending, "nope"), T0 + 6)
    info = await get(backend, pending)
    assert (info.status, info.error) == (JobState.DEAD, "nope")
    assert not await one(backend, ops.Discard(running, "x"))
    assert not await one(backend, ops.Discard(pending, "again"))
    for op in (ops.RetryJob(555_555), ops.Discard(555_555, "x")):
        [result] = await backend.execute([op], T0)
        assert isinstance(result, JobNotFoundError)


async def test_idempotency_keys_hold_while_a_job_is_unfinished(backend: Backend) -> None:
    first: list[Enqueued] = await one(backend, ops.Enqueue((job(key="k"), job(key="k"))))
    assert first[0].created
    assert first[1] == Enqueued(first[0].id, created=False)  # duplicate within one batch
    again: list[Enqueued] = await one(backend, ops.Enqueue((job(key="k"),)))
    assert again == [Enqueued(first[0].id, created=False)]
    [c] = (await claim(backend)).jobs
    await finish(backend, c, Outcome(c.id, c.lease, Failed(None), error="x"), T0)  # dead
    [fresh] = await one(backend, ops.Enqueue((job(key="k"),)))
    assert fresh.created
    assert fresh.id != first[0].id
    # the dead job cannot be retried while the new one holds the key
    [refused] = await backend.execute([ops.RetryJob(first[0].id)], T0)
    assert isinstance(refused, InvalidStateError)


async def test_one_bad_operation_does_not_fail_its_batch(backend: Backend) -> None:
    results = await backend.execute(
        [
            ops.Enqueue((job(),)),
            ops.Cancel(424_242),
            ops.Enqueue((job(payload="not json"),)),
            ops.Enqueue((job("b"),)),
        ],
        T0,
    )
    assert isinstance(results[0], list)
    assert isinstance(results[1], JobNotFoundError)
    assert isinstance(results[2], ValueError)
    assert isinstance(results[3], list)
    listed: list[JobInfo] = await one(backend, ops.ListJobs())
    assert [j.name for j in listed] == ["b", "a"]


async def test_an_enqueue_with_one_bad_job_stores_none_of_its_jobs(backend: Backend) -> None:
    [result] = await backend.execute(
        [ops.Enqueue((job("a"), job("b", payload="not json"), job("c")))], T0
    )
    assert isinstance(result, ValueError)
    assert await one(backend, ops.ListJobs()) == []
    assert await one(backend, ops.Stats()) == {}


async def test_list_filters_and_stats(backend: Backend) -> None:
    await enqueue(backend, job("a"), job("b"), job("a", queue="other"), job("b", run_at=T0 + 9))
    listed: list[JobInfo] = await one(backend, ops.ListJobs(name="a"))
    assert [(j.name, j.queue) for j in listed] == [("a", "other"), ("a", "q")]
    scheduled: list[JobInfo] = await one(backend, ops.ListJobs(status=JobState.SCHEDULED))
    assert [j.run_at for j in scheduled] == [T0 + 9]
    assert len(await one(backend, ops.ListJobs(queue="q", limit=2))) == 2
    stats = await one(backend, ops.Stats())
    assert stats == {
        "q": {JobState.AVAILABLE: 2, JobState.SCHEDULED: 1},
        "other": {JobState.AVAILABLE: 1},
    }


@pytest.mark.parametrize("count", [1, 250])
async def test_enqueue_many_returns_ids_in_order(backend: Backend, count: int) -> None:
    ids = await enqueue(backend, *(job(payload=str(i)) for i in range(count)))
    assert len(set(ids)) == count
    assert ids == sorted(ids)
    infos = [await get(backend, i) for i in (ids[0], ids[-1])]
    assert [i.payload for i in infos] == [0, count - 1]


async def test_only_one_owner_holds_a_lease_until_it_expires(backend: Backend) -> None:
    assert await one(backend, ops.Lead("maintenance", "a", T0 + 10), T0)
    assert not await one(backend, ops.Lead("maintenance", "b", T0 + 10), T0 + 5)
    assert await one(backend, ops.Lead("maintenance", "a", T0 + 20), T0 + 9)  # renewed
    assert not await one(backend, ops.Lead("maintenance", "b", T0 + 30), T0 + 19.9)
    assert await one(backend, ops.Lead("other", "b", T0 + 30), T0 + 19.9)  # leases are named
    assert await one(backend, ops.Lead("maintenance", "b", T0 + 40), T0 + 20)  # expired: taken
    assert not await one(backend, ops.Lead("maintenance", "a", T0 + 40), T0 + 21)
    await one(backend, ops.Leave("b"), T0 + 22)  # leaving gives it up at once
    assert await one(backend, ops.Lead("maintenance", "a", T0 + 50), T0 + 22)


async def test_process_registry_beats_leaves_and_forgets_the_silent(backend: Backend) -> None:
    await one(backend, ops.Beat("p1", ("default", "mail")), T0)
    await one(backend, ops.Beat("p2", ("default",)), T0 + 1)
    await one(backend, ops.Beat("p1", ("default",)), T0 + 5)
    processes = await one(backend, ops.Processes(), T0 + 6)
    assert [(p.owner, p.queues, p.started_at, p.heartbeat_at) for p in processes] == [
        ("p1", ("default",), T0, T0 + 5),
        ("p2", ("default",), T0 + 1, T0 + 1),
    ]
    await one(backend, ops.Rescue(stale_before=T0 + 2), T0 + 6)  # p2 fell silent
    assert [p.owner for p in await one(backend, ops.Processes(), T0 + 6)] == ["p1"]
    await one(backend, ops.Leave("p1"), T0 + 7)
    assert await one(backend, ops.Processes(), T0 + 7) == []


async def test_cron_state_advances_once_however_many_schedulers_race(backend: Backend) -> None:
    tick = job("cron:x", queue="q", payload='{"scheduled_at": 1060.0}')
    first = await one(backend, ops.FireCron("x", None, T0, ()))
    assert first.job_ids == ()
    fired = await one(backend, ops.FireCron("x", T0, T0 + 60, (tick,)), T0 + 60)
    late = await one(backend, ops.FireCron("x", T0, T0 + 60, (tick,)), T0 + 60)
    assert len(fired.job_ids) == 1
    assert late.conflict
    assert late.job_ids == ()
    states = await one(backend, ops.CronStates())
    assert (states["x"].last_tick, states["x"].last_job_id) == (T0 + 60, fired.job_ids[0])
    listed: list[JobInfo] = await one(backend, ops.ListJobs(name="cron:x"))
    assert len(listed) == 1  # the tick was enqueued exactly once


async def test_cron_overlap_skip_counts_ticks_while_the_last_run_is_unfinished(
    backend: Backend,
) -> None:
    tick = job("a", payload='{"scheduled_at": 0}')
    await one(backend, ops.FireCron("s", None, T0, ()))
    [first] = (await one(backend, ops.FireCron("s", T0, T0 + 1, (tick,), True))).job_ids
    skipped = await one(backend, ops.FireCron("s", T0 + 1, T0 + 2, (tick, tick), True))
    assert (skipped.job_ids, skipped.skipped) == ((), 2)
    [c] = (await claim(backend, T0 + 2)).jobs
    await finish(backend, c, Outcome(first, c.lease, Succeeded()), T0 + 3)
    after = await one(backend, ops.FireCron("s", T0 + 2, T0 + 4, (tick,), True), T0 + 4)
    assert len(after.job_ids) == 1  # the previous run finished: fires again
    state = (await one(backend, ops.CronStates()))["s"]
    assert (state.last_tick, state.skipped) == (T0 + 4, 2)


async def test_a_paused_queue_is_not_claimed_until_resumed(backend: Backend) -> None:
    first, later = await enqueue(backend, job(), job(run_at=T0 + 50))
    [other] = await enqueue(backend, job(queue="other"))
    [running] = (await claim(backend, limit=1)).jobs  # a job already running goes on
    assert running.id == first
    assert await one(backend, ops.PauseQueue("q", paused=True))
    assert not await one(backend, ops.PauseQueue("q", paused=True))  # already paused
    assert await one(backend, ops.PausedQueues()) == frozenset({"q"})
    assert await claim(backend, T0 + 60) == ClaimResult((), None)  # nothing, not even next
    assert [j.id for j in (await claim(backend, queue="other")).jobs] == [other]
    assert await finish(backend, running, Outcome(first, running.lease, Succeeded()), T0 + 1)
    assert await one(backend, ops.PauseQueue("q", paused=False))
    assert not await one(backend, ops.PauseQueue("q", paused=False))  # not paused
    assert await one(backend, ops.PausedQueues()) == frozenset()
    assert [j.id for j in (await claim(backend, T0 + 60)).jobs] == [later]


async def test_a_queue_may_be_paused_before_it_has_jobs(backend: Backend) -> None:
    assert await one(backend, ops.PauseQueue("later", paused=True))
    [job_id] = await enqueue(backend, job(queue="later"))
    assert (await claim(backend, queue="later")).jobs == ()
    assert await one(backend, ops.PauseQueue("later", paused=False))
    assert [j.id for j in (await claim(backend, queue="later")).jobs] == [job_id]


async def test_get_many_returns_the_jobs_that_exist(backend: Backend) -> None:
    a, b = await enqueue(backend, job(payload='"x"'), job("b"))
    found = await one(backend, ops.GetMany((b, a, a + b + 100)))
    assert sorted(found) == [a, b]
    assert (found[a].payload, found[b].name) == ("x", "b")
    assert found[a] == await get(backend, a)
    assert await one(backend, ops.GetMany(())) == {}


async def changed_ids(changes: trio.MemoryReceiveChannel[Changed], *job_ids: int) -> None:
    """Wait until change notices have named each of ``job_ids`` (None names every job:
    SQLite's feed does not say which)."""
    left = set(job_ids)
    with trio.fail_after(10):
        async for ids in changes:
            left -= left if ids is None else ids
            if not left:
                return
    raise AssertionError("the change stream ended")


async def test_outcomes_progress_and_operator_actions_are_pushed_as_changes(
    backend: Backend,
) -> None:
    [a, b, c] = await enqueue(backend, job(), job(), job(run_at=T0 + 60))
    async with backend.changes() as changes:
        [ca, cb] = (await claim(backend, limit=2)).jobs
        assert await one(backend, ops.Progress(ca.id, ca.lease, 50.0, "half"))
        await changed_ids(changes, a)
        assert await finish(backend, cb, Outcome(cb.id, cb.lease, Succeeded()), T0 + 1)
        await changed_ids(changes, b)
        assert await one(backend, ops.Cancel(c)) is CancelResult.CANCELLED
        await changed_ids(changes, c)
        assert await one(backend, ops.RetryJob(c))
        await changed_ids(changes, c)


# Not SQLite: its change feed reports every commit of the file, without job ids.
@pytest.mark.parametrize("backend", ["memory", "postgres"], indirect=True)
async def test_writes_that_change_nothing_send_no_notice(backend: Backend) -> None:
    [a, b] = await enqueue(backend, job(), job())
    [claimed] = (await claim(backend, limit=1)).jobs
    [other] = (await claim(backend, limit=1)).jobs
    async with backend.changes() as changes:
        # Fenced out (a stale lease), a read and an empty claim: nothing changed.
        assert not await one(backend, ops.Progress(claimed.id, claimed.lease + 1, 1.0, None))
        assert await one(backend, ops.GetMany((a,)))
        assert (await claim(backend, limit=1)).jobs == ()
        assert await finish(backend, other, Outcome(other.id, other.lease, Succeeded()), T0)
        with trio.fail_after(10):
            first = await changes.receive()
    assert first == frozenset({b})


async def test_list_pages_by_id_with_any_filters(backend: Backend) -> None:
    ids = await enqueue(backend, *(job("a" if i % 3 else "b", queue=f"q{i % 2}") for i in range(9)))
    first = await one(backend, ops.ListJobs(limit=4))
    assert [j.id for j in first] == ids[::-1][:4]
    second = await one(backend, ops.ListJobs(limit=4, before=first[-1].id))
    assert [j.id for j in second] == ids[::-1][4:8]
    named = await one(backend, ops.ListJobs(name="b", queue="q0", before=ids[-1]))
    assert [j.id for j in named] == [i for n, i in enumerate(ids) if n % 6 == 0][::-1]
    [claimed] = (await claim(backend, limit=1, queue="q1")).jobs
    running = await one(backend, ops.ListJobs(status=JobState.RUNNING, before=claimed.id + 1))
    assert [j.id for j in running] == [claimed.id]
    assert await one(backend, ops.ListJobs(status=JobState.RUNNING, before=claimed.id)) == []


async def test_throughput_counts_jobs_finished_since(backend: Backend) -> None:
    await enqueue(backend, job(), job(), job(), job(queue="other"))
    done = (await claim(backend, limit=3)).jobs
    assert await finish(backend, done[0], Outcome(done[0].id, done[0].lease, Succeeded()), T0)
    assert await finish(backend, done[1], Outcome(done[1].id, done[1].lease, Succeeded()), T0 + 10)
    fail = Failed(retry_at=None)
    assert await finish(backend, done[2], Outcome(done[2].id, done[2].lease, fail), T0 + 20)
    assert await one(backend, ops.Throughput(T0 + 5)) == {
        "q": {JobState.COMPLETED: 1, JobState.DEAD: 1}
    }
    assert await one(backend, ops.Throughput(T0 + 30)) == {}


@pytest.mark.parametrize(
    "limits", [{}, {"a": JobLimits(None, ConcurrencyLimit("c", 1000))}], ids=["plain", "flow"]
)
async def test_a_claim_notifies_every_job_it_claims(backend: Backend, limits: Any) -> None:
    """So a job that reports nothing shows running elsewhere from its start (PostgreSQL:
    from the claim's own statement, plain or flow-controlled, in payloads under NOTIFY's
    limit; SQLite: "something changed")."""
    ids = await enqueue(backend, *(job() for _ in range(700)))
    async with backend.changes() as changes:
        op = ops.Claim("q", frozenset({"a"}), 700, "w1", T0 + 30, limits=limits)
        assert len((await one(backend, op)).jobs) == 700
        await changed_ids(changes, *ids)


async def test_bulk_retries_and_discards_are_pushed_as_changes(backend: Backend) -> None:
    """A bulk discard or retry (the dashboard's, the CLI's) shows in every process's live
    feed, as the one-job operations do."""
    [a, b] = await enqueue(backend, job(), job())
    [claimed] = (await claim(backend, limit=1)).jobs
    assert await finish(backend, claimed, Outcome(a, claimed.lease, Failed(retry_at=None)), T0)
    async with backend.changes() as changes:
        discarded = await one(backend, ops.DiscardMany(None, ops.JobFilter(queue="q"), "bulk"))
        assert discarded.ids == (b,)
        await changed_ids(changes, b)
        retried = await one(backend, ops.RetryMany(JobState.DEAD, ops.JobFilter(queue="q")))
        assert set(retried.ids) == {a, b}
        await changed_ids(changes, a, b)


async def test_a_large_outcome_batch_notifies_every_job(backend: Backend) -> None:
    ids = await enqueue(backend, *(job() for _ in range(700)))
    claimed = (await claim(backend, limit=700)).jobs
    async with backend.changes() as changes:
        outcomes = tuple(Outcome(j.id, j.lease, Succeeded()) for j in claimed)
        assert all(await one(backend, ops.Finish(outcomes), T0))
        await changed_ids(changes, *ids)
