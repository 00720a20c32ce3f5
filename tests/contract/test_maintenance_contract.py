"""The storage contract for retention and bulk operations, on every backend."""

from __future__ import annotations

import json

import attrs
import pytest

from tests.contract.test_contract import T0, claim, enqueue, finish, get, job, one
from trioforge import InvalidStateError, JobInfo, JobNotFoundError, JobState
from trioforge._core.states import Discarded, Failed, Succeeded
from trioforge.storage import (
    Backend,
    CancelResult,
    Enqueued,
    NewJob,
    Outcome,
    ProcessDetails,
    ops,
)
from trioforge.storage._records import OutcomeEvent


async def finished(backend: Backend, *specs: tuple[str, str, float]) -> list[int]:
    """Jobs of (queue, outcome, finished at), run to that end."""
    ids = []
    for queue, kind, at in specs:
        [job_id] = await enqueue(backend, job(queue=queue, max_attempts=1), now=at)
        [claimed] = (await claim(backend, at, queue=queue)).jobs
        events: dict[str, OutcomeEvent] = {
            "ok": Succeeded(), "fail": Failed(None), "discard": Discarded()
        }  # fmt: skip
        event = events[kind]
        assert await finish(backend, claimed, Outcome(job_id, claimed.lease, event), at)
        ids.append(job_id)
    return ids


async def test_purge_deletes_old_finished_jobs_oldest_first_in_batches(backend: Backend) -> None:
    old_ok, old_dead, new_ok, other_q = await finished(
        backend, ("q", "ok", T0), ("q", "fail", T0 + 1), ("q", "ok", T0 + 50), ("r", "ok", T0)
    )
    [pending] = await enqueue(backend, job(run_at=T0 - 100), now=T0 - 100)
    completed = (JobState.COMPLETED,)
    assert await one(backend, ops.Purge(completed, T0 + 10, queue="q"), T0 + 60) == [old_ok]
    assert await one(backend, ops.Purge(completed, T0 + 10, queue="q")) == []
    both = (JobState.COMPLETED, JobState.DEAD)
    assert await one(backend, ops.Purge(both, T0 + 60, limit=1, exclude=("r",))) == [old_dead]
    assert await one(backend, ops.Purge(both, T0 + 60, exclude=("r",))) == [new_ok]
    assert await one(backend, ops.Purge(completed, T0 + 60)) == [other_q]
    assert (await get(backend, pending)).status is JobState.AVAILABLE  # never unfinished ones
    assert await one(backend, ops.Get(old_ok)) is None
    with pytest.raises(ValueError, match="finished"):
        ops.Purge((JobState.AVAILABLE,), T0)


async def test_retry_many_pages_through_dead_jobs_matching_the_filters(backend: Backend) -> None:
    dead = await finished(
        backend, ("q", "fail", T0), ("q", "discard", T0 + 5), ("r", "fail", T0 + 9),
        ("q", "ok", T0 + 9),
    )  # fmt: skip
    page = ops.RetryMany(JobState.DEAD, ops.JobFilter(queue="q", limit=1))
    first: ops.BulkResult = await one(backend, page, T0 + 10)
    assert first == ops.BulkResult((dead[0],), dead[0])
    rest = ops.RetryMany(JobState.DEAD, ops.JobFilter(queue="q", after_id=dead[0], limit=1))
    assert await one(backend, rest, T0 + 10) == ops.BulkResult((dead[1],), dead[1])
    info = await get(backend, dead[1])
    assert (info.status, info.attempt, info.run_at) == (JobState.AVAILABLE, 0, T0 + 10)
    since = ops.RetryMany(JobState.DEAD, ops.JobFilter(since=T0 + 9))
    assert await one(backend, since, T0 + 11) == ops.BulkResult((dead[2],), None)
    assert (await get(backend, dead[3])).status is JobState.COMPLETED


async def test_retry_many_skips_a_job_whose_key_is_held(backend: Backend) -> None:
    [keyed] = await enqueue(backend, job(key="k", max_attempts=1))
    [claimed] = (await claim(backend)).jobs
    assert await finish(backend, claimed, Outcome(keyed, claimed.lease, Failed(None)), T0)
    [holder] = await enqueue(backend, job(key="k"))
    [plain] = await finished(backend, ("r", "fail", T0))
    result = await one(backend, ops.RetryMany(JobState.DEAD, ops.JobFilter()), T0 + 1)
    assert result == ops.BulkResult((plain,), None)
    assert (await get(backend, keyed)).status is JobState.DEAD
    del holder


