"""Live tracking across processes (`make bench` runs this after bench/replicas.py).

A worker process (`trioforge worker`) runs jobs that return the wall-clock time at which
they finished; a web process (`trioforge web`) serves their event streams. This process
measures, per backend, to ``client.wait(id)`` returning here and to the terminal
Server-Sent Event arriving here from the web process, from two instants: the job's end
(before the outcome writer picks its outcome up) and the outcome write (the job's
``finished_at``: the worker's clock when the writing batch started). In between: the
write, the change notice (PostgreSQL NOTIFY; SQLite's ``data_version``, read every 5 ms),
the live feed's re-read and the delivery. Times are wall-clock on one machine; figures
are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

import trioforge
from bench.databases import add_postgres_url, postgres_databases
from bench.harness import Child, add_deadline, bounded, pct, say
from bench.replica_jobs import late_stamp
from bench.replicas import ROOT, workers

#: How long each job runs: long enough for the watcher to be subscribed before it ends.
RUN_SECONDS = 0.05


@asynccontextmanager
async def web_process(url: str) -> AsyncIterator[str]:
    """A ``trioforge web`` process on ``url``: its base URL, once it serves."""
    env = {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "trioforge", "web", "--database", url, "--port", "0"]
    async with trio.open_nursery() as nursery:
        web = await Child.start(nursery, "web process", command, env)
        try:
            await web.wait_stderr(b"serving on ")
            found = re.search(rb"serving on (http://\S+)", web.stderr)
            assert found is not None
            yield found.group(1).decode()
        finally:
            with trio.CancelScope(shield=True):
                await web.stop()
            nursery.cancel_scope.cancel()


#: Per sample: (from the job's end, from the outcome write), in seconds.
Samples = list[tuple[float, float]]


async def waits(client: trioforge.Client, samples: int) -> Samples:
    out = []
    for _ in range(samples):
        job_id = await client.enqueue(late_stamp, RUN_SECONDS)
        info = await client.wait(job_id)
        now = time.time()
        if info.result is None or info.finished_at is None:
            raise RuntimeError(f"the job did not complete: {info}")
        out.append((now - info.result, now - info.finished_at))
    return out


async def streams(client: trioforge.Client, http: httpx.AsyncClient, samples: int) -> Samples:
    out = []
    for _ in range(samples):
        job_id = await client.enqueue(late_stamp, RUN_SECONDS)
        async with http.stream("GET", f"/api/jobs/{job_id}/events") as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"terminal":true' in line:
                    now, job = time.time(), json.loads(line[6:])
                    # The stream's times are ISO text to the millisecond.
                    finished = dt.datetime.fromisoformat(job["finished_at"]).timestamp()
                    out.append((now - job["result"], now - finished))
                    break
    return out


async def measure(url: str, samples: int, marks: Path) -> tuple[Samples, Samples]:
    async with (
        workers(url, 1, "latency=4", marks),
        web_process(url) as base,
        trioforge.open_client(url) as client,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        await waits(client, 5)  # warm-up: connections, the feed's listener
        return await waits(client, samples), await streams(client, http, samples)


def show(name: str, wait_s: Samples, sse_s: Samples) -> None:
    ms = 1000.0
    for what, values in (("wait()", wait_s), ("SSE via trioforge web", sse_s)):
        cells = []
        for i in (0, 1):
            column = [v[i] for v in values]
            cells.append(f"{pct(column, 0.5) * ms:.2f} / {pct(column, 0.99) * ms:.2f}")
        say(f"  {name:8} {what:23} {cells[0]:>16} {cells[1]:>20}")


async def main(url: str, samples: int) -> None:
    say(
        f"\nlive tracking across processes ({samples} samples), p50 / p99 in ms",
        f"  {'':32} {'from job end':>16} {'from outcome write':>20}",
    )
    with tempfile.TemporaryDirectory() as tmp:
        marks = Path(tmp)
        show("sqlite", *await measure(f"sqlite:///{marks / 'live.db'}", samples, marks))
        async with postgres_databases(url) as fresh:
            show("postgres", *await measure((await fresh())[0], samples, marks))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    add_postgres_url(parser)
    add_deadline(parser, 180)
    args = parser.parse_args()
    bounded("bench.live", args.deadline, lambda: main(args.postgres_url, args.samples))
