"""Jobs run by the worker processes of tests/test_flow_replicas.py: each start and end is
recorded in the table ``flow_starts`` of the database under test."""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

import asyncpg
import attrs
import trio
import trio_asyncio

import trioforge

registry = trioforge.Registry()

RATE = trioforge.RateLimit("shared", rate=20, per=dt.timedelta(seconds=1), burst=5)
TENANTS = trioforge.ConcurrencyLimit("tenant", 2, key=lambda work: work.tenant)
_pool: list[Any] = []
_pool_lock = trio.Lock()


@attrs.frozen
class Work:
    tenant: str
    n: int


async def _record(job_id: int, kind: str, tenant: str | None, started: float) -> None:
    async with _pool_lock:  # one pool per process, made by the first job
        if not _pool:
            url = os.environ["FLOW_DATABASE_URL"]
            _pool.append(
                await trio_asyncio.aio_as_trio(asyncpg.create_pool)(url, min_size=1, max_size=8)
            )

    async def insert() -> None:
        await _pool[0].execute(
            "INSERT INTO flow_starts (job_id, kind, tenant, pid, started, ended) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            job_id, kind, tenant, os.getpid(), started, time.time(),
        )  # fmt: skip

    await trio_asyncio.aio_as_trio(insert)()


@registry.job("flow:rated", queue="flow", rate_limit=RATE)
async def rated(ctx: trioforge.JobContext, n: int) -> None:
    await _record(ctx.job_id, "rated", None, time.time())


@registry.job("flow:tenant", queue="flow", concurrency=TENANTS)
async def per_tenant(ctx: trioforge.JobContext, work: Work) -> None:
    started = time.time()
    await trio.sleep(0.1)
    await _record(ctx.job_id, "tenant", work.tenant, started)
