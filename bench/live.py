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
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import trio

import trioforge
from bench.replica_jobs import late_stamp
from bench.replicas import ROOT, start_workers, stop
from bench.run import add_postgres_url, drop_schemas, pct
from tests.support.postgres import create_schema

#: How long each job runs: long enough for the watcher to be subscribed before it ends.
RUN_SECONDS = 0.05


async def start_web(url: str) -> tuple[trio.Process, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "trioforge", "web", "--database", url, "--port", "0"]
    proc = await trio.lowlevel.open_process(command, env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = b""
    while (found := re.search(rb"serving on (http://\S+)", seen)) is None:
        chunk = await proc.stderr.receive_some()
        if not chunk:
            raise RuntimeError(f"web did not start: {seen.decode()}")
        seen += chunk
    return proc, found.group(1).decode()


#: Per sample: (from the job's end, from the outcome write), in seconds.
Samples = list[tuple[float, float]]


async def waits(client: trioforge.Client, samples: int) -> Samples:
    out = []
    for _ in range(samples):
        job_id = await client.enqueue(late_stamp, RUN_SECONDS)
        info = await client.wait(job_id)
        now = time.time()
        assert info.finished_at is not None
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
                    out.append((now - job["result"], now - job["finished_at"]))
                    break
    return out


async def measure(url: str, samples: int, marks: Path) -> tuple[Samples, Samples]:
    workers = await start_workers(url, 1, "latency=4", marks)
    web, base = await start_web(url)
    try:
        async with (
            trioforge.open_client(url) as client,
            httpx.AsyncClient(base_url=base, timeout=30) as http,
        ):
            await waits(client, 5)  # warm-up: connections, the feed's listener
            return await waits(client, samples), await streams(client, http, samples)
    finally:
        await stop([*workers, web])


async def main(url: str, samples: int) -> None:
    schemas: list[str] = []
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        marks = Path(tmp)
        results["sqlite"] = await measure(f"sqlite:///{marks / 'live.db'}", samples, marks)
        schemas.append(f"tf_bench_{uuid.uuid4().hex[:10]}")
        await create_schema(schemas[-1])
        try:
            results["postgres"] = await measure(f"{url}?search_path={schemas[-1]}", samples, marks)
        finally:
            await drop_schemas(url, schemas)
    ms = 1000.0
    print(f"\nlive tracking across processes ({samples} samples), p50 / p99 in ms")
    print(f"  {'':32} {'from job end':>16} {'from outcome write':>20}")
    for name, (wait_s, sse_s) in results.items():
        for what, values in (("wait()", wait_s), ("SSE via trioforge web", sse_s)):
            cells = []
            for i in (0, 1):
                column = [v[i] for v in values]
                cells.append(f"{pct(column, 0.5) * ms:.2f} / {pct(column, 0.99) * ms:.2f}")
            print(f"  {name:8} {what:23} {cells[0]:>16} {cells[1]:>20}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    add_postgres_url(parser)
    args = parser.parse_args()
    trio.run(main, args.postgres_url, args.samples)
