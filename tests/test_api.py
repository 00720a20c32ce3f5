"""The public API on every real-time backend: enqueue checks, outcomes, operations."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import trio

import trioforge
from tests.support.fast import FAST
from tests.support.jobs import Greeting, Summary
from trioforge import JobContext, JobState, Registry, Retry
from trioforge.storage import Backend


def make_registry() -> tuple[Registry, dict[str, Any]]:
    registry = Registry()
    seen: dict[str, Any] = {"hooks": [], "gate": trio.Event(), "progressed": trio.Event()}

    @registry.job("greet", queue="mail", retry=Retry(max_attempts=3, base_delay=0))
    async def greet(ctx: JobContext, payload: Greeting) -> Summary:
        text = f"hello {payload.user}" * payload.times
        return Summary(text, len(text))

    @registry.job("tick")
    async def tick(ctx: JobContext) -> int:
        return ctx.attempt

    @registry.job("slow")
    async def slow(ctx: JobContext, message: str) -> str:
        await ctx.progress(40, message)
        seen["progressed"].set()
        await seen["gate"].wait()
        return "done"

    @registry.job("refuse", retry=Retry(max_attempts=5, base_delay=0))
    async def refuse(ctx: JobContext, reason: str) -> None:
        raise trioforge.Discard(reason)

    @registry.job("sleepy", retry=Retry(max_attempts=2, base_delay=0), timeout=0.05)
    async def sleepy(ctx: JobContext) -> None:
        await trio.sleep_forever()

    @registry.job("parent")
    async def parent(ctx: JobContext, user: str) -> int:
        return (await ctx.enqueue("greet", Greeting(user))).id

    @registry.before_perform
    async def before(ctx: JobContext) -> None:
        seen["hooks"].append(("before", ctx.name, ctx.attempt))

    @registry.after_perform
    async def after(ctx: JobContext, error: BaseException | None) -> None:
        seen["hooks"].append(("after", ctx.name, type(error).__name__ if error else None))

    return registry, seen


async def test_a_job_runs_and_its_typed_result_is_stored(database: str | Backend) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        info = await rt.wait(await rt.enqueue("greet", Greeting("ada", times=2)))
    assert info.status is JobState.COMPLETED
    assert info.payload == {"user": "ada", "times": 2}
    assert info.result == {"text": "hello adahello ada", "length": 18}
    assert info.queue == "mail"
    assert info.attempt == 1
    assert seen["hooks"] == [("before", "greet", 1), ("after", "greet", None)]


async def test_unknown_jobs_and_bad_payloads_are_refused_and_store_nothing(
    database: str | Backend,
) -> None:
    registry, _ = make_registry()
    async with trioforge.open_runtime(registry, database=database, queues={}) as rt:
        with pytest.raises(trioforge.UnknownJobError, match="no job named 'nope'"):
            await rt.enqueue("nope", {})
        with pytest.raises(
            trioforge.PayloadError,
            match=r"\$: expected Greeting or a dict of its fields, got str 'ada'",
        ):
            await rt.enqueue("greet", "ada")
        with pytest.raises(trioforge.PayloadError, match="user"):
            await rt.enqueue("greet", {"times": 2})  # a field is missing
        with pytest.raises(trioforge.PayloadError, match="unknown key"):
            await rt.enqueue("greet", {"user": "ada", "colour": "red"})  # a typo'd field
        with pytest.raises(trioforge.PayloadError, match="takes no payload"):
            await rt.enqueue("tick", {"x": 1})
        with pytest.raises(trioforge.PayloadError, match="times"):
            await rt.enqueue("greet", {"user": "x", "times": float("nan")})
        with pytest.raises(trioforge.PayloadError):
            await rt.enqueue_many("greet", [Greeting("a"), "b"])  # one bad: none stored
        assert await rt.list() == []
        # a dict of the right shape is accepted and stored as the class's JSON
        job_id = await rt.enqueue("greet", {"user": "bob"})
        assert (await rt.get(job_id)).payload == {"user": "bob", "times": 1}


async def test_enqueue_many_stores_every_job_in_order(database: str | Backend) -> None:
    registry, _ = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        jobs = await rt.enqueue_many("greet", [Greeting(f"u{i}") for i in range(50)])
        ids = [job.id for job in jobs]
        assert ids == sorted(ids)
        assert len(set(ids)) == 50
        results = [(await rt.wait(i)).result["text"] for i in ids]
    assert results == [f"hello u{i}" for i in range(50)]


async def test_idempotency_key_returns_the_unfinished_job(database: str | Backend) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        first = await rt.enqueue("slow", "a", idempotency_key="k1")
        assert await rt.enqueue("slow", "b", idempotency_key="k1") == first
        assert len(await rt.list(name="slow")) == 1
        seen["gate"].set()
        await rt.wait(first)
        again = await rt.enqueue("slow", "c", idempotency_key="k1")  # first is finished
        assert again != first
        await rt.wait(again)


async def test_progress_is_visible_while_running(database: str | Backend) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        job_id = await rt.enqueue("slow", "halfway")
        await seen["progressed"].wait()
        info = await rt.get(job_id)
        assert (info.status, info.progress, info.progress_message) == (
            JobState.RUNNING,
            40.0,
            "halfway",
        )
        seen["gate"].set()
        assert (await rt.wait(job_id)).result == "done"


async def test_discard_goes_straight_to_dead(database: str | Backend) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        info = await rt.wait(await rt.enqueue("refuse", "bad address"))
    assert (info.status, info.attempt, info.error) == (JobState.DEAD, 1, "bad address")
    assert ("after", "refuse", "Discard") in seen["hooks"]


async def test_a_timed_out_attempt_is_a_failure_and_is_retried(database: str | Backend) -> None:
    registry, _ = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        info = await rt.wait(await rt.enqueue("sleepy"))
    assert (info.status, info.attempt) == (JobState.DEAD, 2)
    assert "JobTimeoutError" in (info.error or "")


async def test_operator_retry_and_discard(database: str | Backend) -> None:
    registry, _ = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        dead = await rt.wait(await rt.enqueue("refuse", "no"))
        assert await rt.retry(dead.id)
        assert (await rt.wait(dead.id)).status is JobState.DEAD  # it refuses again
        assert not await rt.retry((await rt.wait(await rt.enqueue("tick"))).id)  # completed
        later = await rt.enqueue("tick", delay=3600)
        assert (await rt.get(later)).status is JobState.SCHEDULED
        assert await rt.discard(later, "not needed")
        info = await rt.get(later)
        assert (info.status, info.error) == (JobState.DEAD, "not needed")
        with pytest.raises(trioforge.InvalidStateError, match=f"delete it .*delete\\({later}\\)"):
            await rt.discard(later)  # dead already: removing it is delete's work
        with pytest.raises(trioforge.JobNotFoundError):
            await rt.retry(10_000)


async def test_delete_removes_a_finished_job_and_refuses_an_unfinished_one(
    database: str | Backend,
) -> None:
    registry, _ = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        dead = await rt.wait(await rt.enqueue("refuse", "no"))
        done = await rt.wait(await rt.enqueue("tick"))
        later = await rt.enqueue("tick", delay=3600)
        assert await rt.attempts(dead.id) != []
        assert await rt.delete(dead.id) is JobState.DEAD
        assert await rt.delete(done.id) is JobState.COMPLETED
        for read in (rt.get, rt.attempts):
            with pytest.raises(trioforge.JobNotFoundError):
                await read(dead.id)
        with pytest.raises(trioforge.JobNotFoundError):
            await rt.delete(dead.id)
        with pytest.raises(trioforge.InvalidStateError, match="cancel or discard it first"):
            await rt.delete(later)
        assert [j.id for j in await rt.list()] == [later]
        stats = await rt.stats()
        assert (stats.count(JobState.DEAD), stats.count(JobState.COMPLETED)) == (0, 0)


async def test_child_jobs_and_listing(database: str | Backend) -> None:
    registry, _ = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        child_id = (await rt.wait(await rt.enqueue("parent", "kim"))).result
        child = await rt.wait(child_id)
        assert child.result["text"] == "hello kim"
        assert [j.name for j in await rt.list(status="completed")] == ["greet", "parent"]
        assert [j.id for j in await rt.list(queue="mail")] == [child_id]
        stats = await rt.stats()
        assert stats.count("completed") == 2
        assert stats.count(JobState.COMPLETED, queue="mail") == 1
        with pytest.raises(trioforge.InvalidArgumentError, match="unknown status"):
            await rt.list(status="finished")


async def test_when_arguments_are_checked(database: str | Backend) -> None:
    registry, _ = make_registry()
    async with trioforge.open_runtime(registry, database=database, queues={}) as rt:
        with pytest.raises(trioforge.InvalidArgumentError, match="timezone-aware"):
            await rt.enqueue("tick", run_at=dt.datetime(2030, 1, 1))
        with pytest.raises(trioforge.InvalidArgumentError, match="delay"):
            await rt.enqueue("tick", delay=-1)
        with pytest.raises(trioforge.InvalidArgumentError, match="not both"):
            await rt.enqueue("tick", delay=1, run_at=1.0)
        when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        info = await rt.get(await rt.enqueue("tick", run_at=when, priority="critical"))
        assert (info.run_at, info.priority, info.status) == (
            when.timestamp(),
            30,
            JobState.SCHEDULED,
        )
        with pytest.raises(trioforge.JobNotFoundError):
            await rt.get(999_999)


async def test_leaving_normally_lets_running_jobs_finish_within_the_grace(
    database: str | Backend,
) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        job_id = await rt.enqueue("slow", "x")
        await seen["progressed"].wait()
        seen["gate"].set()  # it can finish now; leaving must wait for it
    async with trioforge.open_client(database) as client:
        assert (await client.get(job_id)).status is JobState.COMPLETED


async def test_leaving_releases_jobs_that_outlast_the_grace(database: str | Backend) -> None:
    registry, seen = make_registry()
    async with trioforge.open_runtime(
        registry, database=database, shutdown_grace=0.05, **FAST
    ) as rt:
        job_id = await rt.enqueue("slow", "x")
        await seen["progressed"].wait()
    async with trioforge.open_client(database) as client:
        info = await client.get(job_id)
    assert (info.status, info.attempt) == (JobState.AVAILABLE, 0)  # released, not counted


async def test_bad_configuration_is_refused(database: str | Backend) -> None:
    registry, _ = make_registry()
    with pytest.raises(trioforge.ConfigurationError, match="worker counts >= 0"):
        async with trioforge.open_runtime(registry, database=database, queues={"mail": -1}):
            pass
    with pytest.raises(trioforge.ConfigurationError, match="scheme"):
        async with trioforge.open_client("jobs.db"):
            pass
    with pytest.raises(trioforge.ConfigurationError, match="already defined"):
        registry.job("greet")(registry.get("greet").handler)


async def test_ids_out_of_range_are_not_found_and_non_ints_are_refused(
    database: str | Backend,
) -> None:
    registry, _ = make_registry()
    async with trioforge.open_runtime(registry, database=database, queues={}) as rt:
        operations = (rt.get, rt.wait, rt.cancel, rt.retry, rt.discard)
        for operation in operations:
            for job_id in (10**30, 2**63, -(2**63) - 1, 0):
                with pytest.raises(trioforge.JobNotFoundError, match=f"no job with id {job_id}"):
                    await operation(job_id)
            for bad in ("1", 1.0, True, None):
                with pytest.raises(trioforge.InvalidArgumentError, match="a job id is an int"):
                    await operation(bad)  # type: ignore[arg-type]
        assert await rt.list() == []
