"""A job whose attempt cannot even begin goes dead alone, in one error record, and the
queue's one slot runs the next job: a stored timeout that is not a finite number of
seconds > 0 (enqueue refuses one; a row written by other means may hold it), or a bug in
making the attempt."""

from __future__ import annotations

import logging
import math

import pytest
import trio

import trioforge
from tests.support.fast import FAST
from trioforge import JobContext, JobState, Registry
from trioforge._registry_jobs import STORED_TIMEOUT_FIX, RegistryJobs
from trioforge.actors.attempts import Attempt
from trioforge.storage import Backend, ClaimedJob, JobInfo, ops
from trioforge.storage._records import NewJob

#: Bound on each wait: a job that never ends fails the test instead of hanging it.
WAIT = 20.0


def _counter(ran: list[int]) -> Registry:
    registry = Registry()

    @registry.job("work")
    async def work(ctx: JobContext, index: int) -> None:
        ran.append(index)

    return registry


def _same(stored: str, timeout: float) -> bool:
    """Whether ``stored``, the value an error message quotes, is ``timeout`` (SQLite reads
    back -5.0 as -5)."""
    value = float(stored)
    return math.isnan(value) if math.isnan(timeout) else value == timeout


async def _refused(
    database: str | Backend, bad: NewJob, caplog: pytest.LogCaptureFixture
) -> tuple[int, JobInfo]:
    """Write ``bad`` (the worker's one slot takes it first), then enqueue a good job: the
    bad one's id and how it ended, once the good one has completed and the one error
    record, for the bad one, is checked."""
    ran: list[int] = []
    async with trioforge.open_runtime(
        _counter(ran), database=database, queues={"default": 1}, **FAST
    ) as rt:
        [enqueued] = await rt._storage.call(ops.Enqueue((bad,)))
        with trio.fail_after(WAIT):
            dead = await rt.wait(enqueued.id)
            good = await rt.wait(await rt.enqueue("work", 1))
    assert ran == [1]  # the refused job's handler never ran; the one slot ran the next job
    assert good.status is JobState.COMPLETED
    # Attempts were left: the refusal is final all the same.
    assert (dead.status, dead.attempt, dead.max_attempts) == (JobState.DEAD, 1, 3)
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    fields = [getattr(record, name) for name in ("job_id", "job_name", "state")]
    assert fields == [enqueued.id, "work", "dead"]
    assert f"job {enqueued.id} default:work attempt 1/3 failed" in record.getMessage()
    assert (dead.error or "?") in record.getMessage()
    return enqueued.id, dead


@pytest.mark.parametrize("stored", [-5.0, 0.0, math.inf, math.nan], ids=repr)
async def test_a_job_with_an_invalid_stored_timeout_goes_dead_alone(
    database: str | Backend, stored: float, caplog: pytest.LogCaptureFixture
) -> None:
    if math.isnan(stored) and isinstance(database, str) and database.startswith("sqlite:"):
        pytest.skip("SQLite stores NaN as NULL: the job has no timeout of its own")
    bad = NewJob("work", "default", "0", 0, 0.0, 3, timeout=stored)
    job_id, dead = await _refused(database, bad, caplog)
    why = (
        "attempt 1 could not begin, so it is not retried: InvalidArgumentError: "
        f"job {job_id}'s stored timeout must be a finite number of seconds > 0, got "
    )
    error = dead.error or ""
    assert error.startswith(why)
    assert error.endswith(STORED_TIMEOUT_FIX)  # the message names the fix
    assert _same(error.removeprefix(why).removesuffix(STORED_TIMEOUT_FIX), stored)


async def test_a_job_whose_attempt_cannot_be_made_goes_dead_alone(
    database: str | Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in making the attempt (simulated: the registry adapter raises for one job)."""
    make = RegistryJobs.attempt

    def attempt(self: RegistryJobs, job: ClaimedJob) -> Attempt:
        if job.payload == "0":
            raise RuntimeError("a bug in making the attempt\nsecond line")
        return make(self, job)

    monkeypatch.setattr(RegistryJobs, "attempt", attempt)
    bad = NewJob("work", "default", "0", 0, 0.0, 3)
    _, dead = await _refused(database, bad, caplog)
    assert dead.error == (
        "attempt 1 could not begin, so it is not retried: RuntimeError: a bug in making the attempt"
    )
