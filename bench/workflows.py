"""Workflow throughput, one process (`make bench`): steps/s and what a step costs beside a
plain job, and whether runs that sleep cost worker slots. Figures are printed, never
asserted.

* 1,000 runs of 10 trivial steps each, all enqueued at once, on a 64-slot queue, with the
  CPU per step (this process, and on PostgreSQL the database's backends: bench/cpu.py);
* the same queue draining 10,000 no-op jobs, for the per-job cost beside it;
* 10,000 runs (``--asleep``) asleep for an hour on a 4-slot queue, then 2,000 no-op jobs
  drained there, against the same drain with nothing asleep.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

import trioforge
from bench.cpu import Meter
from bench.databases import add_postgres_url, postgres_databases
from bench.harness import add_deadline, bounded, report
from trioforge import JobContext, Registry, WorkflowContext

STEPS = 10


class Counter:
    def __init__(self, target: int) -> None:
        self.done, self.target, self.all_done = 0, target, trio.Event()

    def tick(self) -> None:
        self.done += 1
        if self.done == self.target:
            self.all_done.set()


COUNTER = Counter(0)
registry = Registry()


def trivial(i: int) -> int:
    return i


@registry.workflow("ten_steps", queue="bench")
async def ten_steps(ctx: WorkflowContext, n: int) -> None:
    for i in range(STEPS):
        await ctx.step(f"s{i}", trivial, i)
    COUNTER.tick()


@registry.workflow("asleep", queue="bench")
async def asleep(ctx: WorkflowContext) -> None:
    await ctx.sleep(3600)


@registry.job("noop", queue="bench")
async def noop(ctx: JobContext, n: int) -> None:
    COUNTER.tick()


async def timed_drain(
    db: str,
    job: trioforge.JobDefinition[Any, Any],
    count: int,
    slots: int,
    meter: Meter | None = None,
) -> float:
    """Seconds for ``count`` runs (or jobs) of ``job``, enqueued beforehand, to finish;
    ``meter`` counts the CPU spent meanwhile (this process, and the PostgreSQL backends of
    the database, which the runtime opens after the start and keeps to the end)."""
    global COUNTER
    async with trioforge.open_client(db, registry=registry) as client:
        for start in range(0, count, 5000):
            await client.enqueue_many(job, range(start, min(count, start + 5000)))
    COUNTER = Counter(count)
    if meter is not None:
        meter.start()  # read at the start and the end only: a poll here would cost CPU here
    t0 = time.perf_counter()
    async with trioforge.open_runtime(registry, database=db, queues={"bench": slots}):
        await COUNTER.all_done.wait()
        seconds = time.perf_counter() - t0
        if meter is not None:
            meter.used()  # while the runtime's connections are still open
    return seconds


async def asleep_then_drain(db: str, sleepers: int, jobs: int) -> float:
    """Jobs/s draining ``jobs`` no-ops on 4 slots while ``sleepers`` runs are asleep."""
    global COUNTER
    async with trioforge.open_client(db, registry=registry) as client:
        for start in range(0, sleepers, 5000):
            await client.enqueue_many(asleep, [None] * min(5000, sleepers - start))
    async with trioforge.open_runtime(registry, database=db, queues={"bench": 4}) as rt:
        with trio.fail_after(600):
            while (await rt.stats()).count("scheduled") < sleepers:
                await trio.sleep(0.1)  # every run has reached its sleep
        COUNTER = Counter(jobs)
        t0 = time.perf_counter()
        await rt.enqueue_many(noop, range(jobs))
        await COUNTER.all_done.wait()
        return jobs / (time.perf_counter() - t0)


async def bench_backend(
    name: str,
    database: Callable[[], Awaitable[tuple[str, str | None]]],
    runs: int,
    sleepers: int,
) -> None:
    url, db_name = await database()
    meter = Meter([os.getpid()], db_name)
    steps = await timed_drain(url, ten_steps, runs, 64, meter)
    cpu = meter.per_job(runs * STEPS)
    plain = await timed_drain((await database())[0], noop, runs * STEPS, 64)
    idle = await asleep_then_drain((await database())[0], 0, 2000)
    busy = await asleep_then_drain((await database())[0], sleepers, 2000)
    total = runs * STEPS
    report(
        name,
        {
            f"{runs:,} runs x {STEPS} steps, 64 slots": f"{total / steps:,.0f} steps/s",
            "  per step / per plain job (us)": f"{steps / total * 1e6:,.0f} / "
            f"{plain / total * 1e6:,.0f}",
            "  CPU per step": cpu,
            f"drain {total:,} plain jobs, 64 slots": f"{total / plain:,.0f} jobs/s",
            "2,000 jobs on 4 slots, nothing asleep": f"{idle:,.0f} jobs/s",
            f"  the same beside {sleepers:,} runs asleep": f"{busy:,.0f} jobs/s",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--asleep", type=int, default=10_000, help="runs asleep beside a drain")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    add_postgres_url(parser)
    add_deadline(parser, 600)
    args = parser.parse_args()

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            counter = iter(range(1_000_000))
            if args.backend in ("sqlite", "all"):

                async def sqlite() -> tuple[str, str | None]:
                    return f"sqlite:///{Path(tmp) / f'wf{next(counter)}.db'}", None

                await bench_backend(
                    "workflows on sqlite (WAL file)", sqlite, args.runs, args.asleep
                )
            if args.backend in ("postgres", "all"):
                async with postgres_databases(args.postgres_url) as fresh:

                    async def postgres() -> tuple[str, str | None]:
                        return await fresh()

                    await bench_backend("workflows on postgres", postgres, args.runs, args.asleep)

    bounded("bench.workflows", args.deadline, run)


if __name__ == "__main__":
    main()