async def test_discard_many_sends_matching_pending_jobs_to_dead(backend: Backend) -> None:
    a, b, later, other = await enqueue(
        backend, job("a"), job("b"), job("a", run_at=T0 + 60), job("a", queue="r")
    )
    result = await one(
        backend, ops.DiscardMany(None, ops.JobFilter(queue="q", name="a"), "spam"), T0 + 1
    )
    assert result == ops.BulkResult((a, later), None)
    info = await get(backend, later)
    assert (info.status, info.error, info.finished_at) == (JobState.DEAD, "spam", T0 + 1)
    only_scheduled = ops.DiscardMany(JobState.SCHEDULED, ops.JobFilter(), "x")
    assert await one(backend, only_scheduled) == ops.BulkResult((), None)
    assert (await get(backend, b)).status is JobState.AVAILABLE
    assert (await get(backend, other)).status is JobState.AVAILABLE


async def test_a_process_row_keeps_what_its_last_beat_said(backend: Backend) -> None:
    first = ProcessDetails("host-a", 41, (("default", 4), ("mail", 0)), ("gpu",), 3)
    await one(backend, ops.Beat("p1", ("default", "mail"), first), T0)
    later = attrs.evolve(first, pools=(("default", 8), ("mail", 2)), running=0)
    await one(backend, ops.Beat("p1", ("default", "mail"), later), T0 + 1)
    await one(backend, ops.Beat("old", ("default",)), T0 + 2)  # says nothing about itself
    rows = {p.owner: p for p in await one(backend, ops.Processes(), T0 + 3)}
    assert (rows["p1"].details, rows["p1"].started_at) == (later, T0)
    assert rows["old"].details is None


async def test_a_beat_keeps_where_wake_ups_may_be_addressed_and_until_when(
    backend: Backend,
) -> None:
    listening = ProcessDetails("h", 7, (("q", 2),), (), 0, wake_channel="ch_1", wake_until=T0 + 5)
    await one(backend, ops.Beat("p1", ("q",), listening), T0)
    deaf = attrs.evolve(listening, wake_channel=None, wake_until=None)  # its listener dropped
    await one(backend, ops.Beat("p2", ("q",), listening), T0)
    await one(backend, ops.Beat("p2", ("q",), deaf), T0 + 1)
    rows = {p.owner: p.details for p in await one(backend, ops.Processes(), T0 + 2)}
    assert rows == {"p1": listening, "p2": deaf}


async def test_waking_every_process_changes_no_job(backend: Backend) -> None:
    """Where notices go to other processes (PostgreSQL) they hear it; elsewhere nothing
    happens. Either way no job moves and the next claim finds what it would have."""
    [job_id] = await enqueue(backend, job(queue="q"))
    assert await one(backend, ops.WakeAll((("q", T0), ("other", T0 + 1.5))), T0) is None
    assert (await get(backend, job_id)).status is JobState.AVAILABLE
    assert [j.id for j in (await claim(backend, T0, queue="q")).jobs] == [job_id]


async def test_every_attempts_error_is_kept(backend: Backend) -> None:
    [job_id] = await enqueue(backend, job(max_attempts=3))
    assert await one(backend, ops.Attempts(job_id)) == []
    [first] = (await claim(backend, T0)).jobs
    fail = Outcome(job_id, first.lease, Failed(T0 + 5), error="boom 1")
    assert await finish(backend, first, fail, T0 + 1)
    [_lost] = (await claim(backend, T0 + 5, owner="w1", lease=10)).jobs
    assert [r.id for r in await one(backend, ops.Rescue(), T0 + 15)] == [job_id]  # lost
    [third] = (await claim(backend, T0 + 15)).jobs
    dead = Outcome(job_id, third.lease, Failed(None), error="boom 3")
    assert await finish(backend, third, dead, T0 + 16)
    history = await one(backend, ops.Attempts(job_id))
    assert [(a.attempt, a.started_at) for a in history] == [(1, T0), (2, T0 + 5), (3, T0 + 15)]
    assert history[0].error == "boom 1"
    assert "attempt 2 lost" in history[1].error
    assert history[2].error == "boom 3"
    assert await one(backend, ops.RetryJob(job_id), T0 + 20)  # the operator's retry keeps it
    assert [a.error for a in await one(backend, ops.Attempts(job_id))][-1] == "boom 3"
    assert await one(backend, ops.Purge((JobState.COMPLETED, JobState.DEAD), T0 + 99)) == []
    assert await one(backend, ops.Discard(job_id, "spam"), T0 + 21)
    assert await one(backend, ops.Purge((JobState.DEAD,), T0 + 99), T0 + 99) == [job_id]
    assert await one(backend, ops.Attempts(job_id)) == []  # gone with its job


