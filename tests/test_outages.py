"""Real databases going away under load: no outcome lost, nothing run twice, a short stall.

SQLite: another process holds the write lock for longer than the busy timeout while jobs
finish. PostgreSQL: the server itself restarts (about a second of downtime) while three
worker processes drain thousands of jobs. In both, every outcome written during the fault
is retried while its lease holds, so no job is rescued and none runs a second time.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

import trioforge
from tests.support.postgres import require_postgres, schema_url
from trioforge import JobContext, JobState, Registry
from trioforge.storage.sqlite import SQLiteBackend

# --- SQLite: a writer holding the lock past the busy timeout ----------------------------

BUSY_TIMEOUT = 0.2
LOCK_HELD = 5 * BUSY_TIMEOUT  # several failed tries of every write, well within the lease


async def test_sqlite_outcomes_wait_out_a_writer_holding_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    registry = Registry()
    started: dict[int, int] = {}
    ended: dict[int, float] = {}
    running = trio.Event()
    finish = trio.Event()
    workers = 4

    @registry.job("work")
    async def work(ctx: JobContext, n: int) -> None:
        started[n] = started.get(n, 0) + 1
        if len(started) == workers:
            running.set()
        await finish.wait()
        ended[n] = time.time()

    backend = SQLiteBackend(path, busy_timeout=BUSY_TIMEOUT)
    async with trioforge.open_runtime(
        registry,
        database=backend,
        queues={"default": workers},
        heartbeat_interval=0.1,
        lease_seconds=10.0,
        poll_interval=0.1,
    ) as rt:
        ids = [await rt.enqueue(work, n) for n in range(3 * workers)]
        with trio.fail_after(30):
            await running.wait()
            # Another process takes the write lock; the running jobs finish meanwhile.
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            finish.set()
            await trio.sleep(LOCK_HELD)  # the fault's length, not a synchronisation
            released = time.time()
            other.execute("COMMIT")
            other.close()
            finals = [await rt.wait(job_id) for job_id in ids]

    assert [(f.status, f.attempt) for f in finals] == [(JobState.COMPLETED, 1)] * len(ids)
    assert started == dict.fromkeys(range(len(ids)), 1)  # nothing ran twice
    # The first jobs ended while the lock was held: their outcomes landed by the write
    # that got the lock (its time is read when it starts waiting for the lock).
    first = [f for f in finals if f.payload in range(workers)]
    assert all(ended[f.payload] < released for f in first)
    assert all(f.finished_at and f.finished_at >= released - BUSY_TIMEOUT for f in first)


# --- PostgreSQL: the server restarts while three workers drain ----------------------------

WORKER_MODULE = """
import os
import time

import trio
import trioforge

registry = trioforge.Registry()
EFFECTS = os.environ["EFFECTS_FILE"]


@registry.job("effect")
async def effect(ctx: trioforge.JobContext, n: int) -> None:
    # The side effect goes to a local file: it must not depend on the database.
    started = time.time()
    await trio.sleep(0.01)
    await ctx.progress(50, "halfway")  # best effort: a restart must not fail the attempt
    await trio.sleep(0.01)
    with open(EFFECTS, "a") as out:
        out.write(f"{n} {ctx.attempt} {started}\\n")
"""

JOBS = 3000
POLL = 1.0


def restart_command() -> list[str]:
    """The command that restarts the local server, or a skip (a failure in CI) without."""
    require_postgres()
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if shutil.which("pg_ctlcluster") and versions:
        return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"]
    message = "restarting PostgreSQL needs pg_ctlcluster and a local cluster"
    if os.environ.get("TRIOFORGE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{message}, and TRIOFORGE_REQUIRE_POSTGRES=1 says it must run")
    pytest.skip(message)


def effects(folder: Path) -> list[tuple[int, int, float]]:
    """(job number, attempt, start time) of every side effect, from every worker."""
    rows = []
    for path in folder.glob("effects-*.txt"):
        for line in path.read_text().splitlines():
            n, attempt, started = line.split()
            rows.append((int(n), int(attempt), float(started)))
    return rows


async def until(predicate: Callable[[], bool]) -> None:
    """Poll another process's observable state (there is no event to wait on), bounded by
    the caller's deadline."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.02)


async def enqueue_all(url: str, name: str, payloads: range) -> list[int]:
    job = Registry().job(name)(_enqueue_only)
    async with trioforge.open_client(url) as client:
        return [handle.id for handle in await client.enqueue_many(job, payloads)]


async def _enqueue_only(ctx: JobContext, n: int) -> None:
    """Stands in for the workers' handler: this process only enqueues."""


@pytest.mark.slow
async def test_postgres_restart_under_load_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path,
) -> None:
    restart = restart_command()
    (tmp_path / "outage_jobs.py").write_text(WORKER_MODULE)
    async with schema_url() as url:
        ids = await enqueue_all(url, "effect", range(JOBS))
        command = [
            sys.executable, "-m", "trioforge", "worker", "outage_jobs:registry", "--database",
            url, "--queue", "default=4", "--lease-seconds", "15", "--heartbeat-interval",
            "0.5", "--poll-interval", str(POLL),
        ]  # fmt: skip
        logs = [(tmp_path / f"worker{i}.log").open("wb") for i in range(3)]
        workers = [
            await trio.lowlevel.open_process(
                command,
                cwd=tmp_path,
                stdout=log,
                stderr=log,
                env={**os.environ, "EFFECTS_FILE": str(tmp_path / f"effects-{i}.txt")},
            )
            for i, log in enumerate(logs)
        ]
        try:
            with trio.fail_after(120):
                await until(lambda: len(effects(tmp_path)) >= JOBS // 5)
                down = time.time()
                await trio.to_thread.run_sync(
                    lambda: subprocess.run(restart, check=True, capture_output=True)
                )
                up = time.time()
                assert len(effects(tmp_path)) < JOBS, "the restart must land mid-drain"
                await until(lambda: len(effects(tmp_path)) >= JOBS)
                # Wake-ups cross processes again within milliseconds: the listening
                # connections are back (polling alone would take about POLL / 2).
                latencies = []
                job = Registry().job("effect")(_enqueue_only)
                async with trioforge.open_client(url) as client:
                    for n in range(JOBS, JOBS + 10):
                        before = len(effects(tmp_path))
                        enqueued = time.time()
                        await client.enqueue(job, n)
                        await until(lambda: len(effects(tmp_path)) > before)  # noqa: B023
                        latencies.append(max(r[2] for r in effects(tmp_path)) - enqueued)
                    finals = [await client.wait(job_id) for job_id in ids]
        finally:
            for proc in workers:
                proc.terminate()
            with trio.fail_after(60):
                for proc in workers:
                    await proc.wait()
            for log in logs:
                log.close()

    rows = effects(tmp_path)
    runs: dict[int, int] = {}
    for n, _, _ in rows:
        runs[n] = runs.get(n, 0) + 1
    assert sorted(runs) == list(range(JOBS + 10))  # nothing lost
    twice = sorted(r for r in rows if runs[r[0]] != 1)  # (job, attempt, start) of each run
    assert {n: c for n, c in runs.items() if c != 1} == {}, twice  # nothing ran twice
    assert {(f.status, f.attempt) for f in finals} == {(JobState.COMPLETED, 1)}  # no rescue
    # The stall: the longest pause between job starts, at most the downtime plus one poll
    # interval (claims failed meanwhile and are retried on the poll interval).
    starts = sorted(r[2] for r in rows if r[0] < JOBS)
    stall = max(b - a for a, b in itertools.pairwise(starts))
    assert stall <= (up - down) + POLL + 0.5, (stall, up - down)
    assert statistics.median(latencies) < POLL / 5, latencies
