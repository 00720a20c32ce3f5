"""The dashboard's workflow reads on a big table (`make bench`): 1,000,000 jobs, one in a
thousand a workflow run with three recorded steps, written by SQL in one statement (the
point is the reads, not the writes). Times each filter of the workflows page (its runs
and their current steps, as the page reads them), a deep page, and a run's record, on
SQLite and PostgreSQL; medians of five, printed, never asserted. ``--plans`` prints the
query plans too.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import trio_asyncio

import trioforge
from bench.databases import add_postgres_url, postgres_schemas
from bench.harness import add_deadline, bounded, report
from trioforge.storage import Backend, opened
from trioforge.storage.postgres import PostgresBackend
from trioforge.storage.sqlite import SQLiteBackend

#: One job in RUN_EVERY is a run: of "verify" (versions 1 and 2) or, one in three, "rare".
RUN_EVERY = 1000

_JOBS = """
INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, max_attempts, created_at,
    status, attempt, started_at, finished_at, workflow)
SELECT CASE WHEN i % {every} <> 0 THEN 'plain'
            WHEN i % ({every} * 3) = 0 THEN 'rare@v1'
            WHEN i % ({every} * 2) = 0 THEN 'verify@v2' ELSE 'verify@v1' END,
    'q', '{{}}', 10, i, 3, i,
    CASE WHEN i % {every} = 0 AND i % ({every} * 7) = 0 THEN 'scheduled'
         WHEN i % 997 = 0 THEN 'dead' ELSE 'completed' END,
    1, i, i + 1, i % {every} = 0
FROM {series}
"""
_STEPS = """
INSERT INTO trioforge_workflow_steps (run_id, seq, kind, name, status, attempt, result, error,
    wake_at, compensable, started_at, finished_at)
SELECT j.id, s.seq, 'step', 'step-' || s.seq, 'completed', 1, '"r"', NULL, NULL, {false},
    j.created_at, j.created_at + 1
FROM trioforge_jobs AS j CROSS JOIN (SELECT 0 AS seq UNION ALL SELECT 1 UNION ALL SELECT 2) AS s
WHERE j.workflow
"""

PAGES: dict[str, dict[str, Any]] = {
    "runs, newest": {},
    "runs, page at id 500,000": {"before": 500_000},
    "runs, completed": {"status": "completed"},
    "runs, scheduled": {"status": "scheduled"},
    "runs, dead (none)": {"status": "dead"},
    "runs of verify (every version)": {"name": "verify"},
    "runs of rare (every version)": {"name": "rare"},
    "runs of verify@v2": {"name": "verify@v2"},
}

_PLANS = {
    "runs": "SELECT id FROM trioforge_jobs WHERE {runs} ORDER BY id DESC LIMIT 50",
    "completed runs": "SELECT id FROM trioforge_jobs WHERE status = 'completed' AND {runs} "
    "ORDER BY id DESC LIMIT 50",
    "runs of one version": "SELECT id FROM trioforge_jobs WHERE name = 'verify@v2' AND {runs} "
    "ORDER BY id DESC LIMIT 50",
}


def seed_sqlite(path: Path, jobs: int) -> None:
    db = sqlite3.connect(path)
    series = (
        "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
        f"WHERE i < {int(jobs)}) SELECT i FROM c)"
    )
    with db:
        db.execute(_JOBS.format(every=RUN_EVERY, series=series))
        db.execute(_STEPS.format(false=0))
        db.execute("ANALYZE")
    db.close()


async def seed_postgres(backend: PostgresBackend, jobs: int) -> None:
    async def seed() -> None:
        conn = await asyncpg.connect(
            backend.url, server_settings={"search_path": str(backend.schema)}
        )
        try:
            await conn.execute(
                _JOBS.format(every=RUN_EVERY, series=f"generate_series(1, {int(jobs)}) AS i")
            )
            await conn.execute(_STEPS.format(false="FALSE"))
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    await trio_asyncio.aio_as_trio(seed)()


async def time_pages(name: str, database: str | Backend) -> None:
    rows: dict[str, str] = {}
    async with trioforge.open_client(database) as client:
        first = (await client.runs(limit=1))[0].id
        for label, filters in PAGES.items():
            times, found = [], 0
            for _ in range(5):
                start = time.perf_counter()
                runs = await client.runs(limit=50, **filters)
                await client.current_steps(r.id for r in runs)
                times.append(time.perf_counter() - start)
                found = len(runs)
            rows[label] = f"{1000 * statistics.median(times):.1f} ms ({found} runs)"
        times = []
        for _ in range(5):
            start = time.perf_counter()
            await client.workflow(first)
            times.append(time.perf_counter() - start)
        rows["a run's record"] = f"{1000 * statistics.median(times):.1f} ms"
    report(name, rows)


def sqlite_plans(path: Path) -> None:
    db = sqlite3.connect(path)
    for label, sql in _PLANS.items():
        plan = db.execute("EXPLAIN QUERY PLAN " + sql.format(runs="workflow = 1")).fetchall()
        print(f"  sqlite plan, {label}: {'; '.join(row[-1] for row in plan)}")
    db.close()


async def postgres_plans(backend: PostgresBackend) -> None:
    async def explain() -> None:
        conn = await asyncpg.connect(
            backend.url, server_settings={"search_path": str(backend.schema)}
        )
        try:
            for label, sql in _PLANS.items():
                plan = await conn.fetch("EXPLAIN " + sql.format(runs="workflow"))
                print(f"  postgres plan, {label}: {'; '.join(r[0].strip() for r in plan[:2])}")
        finally:
            await conn.close()

    await trio_asyncio.aio_as_trio(explain)()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--plans", action="store_true", help="print the query plans")
    add_postgres_url(parser)
    add_deadline(parser, 300)
    args = parser.parse_args()

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            if args.backend in ("sqlite", "all"):
                path = Path(tmp) / "dashboard.db"
                async with opened(SQLiteBackend(path)):
                    pass
                seed_sqlite(path, args.jobs)
                if args.plans:
                    sqlite_plans(path)
                await time_pages(f"sqlite, {args.jobs:,} jobs", f"sqlite:///{path}")
        if args.backend in ("postgres", "all"):
            async with trio_asyncio.open_loop(), postgres_schemas(args.postgres_url) as make:
                backend = make()
                assert isinstance(backend, PostgresBackend)
                async with opened(backend):
                    pass
                await seed_postgres(backend, args.jobs)
                if args.plans:
                    await postgres_plans(backend)
                await time_pages(f"postgres, {args.jobs:,} jobs", backend)

    bounded("bench.dashboard", args.deadline, run)


if __name__ == "__main__":
    main()
