"""Several runtimes on one database: the process registry and the maintenance leader."""

from __future__ import annotations

from typing import Any

import trio

import trioforge
from tests.support.addressing import Claims
from tests.support.fast import FAST
from tests.support.listening import SLOW, listener_registry
from trioforge import JobContext, JobState, Registry
from trioforge.actors.leases import MAINTENANCE
from trioforge.storage import ProcessInfo, backend_for_url, opened, ops


async def storage_op(url: str, op: ops.Op) -> Any:
    async with opened(backend_for_url(url)) as backend:
        [result] = await backend.execute([op], trioforge.WallClock().now())
    return result


async def test_runtimes_register_and_one_of_them_leads(shared_url: str) -> None:
    registry = Registry()

    @registry.job("noop")
    async def noop(ctx: JobContext) -> None:
        pass

    async with (
        trioforge.open_runtime(registry, database=shared_url, owner="alpha", **FAST) as alpha,
        trioforge.open_runtime(registry, database=shared_url, owner="beta", **FAST),
    ):
        # Each registers before open_runtime returns; a job proves alpha is serving.
        await alpha.wait(await alpha.enqueue("noop"))
        processes: list[ProcessInfo] = await storage_op(shared_url, ops.Processes())
        assert sorted(p.owner for p in processes) == ["alpha", "beta"]
        assert {p.queues for p in processes} == {("default",)}
        with trio.fail_after(10):
            # The reapers' first pass elects a leader; a stranger cannot take the lease.
            while await storage_op(shared_url, ops.Lead(MAINTENANCE, "stranger", 1e18)):
                await storage_op(shared_url, ops.Leave("stranger"))
                await trio.sleep(FAST["heartbeat_interval"])
    # Both left cleanly: out of the registry, and the lease is free at once.
    assert await storage_op(shared_url, ops.Processes()) == []
    assert await storage_op(shared_url, ops.Lead(MAINTENANCE, "stranger", 1e18))


async def test_another_process_reaches_an_idle_runtime_without_polling(shared_url: str) -> None:
    """Enqueues (due now and due soon) and a cancel from another connection: on PostgreSQL
    by NOTIFY, on SQLite by the file's data version, never by the 60 s poll."""
    registry, started, stopped = listener_registry()
    async with (
        trioforge.open_runtime(registry, database=shared_url, **SLOW) as rt,
        trioforge.open_client(shared_url, registry=registry) as client,
    ):
        with trio.fail_after(10):
            assert (await rt.wait(await client.enqueue("quick"))).result == "ran"
            later = await client.enqueue("quick", delay=0.3)
            info = await rt.wait(later)
            assert info.started_at is not None
            assert info.started_at >= info.run_at
            job_id = await client.enqueue("wait-here")
            await started.wait()
            await client.cancel(job_id)
            await stopped.wait()
            assert (await rt.wait(job_id)).status is JobState.CANCELLED


async def test_watching_threads_take_no_token_of_the_default_thread_limiter(
    shared_url: str,
) -> None:
    """SQLite's listener and change feed are threads for as long as they watch: they must
    leave the default limiter's tokens to the application's own ``trio.to_thread`` calls
    and to storage's batches, here with a single token among them all."""
    registry, _, _ = listener_registry()
    trio.to_thread.current_default_thread_limiter().total_tokens = 1
    with trio.fail_after(10):  # a thread holding the token would stall storage: no answer
        async with (
            trioforge.open_runtime(registry, database=shared_url, **SLOW) as rt,
            trioforge.open_client(shared_url, registry=registry) as client,
        ):
            for _ in range(3):  # heard by the listener, seen by wait()'s change feed
                await rt.wait(await client.enqueue("quick"))
            assert await trio.to_thread.run_sync(lambda: "the app's") == "the app's"


def announced_registry() -> tuple[Registry, trio.Event, trio.Event, list[int]]:
    """Jobs whose start another process's write must announce (no new row does): ``hold``
    (queue ``a``) holds the one slot of a concurrency limit that ``after`` (queue ``b``)
    shares, until the second event is set; ``flaky`` fails its only attempt the first
    time; the workflow ``waits`` returns the signal it waits for."""
    registry = Registry()
    held, release, flaky_tries = trio.Event(), trio.Event(), []
    slot = trioforge.ConcurrencyLimit("slot", 1)

    @registry.job("hold", queue="a", concurrency=slot)
    async def hold(ctx: JobContext) -> None:
        held.set()
        await release.wait()

    @registry.job("after", queue="b", concurrency=slot)
    async def after(ctx: JobContext) -> str:
        return "ran"

    @registry.job("flaky", queue="b", retry=trioforge.Retry(max_attempts=1))
    async def flaky(ctx: JobContext) -> str:
        flaky_tries.append(ctx.attempt)
        if len(flaky_tries) == 1:
            raise RuntimeError("first time")
        return "ran"

    @registry.workflow("waits", queue="b")
    async def waits(ctx: trioforge.WorkflowContext) -> str:
        return str(await ctx.wait_for_signal("go"))

    return registry, held, release, flaky_tries


async def status_is(client: trioforge.Client, job_id: trioforge.JobId, status: JobState) -> None:
    """Poll until ``job_id`` is in ``status`` (what another runtime did has no event here)."""
    while (await client.get(job_id)).status is not status:  # noqa: ASYNC110
        await trio.sleep(0.02)


async def test_writes_that_add_no_job_reach_another_process_without_polling(
    shared_url: str,
) -> None:
    """A concurrency slot freed in one runtime, a signal to a waiting workflow run, a job
    retried and a queue resumed from another connection: the runtime serving queue ``b``
    starts what they make runnable at once, never at its 60 s poll (PostgreSQL: NOTIFY;
    SQLite: the announcements its listener reads when the file changes)."""
    registry, held, release, _ = announced_registry()
    b = backend_for_url(shared_url)
    claims = Claims(b)
    async with (
        trioforge.open_runtime(registry, database=shared_url, queues={"a": 1}, **SLOW),
        trioforge.open_runtime(registry, database=b, queues={"b": 4}, **SLOW) as rt,
        trioforge.open_client(shared_url, registry=registry) as client,
    ):
        with trio.fail_after(15):
            await client.enqueue("hold")
            await held.wait()
            mark = claims.sent
            after = await client.enqueue("after")
            await claims.back_after(mark)  # b claimed since: the slot held the job back
            assert (await client.get(after)).status is JobState.AVAILABLE
            release.set()  # the other runtime records the outcome: the slot is free
            assert (await rt.wait(after)).result == "ran"

            run = await client.enqueue("waits")
            await status_is(client, run, JobState.SCHEDULED)  # suspended, waiting
            await client.signal(run, "go", "now")
            assert (await rt.wait(run)).result == "now"

            flaky = await client.enqueue("flaky")
            assert (await rt.wait(flaky)).status is JobState.DEAD
            assert await client.retry(flaky)
            assert (await rt.wait(flaky)).result == "ran"

            assert await client.pause("b")
            mark = claims.sent
            paused = await client.enqueue("after")
            await claims.back_after(mark)  # b claimed since: paused, it took nothing
            assert (await client.get(paused)).status is JobState.AVAILABLE
            assert await client.resume("b")
            assert (await rt.wait(paused)).result == "ran"
