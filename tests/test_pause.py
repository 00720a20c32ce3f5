"""Pausing and resuming a queue: claims stop everywhere, running jobs go on."""

from __future__ import annotations

import pytest
import trio

import trioforge
from tests.support.postgres import temporary_schema
from trioforge import InvalidArgumentError, JobContext, JobState, QueueInfo, Registry
from trioforge.storage.postgres import PostgresBackend
from trioforge.testing import open_test_runtime, run


def recording_registry(starts: dict[str, float]) -> Registry:
    registry = Registry()

    @registry.job("work")
    async def work(ctx: JobContext, label: str) -> None:
        starts[label] = trio.current_time()
        await trio.sleep(10)

    return registry


def test_pausing_stops_claims_and_resuming_claims_at_once() -> None:
    starts: dict[str, float] = {}

    async def main() -> None:
        async with open_test_runtime(
            recording_registry(starts), queues={"default": 2}, poll_interval=60.0
        ) as rt:
            t0 = trio.current_time()
            running = await rt.enqueue("work", "running")
            await trio.sleep(1)
            assert await rt.pause("default")
            held = await rt.enqueue("work", "held")
            await trio.sleep(5)
            assert (await rt.get(held)).status is JobState.AVAILABLE
            assert await rt.queues() == [
                QueueInfo("default", True, {JobState.RUNNING: 1, JobState.AVAILABLE: 1})
            ]
            assert await rt.resume("default")  # not at the next poll, a minute away
            assert (await rt.wait(held)).status is JobState.COMPLETED
            assert (await rt.wait(running)).status is JobState.COMPLETED  # never interrupted
        assert starts == {"running": t0, "held": t0 + 6}

    run(main)


def test_pause_and_resume_say_whether_anything_changed() -> None:
    async def main() -> None:
        async with open_test_runtime(recording_registry({}), queues={"default": 1}) as rt:
            assert not await rt.resume("default")
            assert await rt.pause("emails")  # a queue need not have jobs yet
            assert not await rt.pause("emails")
            assert await rt.queues() == [QueueInfo("emails", True, {})]
            with pytest.raises(InvalidArgumentError, match="non-empty string"):
                await rt.pause("")

    run(main)


async def test_a_resume_from_another_process_wakes_postgres_workers() -> None:
    started = trio.Event()
    registry = Registry()

    @registry.job("work")
    async def work(ctx: JobContext) -> None:
        started.set()
        await trio.sleep_forever()

    async with temporary_schema() as backend:
        operator = PostgresBackend(backend.url, schema=backend.schema)
        async with trioforge.open_client(operator, registry=registry) as client:
            await client.pause("default")
            job_id = await client.enqueue("work")
        async with trioforge.open_runtime(registry, database=backend, poll_interval=60.0) as rt:
            async with trioforge.open_client(operator) as client:
                assert await client.resume("default")
            with trio.fail_after(10):  # far less than the poll interval: the notice woke it
                await started.wait()
            await rt.cancel(job_id)