async def test_unique_for_keeps_a_key_blocking_after_its_job_finished(backend: Backend) -> None:
    keyed = attrs.evolve(job(key="k"), unique_for=60.0)
    [first] = await enqueue(backend, keyed)
    [claimed] = (await claim(backend)).jobs
    assert await finish(backend, claimed, Outcome(first, claimed.lease, Succeeded()), T0 + 10)
    assert await one(backend, ops.Enqueue((keyed,)), T0 + 70) == [Enqueued(first, False)]
    assert await one(backend, ops.Enqueue((job(key="k"),)), T0 + 20) != [Enqueued(first, False)]
    [_second] = await enqueue(backend, job(key="other"))


async def test_unique_for_runs_out(backend: Backend) -> None:
    keyed = attrs.evolve(job(key="k"), unique_for=60.0)
    [first] = await enqueue(backend, keyed)
    [claimed] = (await claim(backend)).jobs
    assert await finish(backend, claimed, Outcome(first, claimed.lease, Failed(None)), T0 + 10)
    [after] = await one(backend, ops.Enqueue((keyed,)), T0 + 70.001)
    assert after.created
    assert await one(backend, ops.Enqueue((keyed,)), T0 + 71) == [Enqueued(after.id, False)]


async def test_keys_in_one_batch_and_its_duplicates(backend: Backend) -> None:
    enqueued = await one(
        backend, ops.Enqueue((job(key="a"), job(key="b"), job(key="a"), job())), T0
    )
    a, b, again, plain = enqueued
    assert (a.created, b.created, again, plain.created) == (True, True, Enqueued(a.id, False), True)


async def test_delete_removes_one_finished_job_with_its_attempts_and_counts(
    backend: Backend,
) -> None:
    done, kept = await finished(backend, ("q", "ok", T0), ("q", "ok", T0 + 2))
    [dead] = await enqueue(backend, job(max_attempts=2))
    for attempt, retry_at in ((1, T0 + 1), (2, None)):
        [c] = (await claim(backend, T0 + attempt)).jobs
        failed = Outcome(dead, c.lease, Failed(retry_at), error=f"boom {attempt}")
        assert await finish(backend, c, failed, T0 + attempt)
    assert len(await one(backend, ops.Attempts(dead))) == 2
    assert await one(backend, ops.Delete(dead), T0 + 5) is JobState.DEAD
    assert await one(backend, ops.Get(dead)) is None
    assert await one(backend, ops.Attempts(dead)) == []
    assert await one(backend, ops.Delete(done), T0 + 5) is JobState.COMPLETED
    assert await one(backend, ops.Stats()) == {"q": {JobState.COMPLETED: 1}}
    assert await one(backend, ops.Throughput(T0 - 10)) == {"q": {JobState.COMPLETED: 1}}
    assert (await get(backend, kept)).status is JobState.COMPLETED
    with pytest.raises(JobNotFoundError, match=str(dead)):
        await one(backend, ops.Delete(dead), T0 + 6)  # once only


async def test_delete_refuses_an_unfinished_job_and_names_what_ends_it(backend: Backend) -> None:
    running, waiting = await enqueue(backend, job("a"), job("b", run_at=T0 + 60))
    [claimed] = (await claim(backend, names=frozenset({"a"}))).jobs
    with pytest.raises(InvalidStateError, match=r"is running.*cancel it first"):
        await one(backend, ops.Delete(running))
    with pytest.raises(InvalidStateError, match=r"is scheduled.*cancel or discard it first"):
        await one(backend, ops.Delete(waiting))
    assert (await get(backend, running)).status is JobState.RUNNING
    assert (await get(backend, waiting)).status is JobState.SCHEDULED
    assert await one(backend, ops.Stats()) == {"q": {JobState.RUNNING: 1, JobState.SCHEDULED: 1}}
    assert await one(backend, ops.Cancel(waiting), T0 + 1) is CancelResult.CANCELLED
    assert await one(backend, ops.Delete(waiting), T0 + 2) is JobState.CANCELLED
    assert await finish(backend, claimed, Outcome(running, claimed.lease, Succeeded()), T0 + 3)
    assert await one(backend, ops.Delete(running), T0 + 4) is JobState.COMPLETED
    assert await one(backend, ops.Stats()) == {}


