"""trioforge's side of the table's pairs, in a process of its own like each peer's.

``drain``: N no-op jobs with attrs payloads (``enqueue_many`` by 5,000), then a runtime with
one 64-slot queue drains them; the client stays open through the drain, so every database
connection is still there when the bench reads its CPU time. Same line protocol as the
peers' drivers (``bench/peers``): ``{"ready": true}`` once the schema is in place, a line
on stdin starts it, one JSON line of figures, then it waits for stdin to close.

``wide``: N jobs that each sleep (I/O-bound), as many slots as jobs, on SQLite: the wall
time and this process's CPU time (all its threads) from the runtime's start to the last
job's end, the peak RSS of
this process beside its RSS before the runtime started, and the garbage collector's passes
per generation and their time. ``--worker-heap`` first settles the heap as ``trioforge
worker`` does once ready (collect, freeze, its collector thresholds).

``drain --processes N``: N ``trioforge worker`` processes drain while this one enqueues;
with ``--gap S``, one job at a time, every S seconds (a trickle: what idle processes cost);
with ``--job-seconds S``, each job sleeps S seconds (I/O-bound: what more processes buy
when the jobs, not the CPU, are the bound).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio

import trioforge
from bench.harness import Child


@attrs.frozen
class Payload:
    n: int
    name: str
    amount: float


class Count:
    """Jobs run so far, and the moment the last one ran; for I/O-bound jobs, the most that
    were running at once."""

    def __init__(self) -> None:
        self.ran = 0
        self.target = 0
        self.all_done = trio.Event()
        self.running = 0
        self.most_at_once = 0
        self.first_start = self.last_start = 0.0  # perf_counter() at the first and last start

    def one(self) -> None:
        self.ran += 1
        if self.ran == self.target:
            self.all_done.set()


COUNT = Count()
registry = trioforge.Registry()


@registry.job("bench:order", queue="bench")
async def order(ctx: trioforge.JobContext, payload: Payload) -> None:
    COUNT.one()


@registry.job("bench:wait", queue="bench")
async def wait(ctx: trioforge.JobContext, payload: Payload) -> None:
    """The no-op job's payload and queue, for a job that waits ``amount`` seconds (I/O)."""
    await trio.sleep(payload.amount)


@registry.job("bench:io", queue="wide")
async def io_bound(ctx: trioforge.JobContext, seconds: float) -> None:
    COUNT.running += 1
    COUNT.last_start = time.perf_counter()
    COUNT.first_start = COUNT.first_start or COUNT.last_start
    COUNT.most_at_once = max(COUNT.most_at_once, COUNT.running)
    await trio.sleep(seconds)
    COUNT.running -= 1
    COUNT.one()


def emit(figures: dict[str, Any]) -> None:
    print(json.dumps(figures), flush=True)


