"""Cross-process figures on PostgreSQL (`make bench` runs this after bench/run.py).

Worker processes run `trioforge worker bench.replica_jobs:registry`; this process only
enqueues and cancels, as a web process would. Reported: enqueue->start latency from one
process to another (idle worker), cross-replica cancel latency (cancel call -> the handler's
`finally` in the other process), and the drain rate of N no-op jobs with 1 and 3 worker
processes. Times are wall-clock, taken on one machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

import trioforge
from bench.replica_jobs import hang, noop, stamp
from bench.run import add_postgres_url, drop_schemas, pct
from tests.support.postgres import create_schema

ROOT = Path(__file__).resolve().parent.parent


async def start_workers(url: str, count: int, queue: str, marks: Path) -> list[trio.Process]:
    env = {**os.environ, "BENCH_MARKS": str(marks), "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "trioforge", "worker", "bench.replica_jobs:registry",
        "--database", url, "--queue", queue, "--log-level", "WARNING",
    ]  # fmt: skip
    procs = []
    for _ in range(count):
        proc = await trio.lowlevel.open_process(command, env=env, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        seen = b""
        while b"ready" not in seen:
            chunk = await proc.stderr.receive_some()
            if not chunk:
                raise RuntimeError(f"worker did not start: {seen.decode()}")
            seen += chunk
        procs.append(proc)
    return procs


async def stop(procs: list[trio.Process]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        await proc.wait()


async def latencies(url: str, samples: int, marks: Path) -> tuple[list[float], list[float]]:
    procs = await start_workers(url, 1, "latency=4", marks)
    try:
        async with trioforge.open_client(url) as client:
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
    finally:
        await stop(procs)


async def drain(url: str, jobs: int, processes: int, marks: Path) -> float:
    procs = await start_workers(url, processes, "bench=64", marks)
    try:
        async with trioforge.open_client(url) as client:
            t0 = time.perf_counter()
            ids = []
            for start in range(0, jobs, 5000):
                ids += await client.enqueue_many(noop, range(start, min(jobs, start + 5000)))
            await client.wait(ids[-1])
            while (await client.stats()).count("completed", queue="bench") < jobs:
                await trio.sleep(0.01)
            return jobs / (time.perf_counter() - t0)
    finally:
        await stop(procs)


async def main(url: str, jobs: int, samples: int) -> None:
    schemas = []

    async def fresh() -> str:
        schemas.append(f"tf_bench_{uuid.uuid4().hex[:10]}")
        await create_schema(schemas[-1])
        return f"{url}?search_path={schemas[-1]}"

    with tempfile.TemporaryDirectory() as tmp:
        marks = Path(tmp)
        try:
            enq, cancels = await latencies(await fresh(), samples, marks)
            one = await drain(await fresh(), jobs, 1, marks)
            three = await drain(await fresh(), jobs, 3, marks)
        finally:
            await drop_schemas(url, schemas)
    ms = 1000.0
    rows = {
        "cross-process enqueue->start p50 / p99 (ms)": f"{pct(enq, 0.5) * ms:.2f} / "
        f"{pct(enq, 0.99) * ms:.2f}",
        "cross-replica cancel p50 / p99 (ms)": f"{pct(cancels, 0.5) * ms:.2f} / "
        f"{pct(cancels, 0.99) * ms:.2f}",
        f"drain {jobs:,} jobs, 1 worker process": f"{one:,.0f} jobs/s",
        f"drain {jobs:,} jobs, 3 worker processes": f"{three:,.0f} jobs/s ({three / one:.2f}x)",
    }
    print("\npostgres, across processes")
    for key, value in rows.items():
        print(f"  {key:44} {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=200)
    add_postgres_url(parser)
    args = parser.parse_args()
    trio.run(main, args.postgres_url, args.jobs, args.samples)
