"""The Job handle ``enqueue`` returns: its result decoded, its errors, its identity."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from pathlib import Path

import attrs
import pytest
import trio

import trioforge
import trioforge.aio
from tests.support.fast import FAST
from trioforge import (
    Job,
    JobContext,
    JobState,
    Registry,
    Retry,
    WorkflowContext,
)
from trioforge.storage import Backend

AT = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


@attrs.frozen
class Order:
    item: str
    count: int


@attrs.frozen
class Receipt:
    item: str
    total: int
    at: dt.datetime


def make_registry() -> Registry:
    registry = Registry()

    @registry.job("buy")
    async def buy(ctx: JobContext, order: Order) -> Receipt:
        return Receipt(order.item, order.count * 3, AT)

    @registry.job("fail", retry=Retry(max_attempts=1))
    async def fail(ctx: JobContext) -> None:
        raise RuntimeError("out of stock")

    @registry.job("hang")
    async def hang(ctx: JobContext) -> None:
        await trio.sleep_forever()

    @registry.job("ping")
    async def ping(ctx: JobContext) -> str:
        follow_up = await ctx.enqueue(buy, Order("tea", 1))
        assert isinstance(follow_up, Job)
        return "pong"

    def reserve(item: str) -> str:
        return f"reserved {item}"

    def release(item: str) -> None:
        del item

    @registry.workflow("checkout")
    async def checkout(ctx: WorkflowContext, order: Order) -> Receipt:
        await ctx.step("reserve", reserve, order.item, compensate=release)
        if order.count < 0:
            raise trioforge.Discard("a negative count")
        child = await ctx.start_child(buy, order)
        [receipt] = await ctx.gather(child)
        return receipt

    return registry


async def test_result_is_the_handlers_value_decoded(database: str | Backend) -> None:
    registry = make_registry()
    buy = registry.get("buy")
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        job = await rt.enqueue(buy, Order("tea", 2))
        with trio.fail_after(10):
            assert await job.result() == Receipt("tea", 6, AT)
            assert await job.result() == Receipt("tea", 6, AT)  # awaited again: the same
        many = await rt.enqueue_many(buy, [Order("a", 1), Order("b", 2)])
        with trio.fail_after(10):
            assert [await j.result() for j in many] == [
                Receipt("a", 3, AT),
                Receipt("b", 6, AT),
            ]
        assert (await rt.enqueue("ping")).definition.name == "ping"


async def test_a_dead_job_raises_job_failed_carrying_its_info(database: str | Backend) -> None:
    async with trioforge.open_runtime(make_registry(), database=database, **FAST) as rt:
        job = await rt.enqueue("fail")
        with trio.fail_after(10), pytest.raises(trioforge.JobFailedError) as failed:
            await job.result()
    assert isinstance(failed.value, RuntimeError)
    assert failed.value.info.id == job.id
    assert failed.value.info.status is JobState.DEAD
    assert "out of stock" in str(failed.value)


async def test_a_cancelled_job_raises_job_cancelled(database: str | Backend) -> None:
    async with trioforge.open_runtime(make_registry(), database=database, **FAST) as rt:
        later = await rt.enqueue("buy", Order("tea", 1), delay=3600)
        assert await later.cancel()
        with trio.fail_after(10), pytest.raises(trioforge.JobCancelledError) as cancelled:
            await later.result()
    assert cancelled.value.info.status is JobState.CANCELLED


@pytest.mark.parametrize("limit", [0.05, dt.timedelta(milliseconds=50)])
async def test_a_timeout_stops_the_waiting_not_the_job(
    database: str | Backend, limit: float | dt.timedelta
) -> None:
    async with trioforge.open_runtime(make_registry(), database=database, **FAST) as rt:
        job = await rt.enqueue("buy", Order("tea", 1), delay=3600)
        with trio.fail_after(10), pytest.raises(trioforge.ResultTimeoutError) as late:
            await job.result(timeout=limit)
        assert isinstance(late.value, TimeoutError)
        assert late.value.job_id == job.id
        assert (await job.info()).status is JobState.SCHEDULED


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf, dt.timedelta(seconds=-1)])
async def test_a_bad_timeout_is_refused_by_name(bad: float | dt.timedelta) -> None:
    async with trioforge.open_client("memory://", registry=make_registry()) as client:
        job = await client.enqueue("buy", Order("tea", 1))
        with pytest.raises(trioforge.InvalidArgumentError, match="timeout"):
            await job.result(timeout=bad)


async def test_handles_are_equal_and_hashed_by_id() -> None:
    registry = make_registry()
    buy = registry.get("buy")
    async with trioforge.open_client("memory://", registry=registry) as client:
        first = await client.enqueue(buy, Order("tea", 1), idempotency_key="k")
        again = await client.enqueue(buy, Order("tea", 1), idempotency_key="k")
        other = await client.enqueue(buy, Order("tea", 1))
    assert first is not again
    assert first == again == client.job(buy, first.id) == first.id
    assert hash(first) == hash(again) == hash(first.id)
    assert len({first, again, other}) == 2
    assert first != other
    assert first != str(first.id)
    assert (str(first), f"{first}", f"{first:>4}") == (
        str(first.id),
        str(first.id),
        f"{first.id:>4}",
    )
    assert repr(first) == f"Job(id={first.id}, name='buy')"


async def test_client_job_rebuilds_a_typed_handle(database: str | Backend) -> None:
    registry = make_registry()
    buy, fail = registry.get("buy"), registry.get("fail")
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        job_id = (await rt.enqueue(buy, Order("tea", 2))).id
        async with trioforge.open_client(database) as client:
            handle = client.job(buy, job_id)
            with trio.fail_after(10):
                assert await handle.result() == Receipt("tea", 6, AT)
            with pytest.raises(trioforge.InvalidArgumentError, match="'buy' job, not 'fail'"):
                await client.job(fail, job_id).result()
            with pytest.raises(trioforge.JobNotFoundError):
                client.job(buy, 0)
            with pytest.raises(trioforge.InvalidArgumentError, match="job definition"):
                client.job("buy", job_id)  # type: ignore[arg-type]


async def test_every_call_that_takes_an_id_takes_a_job(database: str | Backend) -> None:
    async with trioforge.open_runtime(make_registry(), database=database, **FAST) as rt:
        hang = await rt.enqueue("hang")
        async with rt.watch(hang) as updates:
            with trio.fail_after(10):
                async for info in updates:
                    if info.status is JobState.RUNNING:
                        break
        assert await rt.cancel(hang)
        with trio.fail_after(10):
            assert (await rt.wait(hang)).status is JobState.CANCELLED
        assert (await rt.get(hang)).id == hang.id
        assert await rt.attempts(hang) == await rt.attempts(hang.id)
        assert await rt.retry(hang)
        assert await hang.cancel()
        later = await rt.enqueue("buy", Order("tea", 1), delay=3600)
        assert await rt.discard(later)
        async with later.watch() as updates:
            assert [info.status async for info in updates] == [JobState.DEAD]


async def test_a_workflow_run_is_a_job_handle_too(database: str | Backend) -> None:
    registry = make_registry()
    checkout = registry.get("checkout")
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        run = await rt.enqueue(checkout, Order("tea", 2))
        undone = await rt.enqueue(checkout, Order("tea", -1))
        with trio.fail_after(10):
            assert await run.result() == Receipt("tea", 6, AT)
            with pytest.raises(trioforge.JobFailedError) as failed:
                await undone.result()
        assert failed.value.info.status is JobState.COMPENSATED
        assert (await rt.workflow(run)).job.status is JobState.COMPLETED
        async with rt.watch_workflow(run) as views:
            assert [view.job.status async for view in views] == [JobState.COMPLETED]
        assert set(await rt.current_steps([run, undone])) == {run.id, undone.id}
        with pytest.raises(trioforge.InvalidStateError):
            await rt.signal(run, "late")


def test_an_asyncio_client_returns_handles_with_results(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    registry = make_registry()

    async def work() -> None:
        async with trioforge.open_runtime(registry, database=url, **FAST) as rt:
            job = await rt.enqueue("buy", Order("tea", 2))
            with trio.fail_after(10):
                await rt.wait(job)

    trio.run(work)

    async def main() -> None:
        async with trioforge.aio.open_client(url, registry=registry, poll_interval=0.01) as client:
            [done] = await client.list(status="completed")
            handle = client.job(registry.get("buy"), done.id)
            assert await handle.result(timeout=dt.timedelta(seconds=10)) == Receipt("tea", 6, AT)
            later = await client.enqueue("buy", Order("tea", 1), delay=3600)
            assert isinstance(later, Job)
            with pytest.raises(trioforge.ResultTimeoutError):
                await later.result(timeout=0.05)
            assert await later.cancel()
            with pytest.raises(trioforge.JobCancelledError):
                await later.result()

    asyncio.run(main())
