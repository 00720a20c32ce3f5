"""The storage actor with several batches in flight: a claim never waits behind a blocked
outcome write (PostgreSQL, a row lock held from outside), and a job's own writes, and writes
that must run alone, keep their order (a gated memory backend, decided deterministically)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import trio
import trio.testing
import trio_asyncio

from tests.support.postgres import URL, temporary_schema
from trioforge._core.states import JobState, Succeeded
from trioforge.actors import StorageHandle, open_storage_channel, storage_actor
from trioforge.storage import (
    Backend,
    ClaimedJob,
    JobInfo,
    MemoryBackend,
    NewJob,
    Outcome,
    opened,
    ops,
)
from trioforge.storage.postgres import PostgresBackend

NOW = 1000.0


class GatedMemory(MemoryBackend):
    """The memory backend with room for several batches at once, whose batches holding a
    progress write wait for ``gate``: what is run meanwhile is decided by then, in
    memory, so a scheduler that let a write overtake it could not hide it."""

    max_in_flight = 4

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        if any(isinstance(op, ops.Progress) for op in batch):
            await self.gate.wait()
        return await super().execute(batch, now)


@asynccontextmanager
async def served(backend: Backend) -> AsyncIterator[tuple[StorageHandle, trio.Nursery]]:
    """The backend open and served by a storage actor, and a nursery for calls that will
    block; the actor must have answered everything when the block ends."""
    async with opened(backend):
        handle, receive = open_storage_channel()
        async with trio.open_nursery() as nursery:
            await nursery.start(storage_actor, backend, lambda: NOW, receive)
            try:
                with trio.fail_after(20):  # a batch stuck behind another would hang here
                    yield handle, nursery
            finally:
                handle.close()


@asynccontextmanager
async def actor_on(
    backend: PostgresBackend,
) -> AsyncIterator[tuple[StorageHandle, asyncpg.Connection, trio.Nursery]]:
    """The backend served by a storage actor, an outside connection to the same schema
    (to hold locks), and a nursery for calls that will block."""
    assert backend.schema is not None
    async with opened(backend):
        outside = await trio_asyncio.aio_as_trio(asyncpg.connect)(
            URL, server_settings={"search_path": backend.schema}
        )
        handle, receive = open_storage_channel()
        async with trio.open_nursery() as nursery:
            await nursery.start(storage_actor, backend, lambda: NOW, receive)
            try:
                with trio.fail_after(20):  # a batch stuck behind another would hang here
                    yield handle, outside, nursery
            finally:
                with trio.CancelScope(shield=True):
                    await trio_asyncio.aio_as_trio(outside.close)()  # lets go of its locks
                handle.close()


def aio(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    return trio_asyncio.aio_as_trio(fn)  # type: ignore[no-any-return]


async def running_jobs(handle: StorageHandle, count: int) -> list[Any]:
    """``count`` jobs enqueued on queue "q" and claimed; one more is left available."""
    await handle.call(
        ops.Enqueue(tuple(NewJob("a", "q", "1", 10, 0.0, 3) for _ in range(count + 1)))
    )
    claimed = await handle.call(ops.Claim("q", frozenset({"a"}), count, "me", NOW + 60))
    assert len(claimed.jobs) == count
    return list(claimed.jobs)


async def until_blocked(outside: asyncpg.Connection, wait_event_type: str) -> None:
    """Until some other session of this database waits on a lock of that kind."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND wait_event = $1"
    )
    # The server's own view; nothing here could set an event when it changes.
    while not await aio(outside.fetchval)(query, wait_event_type):  # noqa: ASYNC110
        await trio.sleep(0.005)


async def call_in_background(
    nursery: trio.Nursery, handle: StorageHandle, op: ops.Op
) -> tuple[trio.Event, list[object]]:
    done, result = trio.Event(), []

    async def call() -> None:
        result.append(await handle.call(op))
        done.set()

    nursery.start_soon(call)
    return done, result


async def outcome_held_on_a_row_lock(
    handle: StorageHandle, outside: asyncpg.Connection, nursery: trio.Nursery, job: ClaimedJob
) -> tuple[Any, trio.Event, list[object]]:
    """``job``'s outcome written in the background while ``outside`` holds its row: once
    this returns, that batch is in flight and waits on the lock. The lock's transaction
    (roll it back to let the batch end), and the call's event and result."""
    lock = outside.transaction()
    await aio(lock.start)()
    await aio(outside.execute)("SELECT 1 FROM trioforge_jobs WHERE id = $1 FOR UPDATE", job.id)
    finish = ops.Finish((Outcome(job.id, job.lease, Succeeded()),))
    finished, applied = await call_in_background(nursery, handle, finish)
    await until_blocked(outside, "transactionid")  # the outcome batch waits on the row
    return lock, finished, applied


async def test_a_claim_is_not_stuck_behind_a_blocked_outcome_batch() -> None:
    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema)
        async with actor_on(backend) as (handle, outside, nursery):
            [job] = await running_jobs(handle, 1)
            lock, finished, applied = await outcome_held_on_a_row_lock(
                handle, outside, nursery, job
            )

            claimed = await handle.call(ops.Claim("q", frozenset({"a"}), 5, "me", NOW + 60))

            assert [j.id for j in claimed.jobs] == [job.id + 1]
            assert not finished.is_set()  # the claim went by while the outcome waited
            await aio(lock.rollback)()
            await finished.wait()
            assert applied == [[True]]