def rss_kib() -> int:
    """The resident set now (``/proc/self/statm``), in KiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() // 1024


async def drain(url: str, jobs: int, slots: int) -> None:
    async with trioforge.open_client(url):
        pass  # creates the schema before the measured part
    emit({"ready": True})
    await trio.to_thread.run_sync(sys.stdin.readline)
    COUNT.target = jobs
    async with trioforge.open_client(url) as client:
        t0 = time.perf_counter()
        for start in range(0, jobs, 5000):
            batch = range(start, min(jobs, start + 5000))
            await client.enqueue_many(order, [Payload(n, f"customer-{n}", n * 0.25) for n in batch])
        t1 = time.perf_counter()
        async with trioforge.open_runtime(registry, database=url, queues={"bench": slots}):
            await COUNT.all_done.wait()
            emit({"jobs": jobs, "enqueue_s": t1 - t0, "drain_s": time.perf_counter() - t1})
            await trio.to_thread.run_sync(sys.stdin.read)


async def drain_processes(
    url: str, jobs: int, slots: int, processes: int, gap: float, job_seconds: float
) -> None:
    """``processes`` worker processes (``trioforge worker``), ready before "ready"; the clock
    runs from the first enqueue to the last completion (counts polled every 20 ms). Jobs go
    by 5,000, or one every ``gap`` seconds if it is set; each waits ``job_seconds`` (0: a
    no-op)."""
    job = wait if job_seconds else order
    async with trioforge.open_client(url):
        pass  # creates the schema before the workers and the measured part
    command = [
        sys.executable, "-m", "trioforge", "worker", "bench.trioforge_side:registry",
        "--database", url, "--queue", f"bench={slots}", "--log-level", "WARNING",
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        children = []
        try:
            for i in range(processes):
                children.append(await Child.start(nursery, f"worker process {i + 1}", command))
                await children[-1].wait_stderr(b"ready")
            emit({"ready": True, "pids": [child.proc.pid for child in children]})
            await trio.to_thread.run_sync(sys.stdin.readline)
            async with trioforge.open_client(url) as client:
                t0 = time.perf_counter()
                for start in range(0, jobs, 1 if gap else 5000):
                    batch = range(start, min(jobs, start + 5000))
                    payloads = [Payload(n, f"customer-{n}", job_seconds or n * 0.25) for n in batch]
                    if gap:
                        await client.enqueue(job, payloads[0])
                        await trio.sleep(gap)
                    else:
                        await client.enqueue_many(job, payloads)
                t1 = time.perf_counter()
                while (await client.stats()).count("completed", queue="bench") < jobs:
                    await trio.sleep(0.02)
                emit({"jobs": jobs, "enqueue_s": t1 - t0, "drain_s": time.perf_counter() - t0})
                await trio.to_thread.run_sync(sys.stdin.read)
        finally:
            with trio.CancelScope(shield=True):
                for child in children:
                    await child.stop()
            nursery.cancel_scope.cancel()


class Collections:
    """The garbage collector's passes per generation and their time, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.seconds = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.passes[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._began


async def wide(url: str, jobs: int, seconds: float, worker_heap: bool) -> None:
    COUNT.target = jobs
    async with trioforge.open_client(url) as client:
        for start in range(0, jobs, 5000):
            await client.enqueue_many(
                io_bound, [seconds] * len(range(start, min(jobs, start + 5000)))
            )
    if worker_heap:
        from trioforge._cli_worker import settle_heap

        settle_heap()
    collections = Collections()
    gc.callbacks.append(collections)
    before = rss_kib()
    t0, cpu0 = time.perf_counter(), cpu_s()
    async with trioforge.open_runtime(registry, database=url, queues={"wide": jobs}):
        await COUNT.all_done.wait()
        elapsed, cpu = time.perf_counter() - t0, cpu_s() - cpu0
    gc.callbacks.remove(collections)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emit({"jobs": jobs, "sleep_s": seconds, "wall_s": elapsed,
          "first_start_s": COUNT.first_start - t0, "last_start_s": COUNT.last_start - t0,
          "cpu_s": cpu, "at_once": COUNT.most_at_once, "rss_before_kib": before,
          "rss_peak_kib": peak, "worker_heap": worker_heap, "gc_passes": collections.passes,
          "gc_s": collections.seconds})  # fmt: skip


def cpu_s() -> float:
    """User + system time of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["drain", "wide"])
    parser.add_argument("--database", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--sleep", type=float, default=2.0, help="each wide job's sleep")
    parser.add_argument("--processes", type=int, default=0, help="drain by worker processes")
    parser.add_argument("--gap", type=float, default=0.0, help="with --processes: a trickle")
    parser.add_argument(
        "--job-seconds", type=float, default=0.0, help="with --processes: each job's wait"
    )
    parser.add_argument(
        "--worker-heap", action="store_true", help="wide: settle the heap as the worker does"
    )
    args = parser.parse_args()
    if args.mode == "drain" and args.processes:
        trio.run(
            drain_processes, args.database, args.jobs, args.slots, args.processes, args.gap,
            args.job_seconds,
        )  # fmt: skip
    elif args.mode == "drain":
        trio.run(drain, args.database, args.jobs, args.slots)
    else:
        trio.run(wide, args.database, args.jobs, args.sleep, args.worker_heap)


if __name__ == "__main__":
    main()
