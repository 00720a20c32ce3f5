"""Work that says nothing while it runs (no progress, no outcome until cancelled), for the
tests that watch it from another process: a job, and a workflow run's step. Also the
worker process that runs them."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import trioforge

ROOT = Path(__file__).resolve().parent.parent.parent

registry = trioforge.Registry()


@registry.job("silent")
async def silent(ctx: trioforge.JobContext) -> None:
    await trio.sleep_forever()


async def _long() -> None:
    await trio.sleep_forever()


@registry.workflow("quiet")
async def quiet(ctx: trioforge.WorkflowContext) -> None:
    await ctx.step("quick", lambda: 1)
    await ctx.step("long", _long)


@asynccontextmanager
async def worker(database: str, *options: str) -> AsyncIterator[trio.Process]:
    """A ``trioforge worker`` process running :data:`registry` on ``database``, once it
    says it is ready; stopped (SIGINT, then waited for) at the end."""
    command = [
        sys.executable, "-m", "trioforge", "worker", "tests.support.silent_jobs:registry",
        "--database", database, "--queue", "default=2", "--heartbeat-interval", "0.2",
        "--poll-interval", "0.1", "--log-level", "WARNING", *options,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(command, cwd=ROOT, stderr=-1, env=env)
    try:
        assert process.stderr is not None
        seen = b""
        with trio.fail_after(60):
            while b" ready: " not in seen:
                chunk = await process.stderr.receive_some()
                if not chunk:
                    raise AssertionError(f"worker ended before it was ready: {seen.decode()}")
                seen += chunk
        async with trio.open_nursery() as nursery:
            # Read on, so a worker that logs a lot never blocks on a full pipe.
            nursery.start_soon(_drain, process.stderr)
            yield process
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            await process.wait()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass
