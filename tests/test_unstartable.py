"""A job whose attempt cannot even begin goes dead alone: a stored timeout that is not a
finite number of seconds > 0 (enqueue refuses one; a row written by other means may hold
it) is refused before the attempt starts, in one error record, and the queue's one slot
runs the next job."""

from __future__ import annotations

import logging
import math

import pytest
import trio

import trioforge
from tests.support.fast import FAST
from trioforge import JobContext, JobState, Registry
from trioforge.storage import Backend, ops
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


@pytest.mark.parametrize("stored", [-5.0, 0.0, math.inf, math.nan], ids=repr)
async def test_a_job_with_an_invalid_stored_timeout_goes_dead_alone(
    database: str | Backend, stored: float, caplog: pytest.LogCaptureFixture
) -> None:
    if math.isnan(stored) and isinstance(database, str) and database.startswith("sqlite:"):
        pytest.skip("SQLite stores NaN as NULL: the job has no timeout of its own")
    ran: list[int] = []
    async with trioforge.open_runtime(
        _counter(ran), database=database, queues={"default": 1}, **FAST
    ) as rt:
        # Attempts left: the refusal is final all the same.
        bad = NewJob("work", "default", "0", 0, 0.0, 3, timeout=stored)
        [enqueued] = await rt._storage.call(ops.Enqueue((bad,)))
        with trio.fail_after(WAIT):
            dead = await rt.wait(enqueued.id)
            good = await rt.wait(await rt.enqueue("work", 1))
    assert ran == [1]  # the refused job's handler never ran; the one slot ran the next job
    assert good.status is JobState.COMPLETED
    assert (dead.status, dead.attempt) == (JobState.DEAD, 1)
    why = (
        "attempt 1 could not begin, so it is not retried: InvalidArgumentError: "
        f"job {enqueued.id}'s stored timeout must be a finite number of seconds > 0, got "
    )
    error = dead.error or ""
    assert error.startswith(why)
    assert _same(error.removeprefix(why), stored)
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    fields = [getattr(record, name) for name in ("job_id", "job_name", "state")]
    assert fields == [enqueued.id, "work", "dead"]
    assert f"job {enqueued.id} default:work attempt 1/3 failed" in record.getMessage()
    assert error in record.getMessage()
