"""Job counts at a million jobs (`make bench`).

Per backend: a million jobs written by one bulk insert (four queues, most completed, some
dead, cancelled, pending and running, finished over the last day), then the latency of the
queues page (``GET /``) and of ``GET /metrics`` over HTTP, of the counts and throughput
reads alone, and of the full scans they replaced. PostgreSQL reads its counts as delta
rows summed, so they are read again with a fold interval's worth of unfolded deltas.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import trio
import trio_asyncio

import trioforge
import trioforge.web
from bench.databases import add_postgres_url, postgres_schemas
from bench.harness import add_deadline, bounded, pct, report
from trioforge.metrics import Metrics
from trioforge.storage import Backend
from trioforge.storage.postgres import PostgresBackend
from trioforge.storage.sqlite import SQLiteBackend

#: Rows of (queue, status, share of the million).
MIX = [
    (queue, status, share)
    for queue in ("default", "mail", "reports", "bench")
    for status, share in (
        ("completed", 0.2), ("dead", 0.01), ("cancelled", 0.01), ("available", 0.02),
        ("scheduled", 0.005), ("retrying", 0.003), ("running", 0.002),
    )
]  # fmt: skip

#: The statements the counts replaced (a scan of every job).
SCAN_COUNTS = "SELECT queue, status, count(*) FROM trioforge_jobs GROUP BY queue, status"
SCAN_THROUGHPUT = (
    "SELECT queue, status, count(*) FROM trioforge_jobs WHERE finished_at >= {p} "
    "GROUP BY queue, status"
)

#: The counts of rows written straight to the table, as the migration fills them.
RECOUNT = """
DELETE FROM trioforge_counts;
DELETE FROM trioforge_finished;
INSERT INTO trioforge_counts (queue, state, n)
    SELECT queue, status, count(*) FROM trioforge_jobs GROUP BY queue, status;
INSERT INTO trioforge_finished (second, queue, state, n)
    SELECT {second}, queue, status, count(*) FROM trioforge_jobs
    WHERE finished_at IS NOT NULL GROUP BY 1, 2, 3;
"""
SQLITE_SECOND = "CAST(finished_at AS INTEGER)"


def _segments(jobs: int) -> list[tuple[str, str, int]]:
    return [(q, s, round(jobs * share)) for q, s, share in MIX]


def fill_sqlite(path: Path, jobs: int, now: float) -> None:
    """``jobs`` rows by one INSERT ... SELECT per segment, then counted."""
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    for queue, status, n in _segments(jobs):
        finished = "?3 - 86400.0 * (x % 1000) / 1000" if status in _FINISHED else "NULL"
        db.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?4) "
            "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, max_attempts, "
            "created_at, status, attempt, finished_at) "
            f"SELECT 'noop', ?1, '[0]', 0, ?3 - 90000, 3, ?3 - 90000, ?2, 1, {finished} FROM c",
            (queue, status, now, n),
        )
    db.execute("COMMIT")
    db.executescript(f"BEGIN; {RECOUNT.format(second=SQLITE_SECOND)} COMMIT;")
    db.close()


_FINISHED = ("completed", "dead", "cancelled")


async def fill_postgres(conn: asyncpg.Connection, jobs: int, now: float) -> None:
    for queue, status, n in _segments(jobs):
        finished = "$3 - 86400.0 * (x % 1000) / 1000" if status in _FINISHED else "NULL"
        await conn.execute(
            "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, max_attempts, "
            "created_at, status, attempt, finished_at) "
            f"SELECT 'noop', $1, '[0]', 0, $3 - 90000, 3, $3 - 90000, $2, 1, {finished} "
            "FROM generate_series(1, $4) AS x",
            queue, status, now, n,
        )  # fmt: skip
    await conn.execute(RECOUNT.format(second="floor(finished_at)::bigint"))
    await conn.execute("VACUUM ANALYZE trioforge_jobs")


async def timed(fn: Callable[[], Awaitable[Any]], samples: int) -> list[float]:
    await fn()  # warm
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


def ms(samples: list[float]) -> str:
    return f"{pct(samples, 0.5) * 1000:.2f} / {pct(samples, 0.99) * 1000:.2f}"


async def page_latencies(
    database: str | Backend, scan: Callable[[str], Awaitable[Any]], samples: int
) -> dict[str, str]:
    since = time.time() - 300
    async with trioforge.open_client(database) as client:
        app = trioforge.web.app(client=client, metrics=Metrics())
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(trioforge.web.serve, app, port=0))
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:

                async def get(path: str) -> None:
                    (await http.get(path)).raise_for_status()

                rows = {
                    "queues page (GET /)": ms(await timed(partial(get, "/"), samples)),
                    "GET /metrics": ms(await timed(partial(get, "/metrics"), samples)),
                    "stats()": ms(await timed(client.stats, samples)),
                    "throughput(300)": ms(await timed(partial(client.throughput, 300), samples)),
                    "  before: counts by scan": ms(await timed(partial(scan, SCAN_COUNTS), 5)),
                    "  before: throughput by scan": ms(
                        await timed(partial(scan, SCAN_THROUGHPUT.format(p=since)), 5)
                    ),
                }
            nursery.cancel_scope.cancel()
    return {f"{k} p50 / p99 (ms)": v for k, v in rows.items()}


async def sqlite_latencies(tmp: Path, jobs: int, samples: int) -> None:
    path = tmp / "million.db"
    SQLiteBackend(path).open_sync()
    t0 = time.perf_counter()
    await trio.to_thread.run_sync(fill_sqlite, path, jobs, time.time())
    filled = time.perf_counter() - t0

    async def scan(sql: str) -> None:
        import sqlite3

        def run() -> None:
            db = sqlite3.connect(path)
            db.execute(sql).fetchall()
            db.close()

        await trio.to_thread.run_sync(run)

    rows = {"bulk insert and recount": f"{jobs / filled:,.0f} rows/s"}
    rows |= await page_latencies(f"sqlite:///{path}", scan, samples)
    report(f"sqlite: counts at {jobs:,} jobs", rows)


async def postgres_latencies(
    url: str, fresh: Callable[[], Backend], jobs: int, samples: int
) -> None:
    backend = fresh()
    assert isinstance(backend, PostgresBackend)
    assert backend.schema is not None
    settings = {"search_path": backend.schema}

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(url, server_settings=settings)

    async with trioforge.open_client(backend):  # migrates the schema
        pass
    conn = await trio_asyncio.aio_as_trio(connect)()
    try:
        t0 = time.perf_counter()
        await trio_asyncio.aio_as_trio(fill_postgres)(conn, jobs, time.time())
        filled = time.perf_counter() - t0

        async def scan(sql: str) -> None:
            await trio_asyncio.aio_as_trio(conn.fetch)(sql)

        rows = {"bulk insert and recount": f"{jobs / filled:,.0f} rows/s"}
        rows |= await page_latencies(PostgresBackend(url, schema=backend.schema), scan, samples)
        # A fold interval's worth of deltas from a busy drain: 5,000 statements' rows.
        await trio_asyncio.aio_as_trio(conn.execute)(
            "INSERT INTO trioforge_counts (queue, state, n) SELECT 'bench', "
            "(ARRAY['available', 'running', 'completed'])[1 + x % 3], 0 "
            "FROM generate_series(1, 15000) AS x"
        )
        async with trioforge.open_client(PostgresBackend(url, schema=backend.schema)) as client:
            pending = await timed(client.stats, samples)
        rows["stats(), 15,000 unfolded deltas p50 / p99 (ms)"] = ms(pending)
    finally:
        await trio_asyncio.aio_as_trio(conn.close)()
    report(f"postgres: counts at {jobs:,} jobs", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    add_postgres_url(parser)
    add_deadline(parser, 300)
    args = parser.parse_args()

    async def run() -> None:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            if args.backend in ("sqlite", "all"):
                await sqlite_latencies(tmp, args.rows, args.samples)
        if args.backend in ("postgres", "all"):
            async with postgres_schemas(args.postgres_url) as fresh, trio_asyncio.open_loop():
                await postgres_latencies(args.postgres_url, fresh, args.rows, args.samples)

    bounded("bench.counts", args.deadline, run)


if __name__ == "__main__":
    main()
