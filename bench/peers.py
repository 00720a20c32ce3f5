"""trioforge beside another job queue on the same workload, measured in one run (optional).

Drains N no-op jobs with attrs payloads, 64 slots, one process, on a SQLite file: trioforge
(64-slot queue) and huey's SQLite storage (64 worker threads), alternating rounds so both
see the same machine. Needs `pip install huey` in the virtualenv; not part of `make test`
or `make bench`, and skipped with a message when huey is missing. Figures are printed,
never asserted: `python -m bench.peers [--jobs N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import trio

import trioforge
from trioforge import JobContext, Registry


@attrs.frozen
class Item:
    n: int
    label: str


registry = Registry()


class Countdown:
    """Set once ``target`` jobs have run (from trio tasks or from worker threads)."""

    def __init__(self, target: int) -> None:
        self.left = target
        self.lock = threading.Lock()
        self.done = threading.Event()

    def tick(self) -> None:
        with self.lock:
            self.left -= 1
            if self.left == 0:
                self.done.set()


COUNTDOWN = Countdown(0)


@registry.job("peers:noop", queue="peers")
async def noop(ctx: JobContext, item: Item) -> None:
    COUNTDOWN.tick()


async def trioforge_drain(path: Path, jobs: int) -> float:
    global COUNTDOWN
    database = f"sqlite:///{path}"
    items = [Item(i, f"item-{i}") for i in range(jobs)]
    async with trioforge.open_client(database) as client:
        for start in range(0, jobs, 5000):
            await client.enqueue_many(noop, items[start : start + 5000])
    COUNTDOWN = Countdown(jobs)
    t0 = time.perf_counter()
    async with trioforge.open_runtime(registry, database=database, queues={"peers": 64}):
        while not COUNTDOWN.done.is_set():
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - t0
    return jobs / elapsed


def huey_drain(huey_module: Any, path: Path, jobs: int) -> float:
    huey = huey_module.SqliteHuey(filename=str(path), results=False)
    countdown = Countdown(jobs)

    @huey.task()  # type: ignore[untyped-decorator]
    def peer_noop(item: Item) -> None:
        countdown.tick()

    for i in range(jobs):
        peer_noop(Item(i, f"item-{i}"))
    consumer = huey.create_consumer(
        workers=64, worker_type="thread", periodic=False, initial_delay=0.001, max_delay=0.01
    )
    t0 = time.perf_counter()
    consumer.start()
    countdown.done.wait()
    elapsed = time.perf_counter() - t0
    consumer.stop(graceful=True)
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        huey_module = importlib.import_module("huey")
    except ImportError:
        print("huey is not installed (pip install huey): nothing to compare against")
        return
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            ours.append(trio.run(trioforge_drain, Path(tmp) / f"ours{round_}.db", args.jobs))
            theirs.append(huey_drain(huey_module, Path(tmp) / f"huey{round_}.db", args.jobs))
    print(f"\nsqlite, drain {args.jobs:,} no-op jobs (attrs payloads), 64 slots, one process")
    for name, rates in (("trioforge", ours), ("huey (SqliteHuey, 64 threads)", theirs)):
        print(
            f"  {name:34} median {statistics.median(rates):8,.0f} jobs/s"
            f"   (min {min(rates):,.0f}, max {max(rates):,.0f})"
        )
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    print(f"  {'trioforge / huey, per round':34} {', '.join(f'{r:.2f}x' for r in ratios)}")


if __name__ == "__main__":
    main()
