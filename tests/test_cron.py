"""Cron schedules fired by the runtime: on time, once, across restarts and replicas."""

from __future__ import annotations

import datetime as dt
from functools import partial

import trio

import trioforge
from tests.conftest import FAST
from tests.virtual import EPOCH, run_virtual
from trioforge import CronContext, JobState, Registry, VirtualClock
from trioforge.actors.cron import ON_TIME
from trioforge.storage import MemoryBackend

#: The virtual clock's epoch, 2023-11-14 22:13:20 UTC; ticks every 5 minutes fall on :15 ...
FIRST_FIVE = dt.datetime(2023, 11, 14, 22, 15, tzinfo=dt.UTC).timestamp()


def make_registry(
    expr: str = "*/5 * * * *", **options: object
) -> tuple[Registry, list[tuple[float, float, str]]]:
    registry = Registry()
    runs: list[tuple[float, float, str]] = []  # (scheduled_at, started, run_id)

    @registry.cron(expr, timezone="Europe/Berlin", **options)  # type: ignore[arg-type]
    async def report(ctx: CronContext) -> str:
        assert ctx.scheduled_at.tzinfo is not None
        runs.append((ctx.scheduled_at.timestamp(), CLOCK[0].now(), ctx.run_id))
        return ctx.scheduled_at.isoformat()

    return registry, runs


CLOCK: list[VirtualClock] = []


async def serve(
    registry: Registry, backend: MemoryBackend, clock: VirtualClock, *, seconds: float
) -> None:
    CLOCK[:] = [clock]
    async with trioforge.open_runtime(registry, database=backend, clock=clock):
        await trio.sleep(seconds)


def test_ticks_fire_on_time_once_each_with_their_context() -> None:
    registry, runs = make_registry()
    backend = MemoryBackend()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        await serve(registry, backend, clock, seconds=3600)

    run_virtual(scenario, backend)
    ticks = [FIRST_FIVE + 300 * i for i in range(12)]
    assert [r[0] for r in runs] == ticks
    for scheduled, started, run_id in runs:
        assert scheduled <= started < scheduled + 0.5  # fired at the tick, not before
        assert run_id.startswith("cron:report@")


def test_restarts_neither_skip_nor_repeat_ticks() -> None:
    registry, runs = make_registry()
    backend = MemoryBackend()

    run_virtual(partial(serve, registry, seconds=21.5 * 60), backend)  # until 22:34:50
    # Down for 30 s, over the 22:35 tick: late by 20 s, not missed, so it still fires.
    back = EPOCH + 21.5 * 60 + 0.5 * ON_TIME
    run_virtual(partial(serve, registry, seconds=20 * 60), backend, epoch=back)  # until 22:55:20
    assert [r[0] for r in runs] == [FIRST_FIVE + 300 * i for i in range(9)]
    late = runs[4]
    assert (late[0], late[1]) == (FIRST_FIVE + 1200, back)  # 22:35, run on return


def test_catch_up_replays_at_most_n_missed_ticks_oldest_first() -> None:
    for catch_up, replayed in [(0, 0), (2, 2), (10, 5)]:
        registry, runs = make_registry(catch_up=catch_up)
        backend = MemoryBackend()
        run_virtual(partial(serve, registry, seconds=9 * 60), backend)  # fires :15 and :20
        # Down 27 minutes: :25, :30, :35, :40, :45 were missed; back at 22:49:20.
        run_virtual(partial(serve, registry, seconds=6 * 60), backend, epoch=EPOCH + 36 * 60)
        missed = [FIRST_FIVE + 300 * i for i in range(2, 7)]
        expected = [FIRST_FIVE, FIRST_FIVE + 300, *missed[len(missed) - replayed :]]
        expected += [FIRST_FIVE + 300 * 7, FIRST_FIVE + 300 * 8]  # then 22:50 and 22:55
        # Enqueued oldest first (job ids follow ticks); replays start together, in any order.
        enqueued = [backend._rows[i].run_at for i in sorted(backend._rows)]
        assert enqueued == expected, catch_up
        assert sorted(r[0] for r in runs) == expected, catch_up


def test_two_runtimes_on_one_database_fire_each_tick_once() -> None:
    registry, runs = make_registry()
    backend = MemoryBackend()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(partial(serve, registry, backend, clock, seconds=30 * 60))

    run_virtual(scenario, backend)
    assert [r[0] for r in runs] == [FIRST_FIVE + 300 * i for i in range(6)]


def test_overlap_skip_records_ticks_whose_previous_run_is_unfinished() -> None:
    registry = Registry()
    starts: list[float] = []

    @registry.cron("*/5 * * * *", overlap="skip")
    async def slow(ctx: CronContext) -> None:
        starts.append(ctx.scheduled_at.timestamp())
        await trio.sleep(7 * 60)  # longer than the period

    backend = MemoryBackend()

    run_virtual(partial(serve, registry, seconds=30 * 60), backend)
    # :15 runs until :22, so :20 is skipped; :25 runs until :32, so :30 is skipped ...
    assert starts == [FIRST_FIVE + 600 * i for i in range(3)]
    [state] = backend._cron.values()
    assert state.skipped == 3


async def test_two_runtimes_fire_a_real_tick_once(shared_url: str) -> None:
    registry = Registry()
    ran = trio.Event()

    @registry.cron("* * * * *")
    async def minutely(ctx: CronContext) -> float:
        ran.set()
        return ctx.scheduled_at.timestamp()

    # A clock whose next minute boundary is 1.5 s away, so the test waits only that long.
    boundary = dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()
    clock = VirtualClock(boundary - 1.5 - trio.current_time())
    async with (
        trioforge.open_runtime(registry, database=shared_url, clock=clock, **FAST) as rt,
        trioforge.open_runtime(registry, database=shared_url, clock=clock, **FAST),
    ):
        with trio.fail_after(20):
            await ran.wait()
            [tick_job] = await rt.list(name="cron:minutely")
            info = await rt.wait(tick_job.id)
    assert (info.status, info.result) == (JobState.COMPLETED, boundary)
    async with trioforge.open_client(shared_url) as client:
        assert len(await client.list(name="cron:minutely")) == 1
