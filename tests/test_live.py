"""Live tracking: ``watch`` and ``wait`` pushed by storage, in this process and across
clients that share only the database."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

import trioforge
from tests.support import silent_jobs
from tests.support.fast import FAST
from tests.support.postgres import URL, schema_url
from tests.support.virtual import run_virtual
from trioforge import JobContext, JobState, Registry, VirtualClock
from trioforge.actors.live import _Changed, open_live_feed
from trioforge.storage import MemoryBackend

#: A client that would notice nothing for a minute if it had to poll.
NO_POLLING = 60.0


def make_registry() -> tuple[Registry, dict[str, trio.Event]]:
    registry = Registry()
    gates = {name: trio.Event() for name in ("half", "finish", "started")}

    @registry.job("steps")
    async def steps(ctx: JobContext) -> str:
        gates["started"].set()
        await ctx.progress(10, "first")
        await gates["half"].wait()
        await ctx.progress(50, "half way")
        await gates["finish"].wait()
        return "done"

    @registry.job("quick")
    async def quick(ctx: JobContext, n: int) -> int:
        return n * 2

    @registry.job("hang")
    async def hang(ctx: JobContext) -> None:
        gates["started"].set()
        await trio.sleep_forever()

    return registry, gates


async def test_watch_follows_progress_to_the_outcome(shared: Any) -> None:
    registry, gates = make_registry()
    async with (
        trioforge.open_runtime(registry, database=shared, queues={"default": 1}, **FAST) as rt,
        trioforge.open_client(shared, poll_interval=NO_POLLING) as client,
    ):
        job_id = await rt.enqueue("steps")
        seen: list[tuple[JobState, float | None, str | None]] = []
        with trio.fail_after(10):
            async with client.watch(job_id) as updates:
                async for info in updates:
                    seen.append((info.status, info.progress, info.progress_message))
                    if info.progress == 10:
                        gates["half"].set()
                    elif info.progress == 50:
                        gates["finish"].set()
                    if info.is_terminal:
                        result = info.result
    assert (JobState.RUNNING, 10.0, "first") in seen
    assert (JobState.RUNNING, 50.0, "half way") in seen
    assert seen[-1][0] is JobState.COMPLETED
    assert result == "done"
    assert len(seen) == len(set(seen))  # only changes are reported


async def test_wait_from_another_client_is_woken_by_the_outcome(shared: Any) -> None:
    registry, _ = make_registry()
    async with (
        trioforge.open_client(shared, poll_interval=NO_POLLING) as watcher,
        trioforge.open_runtime(registry, database=shared, queues={"default": 2}, **FAST) as rt,
    ):
        ids = await rt.enqueue_many("quick", [1, 2, 3])
        with trio.fail_after(10):
            infos = [await watcher.wait(job_id) for job_id in ids]
    assert [(i.status, i.result) for i in infos] == [(JobState.COMPLETED, n * 2) for n in (1, 2, 3)]


async def test_a_cancel_from_elsewhere_ends_the_watch(shared: Any) -> None:
    registry, gates = make_registry()
    async with (
        trioforge.open_runtime(registry, database=shared, queues={"default": 1}, **FAST) as rt,
        trioforge.open_client(shared, poll_interval=NO_POLLING) as client,
    ):
        job_id = await rt.enqueue("hang")
        await gates["started"].wait()
        statuses = []
        with trio.fail_after(10):
            async for info in client.watch(job_id):
                statuses.append(info.status)
                if info.status is JobState.RUNNING and not info.cancel_requested:
                    await client.cancel(job_id)
    assert statuses[0] is JobState.RUNNING
    assert statuses[-1] is JobState.CANCELLED


async def test_watching_an_unknown_job_raises(shared: Any) -> None:
    async with trioforge.open_client(shared) as client:
        with trio.fail_after(10), pytest.raises(trioforge.JobNotFoundError):
            async for _ in client.watch(12345):
                pass
        with pytest.raises(trioforge.JobNotFoundError):
            await client.wait(12345)
        with pytest.raises(trioforge.InvalidArgumentError):
            client.watch("12")  # type: ignore[arg-type]


async def test_a_watch_left_early_stops_and_others_go_on(shared: Any) -> None:
    registry, gates = make_registry()
    async with trioforge.open_runtime(
        registry, database=shared, queues={"default": 1}, **FAST
    ) as rt:
        job_id = await rt.enqueue("steps")
        with trio.fail_after(10):
            async with rt.watch(job_id) as early:
                async for info in early:
                    if info.progress == 10:
                        break
            with pytest.raises(StopAsyncIteration):
                await early.__anext__()
            gates["half"].set()
            gates["finish"].set()
            assert (await rt.wait(job_id)).status is JobState.COMPLETED


async def test_a_watch_ends_with_its_client() -> None:
    registry, gates = make_registry()
    backend = MemoryBackend()
    errors: list[BaseException] = []

    async def watch_forever(client: trioforge.Client, job_id: int) -> None:
        try:
            async for _ in client.watch(job_id):
                pass
        except trioforge.TrioforgeError as exc:
            errors.append(exc)

    async with trioforge.open_runtime(registry, database=backend, queues={"default": 1}) as rt:
        job_id = (await rt.enqueue("hang")).id
        await gates["started"].wait()
        async with trio.open_nursery() as nursery, trioforge.open_client(backend) as client:
            nursery.start_soon(watch_forever, client, job_id)
            await trio.testing.wait_all_tasks_blocked()
        await rt.cancel(job_id)
    [error] = errors
    assert "client closed" in str(error)


def test_watch_in_virtual_time_sees_each_progress_step() -> None:
    registry = Registry()

    @registry.job("countdown")
    async def countdown(ctx: JobContext, steps: int) -> None:
        for i in range(steps):
            await trio.sleep(10)  # virtual seconds
            await ctx.progress(100 * (i + 1) / steps, f"step {i + 1}")

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        seen: list[Any] = []
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            job_id = await rt.enqueue("countdown", 4)
            async for info in rt.watch(job_id):
                seen.append((info.status, info.progress, round(clock.now() - start)))
        assert seen[-1][:2] == (JobState.COMPLETED, 100.0)
        assert [s[1:] for s in seen if s[1] is not None][:4] == [
            (25.0, 10), (50.0, 20), (75.0, 30), (100.0, 40)
        ]  # fmt: skip

    start = 0.0

    async def timed(backend: MemoryBackend, clock: VirtualClock) -> None:
        nonlocal start
        start = clock.now()
        await scenario(backend, clock)

    run_virtual(timed)


def test_a_watcher_in_the_claiming_process_sees_a_silent_job_start() -> None:
    """Claims send no storage notice (the hottest write); the process that claimed tells
    its own live feed, so a job that reports no progress still shows ``running`` here."""
    registry, gates = make_registry()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            assert await rt.pause("default")
            job = await rt.enqueue("hang")
            async with rt.watch(job) as updates:
                first = await updates.__anext__()
                assert first.status is JobState.AVAILABLE
                await trio.testing.wait_all_tasks_blocked()  # the feed is idle, connected
                assert await rt.resume("default")
                with trio.fail_after(10):
                    assert (await updates.__anext__()).status is JobState.RUNNING
            assert gates["started"].is_set()
            assert await rt.cancel(job)

    run_virtual(scenario)


async def _silent_start_seen(database: str, *worker_options: str, worker: str = "") -> float:
    """Seconds from a silent job's start in a worker process (on ``worker``, default
    ``database``) to a watcher here seeing it ``running`` (subscribed before the claim; no
    polling to fall back on)."""
    async with trioforge.open_client(database, poll_interval=NO_POLLING) as client:
        job = await client.enqueue(silent_jobs.silent)
        async with client.watch(job.id) as updates:
            assert (await updates.__anext__()).status is JobState.AVAILABLE
            async with silent_jobs.worker(worker or database, *worker_options):
                with trio.fail_after(30):
                    info = await updates.__anext__()
                seen_at = time.time()
                await client.cancel(job.id)
                with trio.fail_after(30):
                    assert (await client.wait(job.id)).status is JobState.CANCELLED
    assert info.status is JobState.RUNNING
    assert info.started_at is not None
    return seen_at - info.started_at


async def test_a_silent_job_shows_running_to_a_watcher_in_another_process(
    shared_url: str,
) -> None:
    """Claims notify (PostgreSQL: in the claim's statement; SQLite: any commit), so a job
    that reports nothing shows ``running`` elsewhere from its start, not at its outcome."""
    after = await _silent_start_seen(shared_url)
    print(f"a silent job seen running {after * 1000:.0f} ms after its claim")
    assert after < 1.0


async def test_a_silent_job_shows_running_elsewhere_through_a_transaction_pooler() -> None:
    """The claim's notice is a NOTIFY in its transaction, which a transaction pooler
    passes on (only LISTEN needs the direct ``listen_url``)."""
    async with schema_url() as url:
        after = await _silent_start_seen(
            url, "--listen-url", URL, worker=f"{url}&pooler=transaction"
        )
    print(f"a silent job seen running {after * 1000:.0f} ms after its claim (pooled)")
    assert after < 1.0


def test_the_process_own_hints_reach_the_feed_only_once_something_is_watched() -> None:
    """A worker's claims and outcomes hint the feed, which only re-reads watched jobs: until
    a first subscription the hints are dropped before they wake it, and from then on they
    are passed on (a later subscriber reads its job when it subscribes)."""
    feed, messages = open_live_feed()
    feed.changed([1, 2])
    with pytest.raises(trio.WouldBlock):
        messages.receive_nowait()
    feed.subscribe(3)
    messages.receive_nowait()  # the subscription
    feed.changed([3])
    assert messages.receive_nowait() == _Changed(frozenset({3}))
