"""Cron schedules fired by the runtime: on time, once, across restarts and replicas."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
from click.testing import CliRunner

import trioforge
import trioforge.web
from tests.support.fast import FAST
from tests.support.virtual import EPOCH, run_virtual
from tests.test_web_api import served
from trioforge import CronContext, CronSchedule, JobState, Registry, VirtualClock
from trioforge._cli import main
from trioforge.actors import open_storage_channel, storage_actor
from trioforge.actors.cron import ON_TIME, CronJob, cron_scheduler
from trioforge.storage import MemoryBackend, opened

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


class Unplannable(CronSchedule):
    """An accepted schedule whose ticks cannot be computed, as a fault in croniter or in
    the zone data would make it."""

    def fires(self, after: dt.datetime) -> Iterator[dt.datetime]:
        raise RuntimeError("no ticks for you")


def unplannable(registry: Registry, name: str) -> None:
    """Give ``name``'s schedule one whose ticks cannot be computed (no expression declared
    through ``registry.cron`` does that any more)."""
    definition = registry._jobs[name]
    assert definition.cron is not None
    schedule = Unplannable(definition.cron.schedule.expr)
    registry._jobs[name] = attrs.evolve(
        definition, cron=attrs.evolve(definition.cron, schedule=schedule)
    )


broken_cron_registry = Registry()


@broken_cron_registry.cron("*/5 * * * *")
async def a_broken(ctx: trioforge.CronContext) -> None:
    pass


@broken_cron_registry.cron("0 9 * * *")
async def b_fine(ctx: trioforge.CronContext) -> None:
    pass


unplannable(broken_cron_registry, "cron:a_broken")


def test_a_schedule_that_cannot_be_planned_delays_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def job(name: str, schedule: CronSchedule) -> CronJob:
        return CronJob(name, schedule, catch_up=0, skip_if_running=False, queue=name,
                       priority=0, max_attempts=1)  # fmt: skip

    # The broken schedule sorts first, so a pass that stopped at it would never reach
    # the other one.
    jobs = [job("a-broken", Unplannable("*/5 * * * *")), job("b-fine", CronSchedule("*/5 * * * *"))]
    woken: list[tuple[str, float]] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with opened(backend), trio.open_nursery() as nursery:
            handle, receive = open_storage_channel()
            await nursery.start(storage_actor, backend, clock.now, receive)
            async with trio.open_nursery() as scheduler:
                await scheduler.start(
                    partial(cron_scheduler, handle, clock, jobs, owner="me", interval=2.0,
                            wake=lambda queue, at: woken.append((queue, at)))
                )  # fmt: skip
                await trio.sleep(11 * 60)  # until 22:24:20: ticks at 22:15 and 22:20
                scheduler.cancel_scope.cancel()
            handle.close()  # the storage actor ends once its callers are gone

    backend = MemoryBackend()
    with caplog.at_level(logging.INFO, logger="trioforge.cron"):
        run_virtual(scenario, backend)
    ticks = [FIRST_FIVE, FIRST_FIVE + 300]
    assert woken == [("b-fine", tick) for tick in ticks]  # each fired at its tick
    assert [row.run_at for row in backend._rows.values()] == ticks
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [  # once, though retried every pass
        "a-broken: cannot compute its cron ticks (other schedules go on); retrying each pass"
    ]


async def test_the_cron_page_marks_a_schedule_it_cannot_plan_and_shows_the_others(
    sqlite_url: str,
) -> None:
    async with (
        trioforge.open_client(sqlite_url) as client,
        served(trioforge.web.app(client=client, registry=broken_cron_registry)) as http,
    ):
        page = await http.get("/cron")
    assert page.status_code == 200
    assert "unknown: its ticks cannot be computed (RuntimeError: no ticks for you)" in page.text
    assert page.text.count("T09:00:00+00:00") == 3  # cron:b_fine's next three


def test_the_cli_refuses_a_never_firing_expression_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "never_fires_app.py"
    app.write_text(
        "import trioforge\n"
        "registry = trioforge.Registry()\n"
        "@registry.cron('0 0 30 2 *')\n"
        "async def never(ctx: trioforge.CronContext) -> None: ...\n"
    )
    monkeypatch.chdir(tmp_path)
    for command in (["cron", "list"], ["worker"]):
        database = f"sqlite:///{tmp_path / 'jobs.db'}"
        result = CliRunner().invoke(
            main, [*command, "never_fires_app:registry", "--database", database]
        )
        assert result.exit_code == 1, command
        assert result.output.splitlines() == [
            f"error: cannot import 'never_fires_app': {app}:3: cron expression '0 0 30 2 *' does "
            "not fire in the next 9 years (UTC); check that its day exists in its months (no 30 "
            "February, no 31 April)"
        ], command