@pytest.mark.parametrize("held_back", ["the same job's outcome", "a write that runs alone"])
async def test_writes_that_could_be_reordered_wait_while_others_overlap(held_back: str) -> None:
    backend = GatedMemory()
    async with served(backend) as (handle, nursery):
        first, second = await running_jobs(handle, 2)
        if held_back == "a write that runs alone":
            op: ops.Op = ops.Cancel(second.id)
        else:
            op = ops.Finish((Outcome(first.id, first.lease, Succeeded()),))
        try:
            progressed, recorded = await call_in_background(
                nursery, handle, ops.Progress(first.id, first.lease, 50.0, "half")
            )
            await trio.testing.wait_all_tasks_blocked()  # the progress batch is in flight
            done, result = await call_in_background(nursery, handle, op)
            await trio.testing.wait_all_tasks_blocked()

            claimed = await handle.call(ops.Claim("q", frozenset({"a"}), 5, "me", NOW + 60))
            await trio.testing.wait_all_tasks_blocked()

            assert len(claimed.jobs) == 1  # other batches still run beside the blocked one
            assert not done.is_set()  # but not this one
            handle.close()  # the actor still answers everything before it returns
        finally:
            backend.gate.set()  # (also after a failed assert: the actor drains, shielded)
        await progressed.wait()
        await done.wait()
        assert recorded == [True]  # the progress write went first
        [info] = await backend.execute([ops.Get(first.id)], NOW)
        assert isinstance(info, JobInfo)
        assert info.progress == 50.0
        if isinstance(op, ops.Finish):
            assert result == [[True]]
            assert info.status is JobState.COMPLETED


async def test_a_claim_is_not_stuck_behind_a_retention_purge() -> None:
    """Retention purges a million finished jobs in batches: a claim must not wait for one."""
    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema)
        async with actor_on(backend) as (handle, outside, nursery):
            [job] = await running_jobs(handle, 1)
            await handle.call(ops.Finish((Outcome(job.id, job.lease, Succeeded()),)))
            lock = outside.transaction()
            await aio(lock.start)()
            # The purge's count rows wait for this lock; claims never write that table.
            await aio(outside.execute)("LOCK TABLE trioforge_finished IN EXCLUSIVE MODE")
            purge = ops.Purge((JobState.COMPLETED,), NOW + 1)
            purged, deleted = await call_in_background(nursery, handle, purge)
            await until_blocked(outside, "relation")

            claimed = await handle.call(ops.Claim("q", frozenset({"a"}), 5, "me", NOW + 60))

            assert [j.id for j in claimed.jobs] == [job.id + 1]
            assert not purged.is_set()
            await aio(lock.rollback)()
            await purged.wait()
            assert deleted == [[job.id]]


@asynccontextmanager
async def actor_of(backend: Backend) -> AsyncIterator[StorageHandle]:
    """A storage actor serving ``backend`` (open) for the block; it has answered every
    request, those in flight included, when the block ends."""
    handle, inbox = open_storage_channel()
    async with trio.open_nursery() as nursery:
        await nursery.start(storage_actor, backend, lambda: NOW, inbox)
        with trio.fail_after(20):
            try:
                yield handle
            finally:
                handle.close()


@pytest.mark.parametrize("backend_kind", ["postgres", "gated memory"])
async def test_a_caller_already_cancelled_stores_nothing_even_on_an_idle_actor(
    backend_kind: str,
) -> None:
    """On PostgreSQL a caller that finds the actor idle starts its batch itself, before it
    first waits; one already cancelled must not (trio's rule: a call that raises Cancelled
    did nothing), there as through the actor's channel elsewhere."""
    async with temporary_schema() as postgres:
        backend = postgres if backend_kind == "postgres" else GatedMemory()
        async with opened(backend):
            async with actor_of(backend) as handle:
                # Requests sent through the channel, all answered: the actor is idle again.
                handle.call_nowait(ops.Get(1))
                await handle.call_each_shielded([ops.Get(1)])
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await handle.call(ops.Enqueue((NewJob("a", "q", "1", 10, 0.0, 3),)))
                assert scope.cancelled_caught
                [stored] = await handle.call_each_shielded(
                    [ops.Enqueue((NewJob("b", "q", "1", 10, 0.0, 3),))]
                )
            found = await backend.execute([ops.ListJobs(name="a"), ops.ListJobs(name="b")], NOW)
    assert found[0] == [], found
    assert found[1] != [], (found, stored)


async def test_a_caller_of_a_busy_actor_queues_behind_what_is_in_flight() -> None:
    """With a batch in flight (an outcome held on a row lock), a caller does not start a
    batch of its own: cancelled before it sent its request, it stored nothing."""
    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema)
        async with actor_on(backend) as (handle, outside, nursery):
            [job] = await running_jobs(handle, 1)
            lock, finished, _ = await outcome_held_on_a_row_lock(handle, outside, nursery, job)
            with trio.CancelScope() as scope:
                scope.cancel()
                await handle.call(ops.Enqueue((NewJob("b", "q", "1", 10, 0.0, 3),)))
            await aio(lock.rollback)()
            await finished.wait()
            found = await handle.call(ops.ListJobs(name="b"))
    assert found == []


async def test_a_call_never_overtakes_a_request_queued_before_it() -> None:
    """``call_nowait`` leaves its request in the channel for the actor; a ``call`` right
    after it, with the actor idle, still goes behind it (here: reads what it wrote)."""
    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema)
        async with opened(backend), actor_of(backend) as handle:
            [job] = await running_jobs(handle, 1)
            handle.call_nowait(ops.Progress(job.id, job.lease, 50.0, "half"))
            info = await handle.call(ops.Get(job.id))
    assert info is not None
    assert info.progress == 50.0
