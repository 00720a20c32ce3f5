"""An outcome the database cannot store as written never holds up the others: in a real
worker process on PostgreSQL, and in the outcome writer's batch split on both databases."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import trioforge
from tests.support.postgres import schema_url
from tests.test_crash_rescue import read_until
from trioforge import JobState, Registry
from trioforge._core.states import Failed, Succeeded
from trioforge.actors.outcome_writer import record_outcomes
from trioforge.actors.storage_actor import open_storage_channel, storage_actor
from trioforge.storage import Outcome, backend_for_url, opened, ops
from trioforge.storage._records import NewJob

JOBS = 20
GRACE = 5.0

#: 21 attempts that all return together, so the poison outcome shares the batch of the others.
APP = f"""
import time
import trio
import trioforge

registry = trioforge.Registry()
started = 0
together = trio.Event()


async def meet():
    global started
    started += 1
    if started == {JOBS + 1}:
        together.set()
    await together.wait()


@registry.job("poison", retry=trioforge.Retry(max_attempts=1))
async def poison(ctx: trioforge.JobContext) -> None:
    await meet()
    raise RuntimeError("bad \\x00 err")


@registry.job("ordinary")
async def ordinary(ctx: trioforge.JobContext, n: int) -> float:
    await meet()
    return time.time()  # when the handler finished, to compare with finished_at
"""


async def _placeholder(ctx: trioforge.JobContext, n: int) -> None:
    raise AssertionError("only enqueued from here")


async def _placeholder_alone(ctx: trioforge.JobContext) -> None:
    raise AssertionError("only enqueued from here")


@pytest.mark.slow
async def test_a_poison_outcome_beside_twenty_ordinary_ones_blocks_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "poisonapp.py").write_text(APP)
    names = Registry()
    poison = names.job("poison")(_placeholder_alone)
    ordinary = names.job("ordinary")(_placeholder)
    async with schema_url() as url:
        command = [sys.executable, "-m", "trioforge", "worker", "poisonapp:registry",
                   "--database", url, "--queue", f"default={JOBS + 1}",
                   "--poll-interval", "0.05", "--shutdown-grace", str(GRACE)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}
        async with trioforge.open_client(url) as client, trio.open_nursery() as nursery:
            bad = await client.enqueue(poison)
            good = await client.enqueue_many(ordinary, range(JOBS))
            proc = await trio.lowlevel.open_process(
                command, cwd=tmp_path, stderr=subprocess.PIPE, env=env
            )
            assert proc.stderr is not None
            with trio.fail_after(30):
                output = await read_until(proc.stderr, b"ready", 1)
            logged: list[bytes] = [output]
            nursery.start_soon(_drain, proc.stderr, logged)
            with trio.fail_after(30):
                ends = [await client.wait(job_id) for job_id in good]
                dead = await client.wait(bad)
            proc.send_signal(signal.SIGINT)  # once: the worker drains and stops
            with trio.fail_after(GRACE + 5):
                code = await proc.wait()
    output = b"".join(logged)
    assert code == 0, output
    assert b"second signal" not in output
    assert [e.status for e in ends] == [JobState.COMPLETED] * JOBS
    for end in ends:  # recorded within a second of the handler's return
        assert end.finished_at is not None
        assert end.finished_at - end.result < 1.0, (end.finished_at, end.result)
    assert dead.status is JobState.DEAD
    assert (dead.error or "").endswith("RuntimeError: bad \\x00 err\n")


async def _drain(stream: trio.abc.ReceiveStream, into: list[bytes]) -> None:
    while chunk := await stream.receive_some():
        into.append(bytes(chunk))


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        async with schema_url() as pg_url:
            yield pg_url


def poison_for(url: str, job_id: int, lease: int) -> Outcome:
    """An outcome the database behind ``url`` refuses for its own data. PostgreSQL: text
    that skipped the storable rule (a lone surrogate no driver encodes). SQLite writes
    outcomes as JSON, where such text passes: a retry time no JSON holds."""
    if url.startswith("sqlite"):
        return Outcome(job_id, lease, Failed(retry_at=math.inf), error="boom")
    outcome = Outcome(job_id, lease, Succeeded(), result='"bad"')
    object.__setattr__(outcome, "result", '"bad \ud800"')  # past the converter
    return outcome


async def test_an_outcome_that_fails_on_its_data_fails_alone(url: str) -> None:
    # The others of its batch land in the same call, and the refused one is recorded dead
    # with an error saying why, not handed back to be tried again and again.
    jobs = tuple(
        NewJob(name="work", queue="q", payload="null", priority=0, run_at=0.0, max_attempts=1)
        for _ in range(5)
    )
    async with opened(backend_for_url(url)) as backend, trio.open_nursery() as nursery:
        handle, receive = open_storage_channel()
        await nursery.start(storage_actor, backend, trio.current_time, receive)
        ids = [e.id for e in await handle.call(ops.Enqueue(jobs))]
        claimed = await handle.call(ops.Claim("q", frozenset({"work"}), 5, "me", 1e12))
        leases = {job.id: job.lease for job in claimed.jobs}
        outcomes = [Outcome(i, leases[i], Succeeded(), result=f'"{i}"') for i in ids]
        outcomes[2] = poison = poison_for(url, ids[2], leases[ids[2]])
        recorded = await record_outcomes(handle, outcomes)
        found = [(await handle.call(ops.Get(i))) for i in ids]
        handle.close()
    infos = [info for info in found if info is not None]
    assert len(infos) == len(ids)
    assert [applied for _, applied in recorded] == [True] * 5
    assert [o for o, _ in recorded[:2] + recorded[3:]] == outcomes[:2] + outcomes[3:]
    others = infos[:2] + infos[3:]
    assert [info.status for info in others] == [JobState.COMPLETED] * 4
    assert [info.result for info in others] == [str(i) for i in ids[:2] + ids[3:]]
    assert (infos[2].status, infos[2].result) == (JobState.DEAD, None)
    error = infos[2].error or ""
    assert f"could not store how this attempt ended ({type(poison.event).__name__})" in error
    refused_text = poison.error if poison.error is not None else poison.result
    assert error.endswith(f"The refused text, escaped: {refused_text!a}")
