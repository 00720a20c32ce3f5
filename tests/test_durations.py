"""Durations: every timeout, delay, interval and age takes seconds or a timedelta, and
refuses NaN, negative and infinite values by the argument's name."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trioforge
from tests.support.fast import FAST
from trioforge import JobContext, Queue, Registry, Retry, WorkflowContext
from trioforge._core.durations import seconds

BAD = [math.nan, -1.0, -0.001, math.inf, -math.inf, dt.timedelta(seconds=-1)]


@given(st.floats(min_value=0, max_value=1e12) | st.integers(0, 10**12))
def test_seconds_are_taken_as_given(value: float) -> None:
    assert seconds(value, "x") == value
    assert seconds(dt.timedelta(seconds=value), "x") == dt.timedelta(seconds=value).total_seconds()


@given(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 <= v < math.inf)
    | st.booleans()
    | st.text()
)
def test_anything_else_is_refused_by_name(value: object) -> None:
    with pytest.raises(trioforge.InvalidArgumentError, match="the_argument"):
        seconds(value, "the_argument", error=trioforge.InvalidArgumentError)  # type: ignore[arg-type]


def test_positive_refuses_zero() -> None:
    with pytest.raises(trioforge.ConfigurationError, match="x must be a finite number of "):
        seconds(dt.timedelta(0), "x", positive=True)


async def noop(ctx: JobContext) -> None:
    return None


async def run(ctx: WorkflowContext) -> None:
    return None


#: Each declaration-time duration: how to give it, and the name its error carries.
DECLARED: list[tuple[str, Callable[[Any], object]]] = [
    ("job 'j': timeout", lambda v: Registry().job("j", timeout=v)(noop)),
    ("job 'j': unique_for", lambda v: Registry().job("j", unique_for=v)(noop)),
    ("job 'j': heartbeat_timeout", lambda v: Registry().job("j", heartbeat_timeout=v)(noop)),
    ("job 'cron:noop': timeout", lambda v: Registry().cron("* * * * *", timeout=v)(noop)),
    ("workflow 'w': timeout", lambda v: Registry().workflow("w", timeout=v)(run)),
    ("job 'j': retain", lambda v: Registry().job("j", retain=v)(noop)),
    ("workflow 'w': retain", lambda v: Registry().workflow("w", retain=v)(run)),
    ("cron schedule '* * * * *': retain", lambda v: Registry().cron("* * * * *", retain=v)(noop)),
    ("Retry.base_delay", lambda v: Retry(base_delay=v)),
    ("Retry.max_delay", lambda v: Retry(max_delay=v)),
    ("Queue timeout", lambda v: Queue(1, timeout=v)),
    ("Retention.dead", lambda v: trioforge.Retention(dead=v)),
]


@pytest.mark.parametrize(("name", "declare"), DECLARED, ids=[n for n, _ in DECLARED])
def test_declarations_take_a_timedelta(name: str, declare: Callable[[Any], object]) -> None:
    declare(dt.timedelta(minutes=5))
    for bad in BAD:
        with pytest.raises(trioforge.ConfigurationError, match=re.escape(name)):
            declare(bad)


def test_a_declared_timedelta_is_kept_in_seconds() -> None:
    registry = Registry()
    job = registry.job("j", timeout=dt.timedelta(minutes=5), unique_for=dt.timedelta(hours=1))(noop)
    assert (job.timeout, job.unique_for) == (300.0, 3600.0)
    retry = Retry(base_delay=dt.timedelta(seconds=2), max_delay=dt.timedelta(minutes=1))
    assert (retry.base_delay, retry.max_delay) == (2.0, 60.0)
    assert Queue(1, timeout=dt.timedelta(seconds=90)).timeout == 90.0


RUNTIME_SETTINGS = [
    "lease_seconds",
    "heartbeat_interval",
    "poll_interval",
    "rescue_interval",
    "shutdown_grace",
    "sweep_interval",
]


@pytest.mark.parametrize("setting", RUNTIME_SETTINGS)
async def test_runtime_settings_take_a_timedelta(setting: str) -> None:
    options: dict[str, Any] = {**FAST, "queues": {}}
    options[setting] = dt.timedelta(seconds=options.get(setting, 1.0))
    async with trioforge.open_runtime(Registry(), database="memory://", **options) as rt:
        assert rt.statistics().queues == {}
    for bad in BAD:
        options[setting] = bad
        with pytest.raises(trioforge.ConfigurationError, match=setting):
            async with trioforge.open_runtime(Registry(), database="memory://", **options):
                pass  # pragma: no cover


async def test_client_poll_interval_takes_a_timedelta() -> None:
    async with trioforge.open_client("memory://", poll_interval=dt.timedelta(seconds=0.5)):
        pass
    with pytest.raises(trioforge.ConfigurationError, match="poll_interval"):
        async with trioforge.open_client("memory://", poll_interval=math.nan):
            pass  # pragma: no cover


def enqueue_call(argument: str) -> Callable[[trioforge.Client, Any], Awaitable[object]]:
    async def call(client: trioforge.Client, value: Any) -> object:
        return await client.enqueue("j", **{argument: value})

    return call


CALLS: list[tuple[str, Callable[[trioforge.Client, Any], Awaitable[object]]]] = [
    ("delay", enqueue_call("delay")),
    ("timeout", enqueue_call("timeout")),
    ("unique_for", enqueue_call("unique_for")),
    ("retain", enqueue_call("retain")),
    ("older_than", lambda c, v: c.purge(status="completed", older_than=v)),
    ("seconds", lambda c, v: c.throughput(v)),
]


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[n for n, _ in CALLS])
async def test_call_arguments_take_a_timedelta(
    name: str, call: Callable[[trioforge.Client, Any], Awaitable[object]]
) -> None:
    registry = Registry()
    registry.job("j")(noop)
    async with trioforge.open_client("memory://", registry=registry) as client:
        await call(client, dt.timedelta(minutes=5))
        for bad in BAD:
            with pytest.raises(trioforge.InvalidArgumentError, match=name):
                await call(client, bad)
        stored = await client.list()
    enqueues = name in ("delay", "timeout", "unique_for", "retain")
    assert len(stored) == (1 if enqueues else 0)  # the refused ones stored nothing
