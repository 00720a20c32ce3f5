"""Throughput and latency of trioforge, no-op jobs, one process (`make bench`).

Reports, per backend: bulk enqueue rate, drain rate of N jobs with a 64-slot queue,
enqueue->start latency on an idle runtime, and in-process cancel latency (cancel call ->
the handler's scope cancelled); then the drain rate under flow control (a rate limit that
never binds; a concurrency limit of 1 over 1,000 keys) beside the unlimited drain, in
interleaved rounds (``--rounds``), with the load average; with ``--tracing``, the drain
with OpenTelemetry tracing off and on (the SDK, spans batched to an exporter that drops
them), interleaved likewise. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import trioforge
from bench.databases import add_postgres_url, postgres_databases
from bench.harness import add_deadline, bounded, pct, report
from trioforge import JobContext, Registry
from trioforge.storage import Backend, MemoryBackend

if TYPE_CHECKING:
    from trioforge.otel import Tracing


class Probe:
    """What the benchmark handlers report back."""

    def __init__(self) -> None:
        self.done = 0
        self.target = 0
        self.all_done = trio.Event()
        self.started_at = 0.0
        self.started = trio.Event()
        self.cancelled_at = 0.0
        self.cancelled = trio.Event()


PROBE = Probe()
registry = Registry()


@registry.job("noop", queue="bench")
async def noop(ctx: JobContext, n: int) -> None:
    PROBE.done += 1
    if PROBE.done == PROBE.target:
        PROBE.all_done.set()


@registry.job("mark", queue="latency")
async def mark(ctx: JobContext) -> None:
    PROBE.started_at = time.perf_counter()
    PROBE.started.set()


@registry.job("hang", queue="latency")
async def hang(ctx: JobContext) -> None:
    PROBE.started.set()
    try:
        await trio.sleep_forever()
    finally:
        PROBE.cancelled_at = time.perf_counter()
        PROBE.cancelled.set()


#: The same no-op job, with flow control that never holds it back (a separate registry
#: each: a registry whose jobs have limits claims through the flow-controlled path).
rated_registry = Registry()
keyed_registry = Registry()
NEVER_BINDS = trioforge.RateLimit("bench", rate=1e9, burst=1_000_000)
KEYS = trioforge.ConcurrencyLimit("key", 1, key=lambda n: n % 1000)
rated_noop = rated_registry.job("noop", queue="bench", rate_limit=NEVER_BINDS)(noop.handler)
keyed_noop = keyed_registry.job("noop", queue="bench", concurrency=KEYS)(noop.handler)


async def bulk_enqueue(database: Callable[[], Awaitable[str | Backend]], jobs: int) -> float:
    async with trioforge.open_client(await database()) as client:
        t0 = time.perf_counter()
        for start in range(0, jobs, 5000):
            await client.enqueue_many(noop, range(start, min(jobs, start + 5000)))
        return jobs / (time.perf_counter() - t0)


async def drain(
    database: Callable[[], Awaitable[str | Backend]],
    jobs: int,
    job: trioforge.JobDefinition[Any, Any] = noop,
    jobs_registry: Registry = registry,
    tracing: Tracing | None = None,
) -> float:
    global PROBE
    db = await database()
    async with trioforge.open_client(db, tracing=tracing) as client:
        for start in range(0, jobs, 5000):
            await client.enqueue_many(job, range(start, min(jobs, start + 5000)))
    PROBE = Probe()
    PROBE.target = jobs
    t0 = time.perf_counter()
    async with trioforge.open_runtime(
        jobs_registry, database=db, queues={"bench": 64}, tracing=tracing
    ) as rt:
        await PROBE.all_done.wait()
        elapsed = time.perf_counter() - t0
        del rt
    return jobs / elapsed


async def flow_drains(
    name: str, database: Callable[[], Awaitable[str | Backend]], jobs: int, rounds: int
) -> None:
    kinds: dict[str, tuple[trioforge.JobDefinition[Any, Any], Registry]] = {
        "unlimited": (noop, registry),
        "rate limit, never binding": (rated_noop, rated_registry),
        "1,000 concurrency keys (1 each)": (keyed_noop, keyed_registry),
    }
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    load = [os.getloadavg()[0]]
    for _ in range(rounds):
        for kind, (job, jobs_registry) in kinds.items():
            rates[kind].append(await drain(database, jobs, job, jobs_registry))
        load.append(os.getloadavg()[0])
    base = rates["unlimited"]
    rows = {}
    for kind, measured in rates.items():
        mean = statistics.mean(measured)
        runs = " / ".join(f"{r:,.0f}" for r in measured)
        # On a shared machine the load moves between rounds: each round's limited drain
        # against the unlimited one run beside it, and the median of those ratios.
        ratio = statistics.median(r / b for r, b in zip(measured, base, strict=True))
        rows[f"drain {jobs:,}, {kind}"] = (
            f"{mean:,.0f} jobs/s ({runs}; {mean / statistics.mean(base):.0%}, "
            f"median round {ratio:.0%})"
        )
    rows["load average (1 min) over the rounds"] = " / ".join(f"{x:.1f}" for x in load)
    report(f"{name}: flow control", rows)


async def tracing_drains(
    name: str, database: Callable[[], Awaitable[str | Backend]], jobs: int
) -> None:
    """The drain with tracing off and on: every job's context stored, a span per attempt."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from trioforge.otel import Tracing

    class Dropped(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    exporter = Dropped()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16))
    kinds: dict[str, Tracing | None] = {"tracing off": None, "tracing on (SDK)": Tracing(provider)}
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(2):
        for kind, tracing in kinds.items():
            rates[kind].append(await drain(database, jobs, tracing=tracing))
    provider.shutdown()
    base = statistics.mean(rates["tracing off"])
    rows = {}
    for kind, measured in rates.items():
        mean = statistics.mean(measured)
        runs = " / ".join(f"{r:,.0f}" for r in measured)
        rows[f"drain {jobs:,}, {kind}"] = f"{mean:,.0f} jobs/s ({runs}; {mean / base:.0%})"
    rows["spans exported"] = f"{exporter.spans:,}"
    report(f"{name}: tracing", rows)


async def enqueue_to_start(
    database: Callable[[], Awaitable[str | Backend]], samples: int
) -> list[float]:
    global PROBE
    out = []
    async with trioforge.open_runtime(
        registry, database=await database(), queues={"latency": 4}
    ) as rt:
        for _ in range(samples):
            PROBE = Probe()
            t0 = time.perf_counter()
            job_id = await rt.enqueue(mark)
            await PROBE.started.wait()
            out.append(PROBE.started_at - t0)
            await rt.wait(job_id)
    return out


async def cancel_latency(
    database: Callable[[], Awaitable[str | Backend]], samples: int
) -> list[float]:
    global PROBE
    out = []
    async with trioforge.open_runtime(
        registry, database=await database(), queues={"latency": 4}
    ) as rt:
        for _ in range(samples):
            PROBE = Probe()
            job_id = await rt.enqueue(hang)
            await PROBE.started.wait()
            t0 = time.perf_counter()
            await rt.cancel(job_id)
            await PROBE.cancelled.wait()
            out.append(PROBE.cancelled_at - t0)
            await rt.wait(job_id)
    return out


async def bench_backend(
    name: str, database: Callable[[], Awaitable[str | Backend]], jobs: int
) -> None:
    enq = await bulk_enqueue(database, jobs)
    rate = await drain(database, jobs)
    lat = await enqueue_to_start(database, 300)
    can = await cancel_latency(database, 200)
    ms = 1000.0
    rows = {
        "bulk enqueue (enqueue_many x5000)": f"{enq:,.0f} jobs/s",
        f"drain {jobs:,} jobs, 64 slots": f"{rate:,.0f} jobs/s",
        "idle enqueue->start p50 / p99 (ms)": f"{pct(lat, 0.5) * ms:.2f} / "
        f"{pct(lat, 0.99) * ms:.2f}",
        "cancel -> scope cancelled p50 / p99 (ms)": f"{pct(can, 0.5) * ms:.3f} / "
        f"{pct(can, 0.99) * ms:.3f}",
        "  (mean enqueue->start, ms)": f"{statistics.mean(lat) * ms:.2f}",
    }
    report(name, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "memory", "all"], default="all")
    parser.add_argument("--flow-only", action="store_true", help="only the flow-control drains")
    parser.add_argument(
        "--tracing", action="store_true", help="only the drains with tracing off and on"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds of the flow-control drains"
    )
    add_postgres_url(parser)
    add_deadline(parser, 300)
    args = parser.parse_args()

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            counter = iter(range(1_000_000))
            if args.backend in ("sqlite", "all"):

                async def sqlite() -> str:
                    return f"sqlite:///{Path(tmp) / f'bench{next(counter)}.db'}"

                if args.tracing:
                    await tracing_drains("sqlite", sqlite, args.jobs)
                else:
                    if not args.flow_only:
                        await bench_backend("sqlite (WAL file)", sqlite, args.jobs)
                    await flow_drains("sqlite", sqlite, args.jobs, args.rounds)
            if args.backend in ("postgres", "all"):
                async with postgres_databases(args.postgres_url) as fresh:

                    async def postgres() -> str:
                        return (await fresh())[0]

                    if args.tracing:
                        await tracing_drains("postgres", postgres, args.jobs)
                    else:
                        if not args.flow_only:
                            name = "postgres (asyncpg, trio-asyncio)"
                            await bench_backend(name, postgres, args.jobs)
                        await flow_drains("postgres", postgres, args.jobs, args.rounds)
            if args.backend in ("memory", "all") and not (args.flow_only or args.tracing):

                async def memory() -> Backend:
                    return MemoryBackend()  # shared by the client and the runtime of a run

                await bench_backend("memory (reference)", memory, args.jobs)

    bounded("bench.run", args.deadline, run)


if __name__ == "__main__":
    main()
