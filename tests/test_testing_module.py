"""trioforge.testing itself."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing
from hypothesis import given, settings

import trioforge
from trioforge import ConfigurationError, CronSchedule, JobContext, JobState
from trioforge.testing import cron_expressions, open_test_runtime, run


def make_registry() -> trioforge.Registry:
    registry = trioforge.Registry()

    @registry.job("later")
    async def later(ctx: JobContext) -> str:
        return "ran"

    return registry


def test_advance_reaches_delayed_jobs_and_run_until_idle_does_not() -> None:
    async def main() -> tuple[JobState, JobState]:
        async with open_test_runtime(make_registry()) as rt:
            job_id = await rt.enqueue("later", delay=3600)
            await rt.run_until_idle()
            before = (await rt.get(job_id)).status
            await rt.advance(3600)
            await rt.run_until_idle()
            return before, (await rt.get(job_id)).status

    assert run(main) == (JobState.SCHEDULED, JobState.COMPLETED)


def test_a_clock_that_never_jumps_is_advanced_by_hand() -> None:
    async def main() -> JobState:
        async with open_test_runtime(make_registry()) as rt:
            job_id = await rt.enqueue("later", delay=60)
            await rt.advance(60)
            await rt.run_until_idle()
            return (await rt.get(job_id)).status

    assert trio.run(main, clock=trio.testing.MockClock()) is JobState.COMPLETED


def test_real_time_is_refused_with_the_fix() -> None:
    async def main() -> None:
        async with open_test_runtime(make_registry()):
            pass

    with pytest.raises(ConfigurationError, match="autojump_clock"):
        trio.run(main)


@given(cron_expressions())
@settings(max_examples=30)
def test_cron_expression_strategy_makes_valid_schedules(expr: str) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert CronSchedule(expr, "Europe/Berlin").next_fires(start, 1)
