"""A worker process killed with SIGKILL mid-job: another process on the same database
rescues its jobs once their leases are stale, as new attempts, and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

import trioforge
from trioforge import JobState, Registry

JOBS = 5

MODULE = """
import sys
from pathlib import Path

import trio
import trioforge

registry = trioforge.Registry()


@registry.job("work", retry=trioforge.Retry(max_attempts=3, base_delay=0))
async def work(ctx: trioforge.JobContext, n: int) -> str:
    if ctx.attempt == 1:
        print(f"STARTED {ctx.job_id}", flush=True)
        await trio.sleep_forever()  # the first owner is killed while here
    with Path("effects.txt").open("a") as f:
        f.write(f"{n}\\n")
    return f"done by attempt {ctx.attempt}"
"""


def worker_command(url: str) -> list[str]:
    return [
        sys.executable, "-m", "trioforge", "worker", "crashjobs:registry",
        "--database", url, "--queue", f"default={JOBS}",
        "--lease-seconds", "1", "--heartbeat-interval", "0.2", "--poll-interval", "0.1",
    ]  # fmt: skip


async def read_until(stream: trio.abc.ReceiveStream, needle: bytes, count: int) -> bytes:
    seen = b""
    while seen.count(needle) < count:
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"worker exited early; output so far: {seen!r}")
        seen += chunk
    return seen


async def test_sigkilled_worker_jobs_are_rescued_by_another_process(
    tmp_path: Path, shared_url: str
) -> None:
    (tmp_path / "crashjobs.py").write_text(MODULE)
    url = shared_url
    enqueue_only = Registry()
    work = enqueue_only.job("work")(_placeholder)
    async with trioforge.open_client(url) as client:
        ids = await client.enqueue_many(work, range(JOBS))

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (tmp_path / "first.log").open("wb") as log:
        first = await trio.lowlevel.open_process(
            worker_command(url), cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, env=env
        )
        assert first.stdout is not None
        with trio.fail_after(30):
            await read_until(first.stdout, b"STARTED", JOBS)  # all five are mid-job
        first.send_signal(signal.SIGKILL)
        await first.wait()

    async with trioforge.open_client(url) as client:
        before = [await client.get(i) for i in ids]
        assert {j.status for j in before} == {JobState.RUNNING}  # orphaned, not released

        with (tmp_path / "second.log").open("wb") as log:
            second = await trio.lowlevel.open_process(
                worker_command(url), cwd=tmp_path, stdout=log, stderr=log, env=env
            )
            try:
                with trio.fail_after(30):
                    done = [await client.wait(i) for i in ids]
            finally:
                second.send_signal(signal.SIGINT)
                with trio.fail_after(30):
                    await second.wait()
    assert [(j.status, j.attempt, j.result) for j in done] == [
        (JobState.COMPLETED, 2, "done by attempt 2")
    ] * JOBS
    effects = sorted(int(x) for x in (tmp_path / "effects.txt").read_text().split())
    assert effects == list(range(JOBS))  # each job's effect exactly once
    assert second.returncode == 0


async def _placeholder(ctx: trioforge.JobContext, n: int) -> None:
    """Stands in for the worker's handler: this process only enqueues."""
