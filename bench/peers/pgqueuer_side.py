"""PgQueuer's side of the PostgreSQL rows, run by the peers' interpreter (see ``__init__.py``).

Set up as PgQueuer's documentation shows: its own schema installed (``Queries.install``,
what ``pgq install`` runs) into the fresh database the bench names, jobs enqueued through
``Queries.enqueue`` (lists: its batch form), and a ``QueueManager`` over an asyncpg
connection (``AsyncpgDriver``) with one entrypoint, at most 64 jobs at once and its default
batch size. Each job carries an attrs payload as JSON bytes, as trioforge's side does.

``drain``: prints ``{"ready": true}`` once set up, starts on a line on stdin, prints one
JSON line of figures, then waits for stdin to close; with ``--processes N``, N worker
processes drain while this one enqueues (with ``--trickle``, one job every ``--gap``
seconds; with ``--job-seconds S``, each job waits S seconds after reading its payload).
``latency``: a worker process (this
script, ``worker``: PgQueuer's default batch size, no cap) prints each job's start time;
jobs are enqueued one every ``--gap`` seconds and the enqueue -> start times are printed as
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import asyncpg
import attrs
from pgqueuer import AsyncpgDriver, Job, QueueManager  # type: ignore[import-not-found]
from pgqueuer.queries import Queries  # type: ignore[import-not-found]


@attrs.frozen
class Payload:
    n: int
    name: str
    amount: float


def encode(n: int, amount: float = 0.0) -> bytes:
    """Job ``n``'s payload, as trioforge's side makes it (``amount``: a job's wait, if any)."""
    return json.dumps(attrs.asdict(Payload(n, f"customer-{n}", amount or n * 0.25))).encode()


def emit(figures: dict[str, Any]) -> None:
    print(json.dumps(figures), flush=True)


async def stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def drain(args: argparse.Namespace) -> None:
    setup = await asyncpg.connect(args.dsn)
    await Queries(AsyncpgDriver(setup)).install()
    await setup.close()
    producer = await asyncpg.connect(args.dsn)
    consumer = await asyncpg.connect(args.dsn)
    queries = Queries(AsyncpgDriver(producer))
    qm = QueueManager(Queries(AsyncpgDriver(consumer)))
    done = asyncio.Event()
    ran = 0

    async def noop(job: Job) -> None:
        nonlocal ran
        assert job.payload is not None
        Payload(**json.loads(job.payload))
        ran += 1
        if ran == args.jobs:
            done.set()

    qm.entrypoint("noop")(noop)
    emit({"ready": True})
    await stdin_line()
    t0 = time.perf_counter()
    for start in range(0, args.jobs, 5000):
        batch = range(start, min(args.jobs, start + 5000))
        await queries.enqueue(["noop"] * len(batch), [encode(n) for n in batch], [0] * len(batch))
    t1 = time.perf_counter()
    worker = asyncio.create_task(
        qm.run(batch_size=args.batch_size, max_concurrent_tasks=args.slots)
    )
    waiting = asyncio.create_task(done.wait())
    await asyncio.wait([worker, waiting], return_when=asyncio.FIRST_COMPLETED)
    if worker.done():
        worker.result()
        raise RuntimeError(f"the QueueManager stopped after {ran} of {args.jobs} jobs")
    emit({"jobs": args.jobs, "enqueue_s": t1 - t0, "drain_s": time.perf_counter() - t1})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    qm.shutdown.set()
    await worker


async def drain_processes(args: argparse.Namespace) -> None:
    """``--processes`` worker processes (``drain-worker``), started and connected before
    "ready"; the clock runs from the first enqueue to an empty queue (jobs still queued or
    picked, polled every 20 ms)."""
    setup = await asyncpg.connect(args.dsn)
    await Queries(AsyncpgDriver(setup)).install()
    await setup.close()
    producer = await asyncpg.connect(args.dsn)
    queries = Queries(AsyncpgDriver(producer))
    command = [__file__, "drain-worker", "--dsn", args.dsn, "--slots", str(args.slots),
               "--job-seconds", str(args.job_seconds)]  # fmt: skip
    children = []
    try:
        for _ in range(args.processes):
            child = await asyncio.create_subprocess_exec(
                sys.executable, *command, stdout=subprocess.PIPE
            )
            children.append(child)
            assert child.stdout is not None
            if not await asyncio.wait_for(child.stdout.readline(), 60):
                raise RuntimeError("a worker process exited before it was connected")
        emit({"ready": True, "pids": [child.pid for child in children]})
        await stdin_line()
        t0 = time.perf_counter()
        if args.trickle:
            for n in range(args.jobs):
                await queries.enqueue("noop", encode(n, args.job_seconds))
                await asyncio.sleep(args.gap)
        for start in range(0, 0 if args.trickle else args.jobs, 5000):
            batch = range(start, min(args.jobs, start + 5000))
            entrypoints = ["noop"] * len(batch)
            payloads = [encode(n, args.job_seconds) for n in batch]
            await queries.enqueue(entrypoints, payloads, [0] * len(batch))
        t1 = time.perf_counter()
        while sum(row.count for row in await queries.queue_size()):
            await asyncio.sleep(0.02)
        emit({"jobs": args.jobs, "enqueue_s": t1 - t0, "drain_s": time.perf_counter() - t0})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        for child in children:
            if child.returncode is None:
                child.terminate()
            await child.wait()


async def drain_worker(args: argparse.Namespace) -> None:
    connection = await asyncpg.connect(args.dsn)
    qm = QueueManager(Queries(AsyncpgDriver(connection)))

    async def noop(job: Job) -> None:
        assert job.payload is not None
        Payload(**json.loads(job.payload))
        if args.job_seconds:
            await asyncio.sleep(args.job_seconds)

    qm.entrypoint("noop")(noop)
    print("connected", flush=True)
    await qm.run(batch_size=args.batch_size, max_concurrent_tasks=args.slots)


async def worker(args: argparse.Namespace) -> None:
    connection = await asyncpg.connect(args.dsn)
    qm = QueueManager(Queries(AsyncpgDriver(connection)))

    async def stamp(job: Job) -> None:
        started = time.time()
        assert job.payload is not None
        print(f"{Payload(**json.loads(job.payload)).n} {started!r}", flush=True)

    qm.entrypoint("stamp")(stamp)
    await qm.run()


async def latency(args: argparse.Namespace) -> None:
    setup = await asyncpg.connect(args.dsn)
    await Queries(AsyncpgDriver(setup)).install()
    await setup.close()
    connection = await asyncpg.connect(args.dsn)
    queries = Queries(AsyncpgDriver(connection))
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "worker", "--dsn", args.dsn, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    try:
        # Warm-up jobs, each awaited: the worker is listening, its connection ready.
        for n in range(-5, 0):
            await queries.enqueue("stamp", encode(n))
            if not await asyncio.wait_for(child.stdout.readline(), 60):
                raise RuntimeError("the worker exited before its warm-up jobs ran")
        sent: dict[int, float] = {}
        for n in range(args.samples):
            sent[n] = time.time()
            await queries.enqueue("stamp", encode(n))
            await asyncio.sleep(args.gap)
        started: dict[int, float] = {}
        while len(started) < args.samples:
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            if not line:
                raise RuntimeError(f"the worker exited after {len(started)} samples")
            number, at = line.split()
            started[int(number)] = float(at)
        emit({"latencies": [started[n] - sent[n] for n in range(args.samples)]})
    finally:
        if child.returncode is None:
            child.terminate()
        await child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["drain", "latency", "worker", "drain-worker"])
    parser.add_argument("--dsn", required=True, help="a fresh database of the bench")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=10, help="PgQueuer's default: 10")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.01)
    parser.add_argument("--processes", type=int, default=0, help="drain by worker processes")
    parser.add_argument(
        "--job-seconds", type=float, default=0.0, help="with --processes: each job's wait"
    )
    parser.add_argument(
        "--trickle", action="store_true", help="with --processes: one job every --gap seconds"
    )
    args = parser.parse_args()
    modes = {"drain": drain, "latency": latency, "worker": worker, "drain-worker": drain_worker}
    if args.mode == "drain" and args.processes:
        asyncio.run(drain_processes(args))
    else:
        asyncio.run(modes[args.mode](args))


if __name__ == "__main__":
    main()
