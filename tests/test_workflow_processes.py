"""Workflows across real worker processes on SQLite and PostgreSQL: a worker SIGKILLed in
the middle of a five-step run, and a durable sleep that spans a restart."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

import trioforge
from tests.test_crash_rescue import read_until
from trioforge import JobState, StepKind

LEASE = 1.0

MODULE = """
import os
import sqlite3
import time

import trio
import trioforge

registry = trioforge.Registry()


def effect(name: str) -> None:
    with sqlite3.connect("effects.db", timeout=10) as db:
        db.execute("INSERT INTO effects VALUES (?, ?, ?)", (name, os.getpid(), time.time()))


async def third() -> None:
    if os.environ.get("BLOCK_IN_THIRD"):
        print("STARTED third", flush=True)
        await trio.sleep_forever()  # this process is killed while here
    effect("s3")


@registry.workflow("five")
async def five(ctx: trioforge.WorkflowContext) -> str:
    await ctx.step("s1", effect, "s1")
    await ctx.step("s2", effect, "s2")
    await ctx.step("s3", third)
    await ctx.step("s4", effect, "s4")
    await ctx.sleep(2.0)
    await ctx.step("s5", effect, "s5")
    return "done"
"""


async def worker(url: str, cwd: Path, log: Path, *, block: bool) -> trio.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if block:
        env["BLOCK_IN_THIRD"] = "1"
    else:
        env.pop("BLOCK_IN_THIRD", None)
    command = [
        sys.executable, "-m", "trioforge", "worker", "fiveflow:registry", "--database", url,
        "--queue", "default=2", "--lease-seconds", str(LEASE), "--heartbeat-interval", "0.2",
        "--poll-interval", "0.1",
    ]  # fmt: skip

    return await trio.lowlevel.open_process(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE if block else log.open("ab"),
        stderr=log.open("ab"),
    )


def effects(tmp_path: Path) -> list[tuple[str, int, float]]:
    with sqlite3.connect(tmp_path / "effects.db") as db:
        return list(db.execute("SELECT name, pid, at FROM effects ORDER BY at"))


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll what another process writes (a file): there is no event to wait on."""
    with trio.fail_after(30):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            await process.wait()


async def test_a_killed_worker_s_run_resumes_elsewhere_without_repeating_steps(
    tmp_path: Path, shared_url: str
) -> None:
    (tmp_path / "fiveflow.py").write_text(MODULE)
    with sqlite3.connect(tmp_path / "effects.db") as db:
        db.execute("CREATE TABLE effects (name TEXT, pid INTEGER, at REAL)")
    log = tmp_path / "workers.log"
    placeholder = trioforge.Registry()

    @placeholder.workflow("five")
    async def five(ctx: trioforge.WorkflowContext) -> None:
        """Stands in for the workers' code: this process only enqueues and looks."""

    async with trioforge.open_client(shared_url, registry=placeholder) as client:
        first = await worker(shared_url, tmp_path, log, block=True)
        second: trio.Process | None = None
        third: trio.Process | None = None
        try:
            run_id = (await client.enqueue("five")).id
            assert first.stdout is not None
            with trio.fail_after(30):
                await read_until(first.stdout, b"STARTED third", 1)
            second = await worker(shared_url, tmp_path, log, block=False)
            await wait_for(lambda: log.read_bytes().count(b" ready: ") >= 2)
            first.send_signal(signal.SIGKILL)
            killed_at = time.time()
            await first.wait()
            await wait_for(lambda: any(n == "s4" for n, _, _ in effects(tmp_path)))
            resumed_at = next(at for n, _, at in effects(tmp_path) if n == "s3")
            # Asleep now: stop the second worker and start a third during the sleep.
            await wait_for_status(client, run_id, JobState.SCHEDULED)
            await _stop(second)
            third = await worker(shared_url, tmp_path, log, block=False)
            with trio.fail_after(30):
                info = await client.wait(run_id)
            view = await client.workflow(run_id)
        finally:
            for process in (first, second, third):
                if process is not None:
                    await _stop(process)
    assert (info.status, info.result) == (JobState.COMPLETED, "done"), log.read_text()
    rows = effects(tmp_path)
    assert [n for n, _, _ in rows] == ["s1", "s2", "s3", "s4", "s5"]  # each exactly once
    pids = {n: pid for n, pid, _ in rows}
    assert second is not None
    assert third is not None
    assert [pids[n] for n in ("s1", "s2", "s3", "s4", "s5")] == [first.pid] * 2 + [
        second.pid
    ] * 2 + [third.pid]
    # Rescued once its lease ran out, by the process already running (plus the rescue
    # interval and a poll): well within two leases.
    assert resumed_at - killed_at < 2 * LEASE + 1.0
    [sleep] = [s for s in view.steps if s.kind is StepKind.SLEEP]
    assert sleep.wake_at is not None
    woke_at = next(at for n, _, at in rows if n == "s5")
    assert sleep.wake_at <= woke_at < sleep.wake_at + 1.5  # never early, and on time


async def wait_for_status(client: trioforge.Client, run_id: int, status: JobState) -> None:
    """Poll another process's progress (there is no event to wait on)."""
    with trio.fail_after(30):
        while (await client.get(run_id)).status is not status:  # noqa: ASYNC110
            await trio.sleep(0.02)
