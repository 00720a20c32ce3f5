"""Heartbeat timeouts: an attempt whose handler stops calling ``ctx.heartbeat()`` or
``ctx.progress()`` fails as timed out, long before its overall ``timeout``."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import trio

import trioforge
from tests.support.virtual import run_virtual
from trioforge import JobContext, JobState, Registry, Retry, VirtualClock
from trioforge.storage import MemoryBackend


def make_registry() -> tuple[Registry, dict[str, Any]]:
    registry = Registry()
    seen: dict[str, Any] = {"starts": []}

    @registry.job(
        "beating", heartbeat_timeout=10, timeout=3600, retry=Retry(max_attempts=2, base_delay=0)
    )
    async def beating(ctx: JobContext) -> int:
        beats = 0
        for i in range(10):  # 50 s in all, five times the heartbeat timeout
            await trio.sleep(5)
            if i % 2:
                await ctx.heartbeat()
            else:
                await ctx.progress(i * 10)
            beats += 1
        return beats

    @registry.job(
        "stalls", heartbeat_timeout=10, timeout=3600, retry=Retry(max_attempts=2, base_delay=0)
    )
    async def stalls(ctx: JobContext) -> None:
        seen["starts"].append(trio.current_time())
        await trio.sleep(4)
        await ctx.heartbeat()  # then hangs: failed 10 s after this beat
        await trio.sleep_forever()

    @registry.job("slow", heartbeat_timeout=100, timeout=30, retry=Retry(max_attempts=1))
    async def slow(ctx: JobContext) -> None:
        while True:
            await trio.sleep(5)
            await ctx.heartbeat()

    return registry, seen


def test_a_job_that_heartbeats_runs_past_the_heartbeat_timeout() -> None:
    registry, _ = make_registry()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            info = await rt.wait(await rt.enqueue("beating"))
        assert (info.status, info.attempt, info.result) == (JobState.COMPLETED, 1, 10)

    run_virtual(scenario)


def test_a_job_that_stops_heartbeating_is_failed_at_the_timeout_and_retried() -> None:
    registry, seen = make_registry()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            job = await rt.enqueue("stalls")
            began = trio.current_time()
            info = await rt.wait(job)
            ended = trio.current_time()
            attempts = await rt.attempts(job)
        assert (info.status, info.attempt) == (JobState.DEAD, 2)
        assert len(seen["starts"]) == 2  # retried once, as a timeout
        # Each attempt failed 10 s after its last beat (at 4 s), not at its 3600 s timeout.
        second = seen["starts"][1] - began
        assert 14 <= second < 15
        assert 14 <= ended - seen["starts"][1] < 15
        assert [a.attempt for a in attempts] == [1, 2]
        for record in attempts:
            assert "JobTimeoutError" in record.error
            assert "no heartbeat for 10.0s" in record.error

    run_virtual(scenario)


def test_the_overall_timeout_still_applies_to_a_job_that_heartbeats() -> None:
    registry, _ = make_registry()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            began = trio.current_time()
            info = await rt.wait(await rt.enqueue("slow"))
            assert 30 <= trio.current_time() - began < 31
        assert info.status is JobState.DEAD
        assert "ran past 30.0s" in (info.error or "")

    run_virtual(scenario)


STALLING_MODULE = """
import trio
import trioforge

registry = trioforge.Registry()


@registry.job("stall", heartbeat_timeout=0.5, retry=trioforge.Retry(max_attempts=2, base_delay=0))
async def stall(ctx: trioforge.JobContext) -> None:
    await ctx.heartbeat()
    await trio.sleep_forever()  # hung: no heartbeat from here on
"""


async def test_a_worker_process_fails_and_retries_a_job_that_stops_heartbeating(
    tmp_path: Path, shared_url: str
) -> None:
    (tmp_path / "stalling.py").write_text(STALLING_MODULE)
    placeholder = Registry()

    @placeholder.job("stall", retry=Retry(max_attempts=2))
    async def stall(ctx: JobContext) -> None:
        """Stands in for the worker's code: this process only enqueues and looks."""

    command = [
        sys.executable, "-m", "trioforge", "worker", "stalling:registry", "--database",
        shared_url, "--queue", "default=1", "--poll-interval", "0.1",
    ]  # fmt: skip
    log = tmp_path / "worker.log"
    async with trioforge.open_client(shared_url, registry=placeholder) as client:
        job = await client.enqueue(stall)
        process = await trio.lowlevel.open_process(
            command, cwd=tmp_path, stdout=log.open("ab"), stderr=log.open("ab")
        )
        try:
            with trio.fail_after(30):
                info = await client.wait(job)
            attempts = await client.attempts(job)
        finally:
            process.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                await process.wait()
    assert (info.status, info.attempt) == (JobState.DEAD, 2), log.read_text()
    assert [a.attempt for a in attempts] == [1, 2]
    for record in attempts:
        assert "JobTimeoutError" in record.error
        assert "no heartbeat for 0.5s" in record.error
