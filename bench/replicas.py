"""Cross-process figures (`make bench` runs this after bench/run.py).

Worker processes run `trioforge worker bench.replica_jobs:registry`; this process only
enqueues and cancels, as a web process would. Reported: enqueue->start latency from one
process to another (idle worker), cross-replica cancel latency (cancel call -> the handler's
`finally` in the other process), both on SQLite and PostgreSQL, and on SQLite the CPU per
job of the worker processes for a trickle (below) with 1, 3 and 6 of them; on PostgreSQL,
the drain rate of N no-op jobs with 1 and 3 worker processes, with the CPU per job of the
workers and their PostgreSQL backends (bench/cpu.py), and that CPU per job for a trickle
(one job every 10 ms, far below what one process can run) with 1, 3 and 6 idle worker
processes: what idle processes cost each job (an enqueue addresses its wake-up to one of
them; before that, every idle process heard each one and claimed). Times are wall-clock,
taken on one machine; each figure is printed as soon as it is measured, and the whole bench
stops at ``--deadline``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import trioforge
from bench.cpu import METHOD, Meter
from bench.databases import add_postgres_url, postgres_databases
from bench.harness import Child, add_deadline, bounded, pct, say
from bench.replica_jobs import hang, noop, stamp

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def workers(url: str, count: int, queue: str, marks: Path) -> AsyncIterator[list[Child]]:
    """``count`` worker processes (``trioforge worker``), each ready (it said so), stopped
    at the end; their stderr is drained all along and shown if one fails."""
    env = {"BENCH_MARKS": str(marks), "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "trioforge", "worker", "bench.replica_jobs:registry",
        "--database", url, "--queue", queue, "--log-level", "WARNING",
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        procs: list[Child] = []
        try:
            for i in range(count):
                procs.append(await Child.start(nursery, f"worker process {i + 1}", command, env))
                await procs[-1].wait_stderr(b"ready")
            yield procs
        finally:
            with trio.CancelScope(shield=True):
                for proc in procs:
                    await proc.stop()
            nursery.cancel_scope.cancel()


async def latencies(url: str, samples: int, marks: Path) -> tuple[list[float], list[float]]:
    async with workers(url, 1, "latency=4", marks), trioforge.open_client(url) as client:
        starts = []
        for _ in range(samples):
            t0 = time.time()
            job_id = (await client.enqueue(stamp)).id
            starts.append((job_id, t0))
            await trio.sleep(0.01)  # let the worker go idle: we measure an idle start
        enq = []
        for job_id, t0 in starts:
            enq.append((await client.wait(job_id)).result - t0)
        cancels = []
        for _ in range(samples // 2):
            job_id = (await client.enqueue(hang)).id
            started = marks / f"started-{job_id}"
            while not started.exists():  # another process: nothing to await but its mark
                await trio.sleep(0.001)
            t0 = time.time()
            await client.cancel(job_id)
            stopped = marks / f"stopped-{job_id}"
            while not stopped.exists():
                await trio.sleep(0.001)
            cancels.append(float(stopped.read_text()) - t0)
        return enq, cancels


async def drain(
    url: str, database: str, jobs: int, processes: int, marks: Path
) -> tuple[float, str]:
    """The drain of ``jobs`` no-ops by ``processes`` workers: jobs/s and CPU per job."""
    async with workers(url, processes, "bench=64", marks) as procs:
        meter = Meter([proc.proc.pid for proc in procs], database)
        async with trioforge.open_client(url) as client, trio.open_nursery() as nursery:
            meter.start()
            nursery.start_soon(meter.poll)
            t0 = time.perf_counter()
            ids = []
            for start in range(0, jobs, 5000):
                ids += await client.enqueue_many(noop, range(start, min(jobs, start + 5000)))
            await client.wait(ids[-1])
            while (await client.stats()).count("completed", queue="bench") < jobs:
                await trio.sleep(0.05)
            rate = jobs / (time.perf_counter() - t0)
            nursery.cancel_scope.cancel()
            return rate, meter.per_job(jobs)


async def trickle(url: str, database: str | None, jobs: int, processes: int, marks: Path) -> str:
    """CPU per job of ``jobs`` no-ops enqueued one at a time, every 10 ms, while
    ``processes`` workers wait for them."""
    async with workers(url, processes, "bench=64", marks) as procs:
        meter = Meter([proc.proc.pid for proc in procs], database)
        async with trioforge.open_client(url) as client, trio.open_nursery() as nursery:
            meter.start()
            nursery.start_soon(meter.poll)
            ids = []
            for n in range(jobs):
                ids.append((await client.enqueue(noop, n)).id)
                await trio.sleep(0.01)
            for job_id in ids:
                await client.wait(job_id)
            nursery.cancel_scope.cancel()
            return meter.per_job(jobs)


async def main(url: str, jobs: int, samples: int, trickled: int) -> None:
    ms = 1000.0

    def show(name: str, enq: list[float], cancels: list[float]) -> None:
        say(
            f"  {f'{name}: cross-process enqueue->start p50 / p99 (ms)':54} "
            f"{pct(enq, 0.5) * ms:.2f} / {pct(enq, 0.99) * ms:.2f}",
            f"  {f'{name}: cross-replica cancel p50 / p99 (ms)':54} "
            f"{pct(cancels, 0.5) * ms:.2f} / {pct(cancels, 0.99) * ms:.2f}",
        )

    say("\nacross processes (each figure as it comes; enqueue from this process)")
    with tempfile.TemporaryDirectory() as tmp:
        marks = Path(tmp)
        for name in ("sqlite", "postgres"):  # job ids repeat across databases: their marks too
            (marks / name).mkdir()
        sqlite = f"sqlite:///{marks / 'latency.db'}"
        show("sqlite", *await latencies(sqlite, samples, marks / "sqlite"))
        for processes in (1, 3, 6):  # what idle processes cost each job (one is addressed)
            sqlite = f"sqlite:///{marks / f'trickle-{processes}.db'}"
            cpu = await trickle(sqlite, None, trickled, processes, marks / "sqlite")
            say(
                f"  {f'sqlite: trickle of {trickled:,} jobs, {processes} process(es)':54} "
                f"CPU/job {cpu}"
            )
        async with postgres_databases(url) as fresh:
            show("postgres", *await latencies((await fresh())[0], samples, marks / "postgres"))
            rates = {}
            for processes in (1, 3):
                rates[processes], cpu = await drain(*await fresh(), jobs, processes, marks)
                ratio = f" ({rates[processes] / rates[1]:.2f}x)" if processes > 1 else ""
                say(
                    f"  {f'postgres: drain {jobs:,} jobs, {processes} worker process(es)':54} "
                    f"{rates[processes]:,.0f} jobs/s{ratio}, CPU/job {cpu}"
                )
            for processes in (1, 3, 6):
                cpu = await trickle(*await fresh(), trickled, processes, marks)
                say(
                    f"  {f'postgres: trickle of {trickled:,} jobs, {processes} process(es)':54} "
                    f"CPU/job {cpu}"
                )
    say(
        f"  ({METHOD}: the worker processes and every backend of the run's database, this "
        "process's enqueue and its completion polls every 50 ms included)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--trickle", type=int, default=300, help="jobs, one every 10 ms")
    add_postgres_url(parser)
    add_deadline(parser, 300)
    args = parser.parse_args()
    bounded(
        "bench.replicas",
        args.deadline,
        lambda: main(args.postgres_url, args.jobs, args.samples, args.trickle),
    )
