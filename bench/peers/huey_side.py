"""huey's side of the SQLite drain, run by the peers' interpreter (see ``__init__.py``).

Set up as huey's documentation shows: a ``SqliteHuey`` on a file, one task, and its
consumer with 64 thread workers (threads being huey's choice for I/O-bound tasks), started
in this process once the jobs are enqueued. Each job carries an attrs payload, as
trioforge's side does. Same line protocol as ``pgqueuer_side``'s ``drain``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time

import attrs
from huey import SqliteHuey  # type: ignore[import-not-found]


@attrs.frozen
class Payload:
    n: int
    name: str
    amount: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", required=True, help="the SQLite file (a fresh one)")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    huey = SqliteHuey("bench", filename=args.path)
    lock = threading.Lock()
    done = threading.Event()
    ran = [0]

    def noop(payload: Payload) -> None:
        with lock:
            ran[0] += 1
            if ran[0] == args.jobs:
                done.set()

    task = huey.task()(noop)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for n in range(args.jobs):
        task(Payload(n, f"customer-{n}", n * 0.25))
    t1 = time.perf_counter()
    consumer = huey.create_consumer(workers=args.workers, worker_type="thread", periodic=False)
    consumer.start()
    done.wait()
    t2 = time.perf_counter()
    figures = {"jobs": args.jobs, "enqueue_s": t1 - t0, "drain_s": t2 - t1}
    print(json.dumps(figures), flush=True)
    sys.stdin.read()
    consumer.stop(graceful=True)


if __name__ == "__main__":
    main()
