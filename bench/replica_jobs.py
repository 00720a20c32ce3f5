"""Jobs run by the worker processes of bench/replicas.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

import trioforge

registry = trioforge.Registry()
MARKS = Path(os.environ.get("BENCH_MARKS", "."))


@registry.job("bench:noop", queue="bench")
async def noop(ctx: trioforge.JobContext, n: int) -> None:
    pass


@registry.job("bench:stamp", queue="latency")
async def stamp(ctx: trioforge.JobContext) -> float:
    return time.time()


@registry.job("bench:hang", queue="latency")
async def hang(ctx: trioforge.JobContext) -> None:
    (MARKS / f"started-{ctx.job_id}").write_text("")
    try:
        await trio.sleep_forever()
    finally:
        stopped = time.time()
        (MARKS / f"stopped-{ctx.job_id}.tmp").write_text(repr(stopped))
        (MARKS / f"stopped-{ctx.job_id}.tmp").rename(MARKS / f"stopped-{ctx.job_id}")


@registry.job("bench:late_stamp", queue="latency")
async def late_stamp(ctx: trioforge.JobContext, delay: float) -> float:
    """Returns when it finishes (wall clock): a watcher elsewhere measures from there."""
    await trio.sleep(delay)
    return time.time()