def _retained(retain: dict[str, float | None] | None) -> NewJob:
    return attrs.evolve(job(max_attempts=1), retain=None if retain is None else json.dumps(retain))


async def test_a_jobs_own_retention_decides_when_it_is_deleted(backend: Backend) -> None:
    """Each job's ``retain`` for the state it ended in; the queue's passes leave it alone."""
    short = {"completed": 10.0, "cancelled": 5.0, "dead": None, "compensated": 10.0}
    long = {**short, "completed": 100.0}
    ids = await enqueue(
        backend, _retained(short), _retained(short), _retained(None), _retained(long),
        _retained(short),
    )  # fmt: skip
    soon, kept, plain, later, cancelled = ids
    claimed = (await claim(backend, T0, limit=4)).jobs
    events: dict[int, OutcomeEvent] = {
        soon: Succeeded(), kept: Failed(None), plain: Succeeded(), later: Succeeded()
    }  # fmt: skip
    for c in claimed:
        assert await finish(backend, c, Outcome(c.id, c.lease, events[c.id]), T0)
    assert await one(backend, ops.Cancel(cancelled), T0 + 2) is CancelResult.CANCELLED
    assert await one(backend, ops.PurgeExpired(T0 + 5), T0 + 5) == []
    assert await one(backend, ops.PurgeExpired(T0 + 7.5), T0 + 7.5) == [cancelled]
    everything = (JobState.COMPLETED, JobState.DEAD)
    by_queue = ops.Purge(everything, T0 + 50, keep_retained=True)
    assert await one(backend, by_queue, T0 + 50) == [plain]  # only a job without its own
    assert await one(backend, ops.PurgeExpired(T0 + 10), T0 + 10) == []  # not before it ran out
    assert await one(backend, ops.PurgeExpired(T0 + 1e9, limit=1), T0 + 50) == [soon]
    assert await one(backend, ops.PurgeExpired(T0 + 1e9), T0 + 50) == [later]
    assert await one(backend, ops.PurgeExpired(T0 + 1e9), T0 + 50) == []  # dead: kept
    assert (await get(backend, kept)).status is JobState.DEAD
    assert await one(backend, ops.Stats()) == {"q": {JobState.DEAD: 1}}
    assert await one(backend, ops.Purge(everything, T0 + 50), T0 + 50) == [kept]  # by hand


async def test_every_read_shows_a_jobs_own_retention(backend: Backend) -> None:
    """``JobInfo.retain`` as enqueued (None: the queue's) from each read, and from a cron
    tick's job: ``FireCron`` stores it as ``Enqueue`` does."""
    short = {"completed": 10.0, "cancelled": 5.5, "dead": None, "compensated": 86400.0}
    own, plain = await enqueue(backend, _retained(short), _retained(None))
    tick = attrs.evolve(_retained(short), name="cron:x", idempotency_key="cron:x@1")
    await one(backend, ops.FireCron("x", None, T0, ()))
    [fired] = (await one(backend, ops.FireCron("x", T0, T0 + 60, (tick,)), T0 + 60)).job_ids
    assert (await get(backend, own)).retain == short
    assert (await get(backend, plain)).retain is None
    many: dict[int, JobInfo] = await one(backend, ops.GetMany((own, plain, fired)))
    assert {i: info.retain for i, info in many.items()} == {own: short, plain: None, fired: short}
    listed: list[JobInfo] = await one(backend, ops.ListJobs())
    assert [(info.id, info.retain) for info in listed] == [
        (fired, short), (plain, None), (own, short),
    ]  # fmt: skip
    assert await one(backend, ops.PurgeExpired(T0 + 1e9)) == []  # none finished yet
    [c] = [c for c in (await claim(backend, T0 + 60, names=frozenset({"cron:x"}))).jobs]
    assert await finish(backend, c, Outcome(fired, c.lease, Succeeded()), T0 + 60)
    assert await one(backend, ops.PurgeExpired(T0 + 69), T0 + 69) == []
    assert await one(backend, ops.PurgeExpired(T0 + 71), T0 + 71) == [fired]
