"""Rate and concurrency limits across three worker processes on PostgreSQL: every start
is counted in a table, and no window sees more than the limits allow."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import asyncpg
import pytest
import trio
import trio_asyncio

import trioforge
from tests.support.flow_jobs import RATE, TENANTS, Work, per_tenant, rated
from tests.support.postgres import schema_url, temporary_schema
from trioforge import JobState
from trioforge.storage.postgres import PostgresBackend

ROOT = Path(__file__).resolve().parent.parent
RATED, PER_TENANT = 60, 30


async def sql(url: str, query: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(query))
        finally:
            await conn.close()

    async with trio_asyncio.open_loop():
        result: list[asyncpg.Record] = await trio_asyncio.aio_as_trio(run)()
    return result


@pytest.mark.slow
async def test_limits_hold_across_three_processes_on_postgres(tmp_path: Path) -> None:
    async with schema_url() as url:
        await sql(
            url,
            "CREATE TABLE flow_starts (job_id BIGINT, kind TEXT, tenant TEXT, pid INT, "
            "started DOUBLE PRECISION, ended DOUBLE PRECISION)",
        )
        async with trioforge.open_client(url) as client:  # migrates, stores the jobs
            ids = await client.enqueue_many(rated, range(RATED))
            ids += await client.enqueue_many(
                per_tenant, [Work("abc"[n % 3], n) for n in range(PER_TENANT)]
            )
        command = [
            sys.executable, "-m", "trioforge", "worker", "tests.support.flow_jobs:registry",
            "--database", url, "--queue", "flow=8", "--heartbeat-interval", "0.5",
            "--poll-interval", "0.05", "--log-level", "WARNING",
        ]  # fmt: skip
        env = {**os.environ, "FLOW_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
        logs = [(tmp_path / f"worker{i}.log").open("wb") for i in range(3)]
        workers = [
            await trio.lowlevel.open_process(command, cwd=ROOT, stdout=log, stderr=log, env=env)
            for log in logs
        ]
        try:
            async with trioforge.open_client(url) as client:
                with trio.fail_after(60):
                    finals = [await client.wait(job_id) for job_id in ids]
        finally:
            for proc in workers:
                proc.terminate()
            with trio.fail_after(60):
                for proc in workers:
                    await proc.wait()
            for log in logs:
                log.close()
        rows = await sql(url, "SELECT kind, tenant, pid, started, ended FROM flow_starts")
        claimed = await sql(
            url, "SELECT started_at FROM trioforge_jobs WHERE name = 'flow:rated' ORDER BY 1"
        )

    errors = {f.error for f in finals if f.attempt > 1}
    assert {(f.status, f.attempt) for f in finals} == {(JobState.COMPLETED, 1)}, errors
    assert len(rows) == RATED + PER_TENANT
    assert len({r["pid"] for r in rows}) >= 2, "the work must spread over the processes"
    # Rate: the claims' own instants (what the bucket counted) in every window of W seconds.
    starts = [r["started_at"] for r in claimed]
    for window in (0.25, 1.0, 2.0):
        bound = RATE.per_second * window + RATE.burst
        for i, first in enumerate(starts):
            inside = sum(1 for s in starts[i:] if s <= first + window)
            assert inside <= bound + 1e-6, (window, inside, bound)
    # A never-idle drain is rate-bound: 60 starts at 20/s after a burst of 5 take ~2.75 s.
    assert starts[-1] - starts[0] >= (RATED - RATE.burst) / RATE.per_second - 0.05
    # Concurrency: at no instant more than 2 jobs of a tenant ran (as their handlers saw it).
    spans = [(r["tenant"], r["started"], r["ended"]) for r in rows if r["kind"] == "tenant"]
    for tenant, start, _ in spans:
        overlapping = sum(1 for t, s, e in spans if t == tenant and s <= start < e)
        assert overlapping <= TENANTS.limit, (tenant, start, overlapping)


held_registry = trioforge.Registry()
ONE = trioforge.ConcurrencyLimit("one", 1)
first_started, first_may_end, second_started, filler_may_end = (trio.Event() for _ in range(4))
filler_started = trio.Event()


@held_registry.job("slot:first", queue="first", concurrency=ONE)
async def first(ctx: trioforge.JobContext) -> None:
    first_started.set()
    await first_may_end.wait()


@held_registry.job("slot:second", queue="second", concurrency=ONE)
async def second(ctx: trioforge.JobContext) -> None:
    second_started.set()


@held_registry.job("slot:filler", queue="second")
async def filler(ctx: trioforge.JobContext) -> None:
    filler_started.set()
    await filler_may_end.wait()


async def test_a_job_held_back_in_one_runtime_starts_when_another_frees_the_slot() -> None:
    """Two runtimes on one PostgreSQL schema, polling once a minute: the slot freed by the
    first runtime's job reaches the second through a notice, not the next poll."""
    async with temporary_schema() as backend:
        other = PostgresBackend(backend.url, schema=backend.schema)
        async with trioforge.open_runtime(
            held_registry, database=backend, queues={"first": 1}, poll_interval=60.0
        ) as one:
            await one.enqueue(first)
            await first_started.wait()
            async with trioforge.open_runtime(
                held_registry, database=other, queues={"second": 2}, poll_interval=60.0
            ) as two:
                waiting = await two.enqueue(second)
                await two.enqueue(filler, priority=-1)  # behind it in claim order
                # The filler started, so the claim that took it held the limited job back.
                await filler_started.wait()
                assert (await two.get(waiting)).status is JobState.AVAILABLE
                first_may_end.set()
                with trio.fail_after(10):  # the poll would take 60 s
                    await second_started.wait()
                filler_may_end.set()
