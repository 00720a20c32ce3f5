"""CronSchedule against a brute-force reference, biased toward daylight-saving days.

The reference walks every real minute, looks at its local wall-clock time with zoneinfo,
and applies the classic-cron policy directly; it shares nothing with the implementation
but croniter's matching of one local time.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
import trio
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

import trioforge
from trioforge import ConfigurationError, CronSchedule
from trioforge.storage import MemoryBackend

ZONES = [
    "America/New_York",  # US rules
    "Europe/Berlin",  # EU rules
    "Australia/Lord_Howe",  # a 30-minute shift
    "America/Sao_Paulo",  # abolished DST in 2019
    "Asia/Kolkata",  # no DST, a half-hour offset
    "UTC",
]


def transitions(zone: str) -> list[dt.datetime]:
    """Instants in 2025-2026 where the zone's UTC offset changes (to the hour)."""
    tz = zoneinfo.ZoneInfo(zone)
    out, t = [], dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    while t.year < 2027:
        if t.astimezone(tz).utcoffset() != (t + dt.timedelta(hours=1)).astimezone(tz).utcoffset():
            out.append(t)
        t += dt.timedelta(hours=1)
    return out or [dt.datetime(2025, 3, 30, tzinfo=dt.UTC)]


TRANSITIONS = {zone: transitions(zone) for zone in ZONES}


def reference(expr: str, zone: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Fires in (start, end], by walking real minutes."""
    tz = zoneinfo.ZoneInfo(zone)
    fields = expr.split()
    fixed = not (fields[0].startswith("*") or fields[1].startswith("*"))
    out = []
    u = start.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    previous_local = (u - dt.timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
    while u <= end:
        aware = u.astimezone(tz)
        local = aware.replace(tzinfo=None)
        fire = croniter.match(expr, local)
        if fixed:
            fire = fire and aware.fold == 0  # an overlap's second pass: fired already
            skipped = previous_local + dt.timedelta(minutes=1)
            while not fire and skipped < local:  # local minutes a gap jumped over
                fire = croniter.match(expr, skipped)
                skipped += dt.timedelta(minutes=1)
        if fire:
            out.append(u)
        previous_local = local if aware.fold == 0 or local > previous_local else previous_local
        u += dt.timedelta(minutes=1)
    return out


minute_field = st.one_of(
    st.integers(0, 59).map(str),
    st.sampled_from(["*", "*/15", "*/30", "*/7", "0,30", "10-20/5", "45"]),
)
hour_field = st.one_of(
    st.integers(0, 23).map(str),
    st.sampled_from(["*", "*/2", "1-3", "2", "1,2,3", "0-23/6"]),
)
expressions = st.builds(
    lambda m, h, dow: f"{m} {h} * * {dow}",
    minute_field,
    hour_field,
    st.sampled_from(["*", "*", "MON-FRI", "SUN", "0,6"]),
)


@st.composite
def windows(draw: st.DrawFn) -> tuple[str, dt.datetime]:
    zone = draw(st.sampled_from(ZONES))
    around = draw(st.sampled_from(TRANSITIONS[zone]))
    offset = draw(st.integers(-10 * 60, 2 * 60))
    return zone, around + dt.timedelta(minutes=offset)


@given(expressions, windows())
@settings(deadline=None)
def test_fires_match_the_brute_force_reference(expr: str, window: tuple[str, dt.datetime]) -> None:
    zone, start = window
    end = start + dt.timedelta(hours=12)
    got = [t.astimezone(dt.UTC) for t in CronSchedule(expr, zone).fires_between(start, end)]
    assert got == reference(expr, zone, start, end)


def test_classic_cron_daylight_saving_policy_examples() -> None:
    ny = "America/New_York"
    spring = dt.datetime(2026, 3, 8, 5, 0, tzinfo=dt.UTC)  # 00:00 EST, the gap is 02:00-03:00
    fixed = CronSchedule("0,30 2 * * *", ny).next_fires(spring, 1)
    assert [t.isoformat() for t in fixed] == ["2026-03-08T03:00:00-04:00"]  # once, at gap end
    wildcard = CronSchedule("*/30 * * * *", ny).fires_between(
        spring, spring + dt.timedelta(hours=3)
    )
    assert [t.strftime("%H:%M") for t in wildcard] == [
        "00:30",
        "01:00",
        "01:30",
        "03:00",
        "03:30",
        "04:00",
    ]
    fall = dt.datetime(2026, 11, 1, 4, 0, tzinfo=dt.UTC)  # 00:00 EDT; 01:00-02:00 twice
    once = CronSchedule("30 1 * * *", ny).fires_between(fall, fall + dt.timedelta(hours=4))
    assert [t.isoformat() for t in once] == ["2026-11-01T01:30:00-04:00"]
    every = CronSchedule("*/30 * * * *", ny).fires_between(fall, fall + dt.timedelta(hours=3))
    assert [t.isoformat()[11:] for t in every] == [
        "00:30:00-04:00", "01:00:00-04:00", "01:30:00-04:00",
        "01:00:00-05:00", "01:30:00-05:00", "02:00:00-05:00",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("expr", "zone", "needle"),
    [
        ("61 * * * *", "UTC", "invalid cron expression"),
        ("* * * *", "UTC", "has 4 fields"),
        ("0 0 * * * *", "UTC", "has 6 fields"),
        ("0 9 * * MON-FRI", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("0 0 30 2 *", "UTC", r"'0 0 30 2 \*' does not fire in the next 9 years"),
        ("0 12 31 4,6,9,11 *", "Europe/Berlin", "does not fire"),
        # every 02:xx on the fifth Sunday of March falls in Berlin's spring-forward gap
        ("* 2 * 3 0#5", "Europe/Berlin", "does not fire"),
    ],
)
def test_bad_schedules_are_refused_with_the_reason(expr: str, zone: str, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        CronSchedule(expr, zone)


def test_leap_day_schedules_are_accepted_and_keep_firing_across_a_century() -> None:
    for expr in ("0 0 29 2 *", "30 6 29 FEB *"):
        schedule = CronSchedule(expr, "Europe/Berlin")  # accepted: fires within 4 years
        # 2100 is no leap year: the walk goes on over the 8-year gap instead of ending.
        after = dt.datetime(2096, 3, 1, tzinfo=dt.UTC)
        assert [t.year for t in schedule.next_fires(after, 2)] == [2104, 2108]


def test_names_and_macros() -> None:
    start = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)  # a Friday
    weekdays = CronSchedule("0 9 * * MON-FRI", "Europe/Berlin").next_fires(start, 2)
    assert [t.strftime("%a %H:%M") for t in weekdays] == ["Mon 09:00", "Tue 09:00"]
    assert CronSchedule("@daily").next_fires(start, 1) == [dt.datetime(2026, 11, 21, tzinfo=dt.UTC)]
    assert not CronSchedule("@hourly").fixed_time


@given(expressions, windows())
@settings(max_examples=12, deadline=None)
def test_the_runtime_fires_exactly_the_reference_ticks(
    expr: str, window: tuple[str, dt.datetime]
) -> None:
    """End to end: the scheduler actor in virtual time, across a daylight-saving change."""
    zone, start = window
    span = 8 * 3600
    registry = trioforge.Registry()
    fired: list[float] = []

    @registry.cron(expr, timezone=zone)
    async def tick(ctx: trioforge.CronContext) -> None:
        fired.append(ctx.scheduled_at.timestamp())

    async def scenario() -> None:
        clock = trioforge.VirtualClock(start.timestamp() - trio.current_time())
        async with trioforge.open_runtime(
            registry, database=MemoryBackend(), clock=clock,
            heartbeat_interval=60.0, lease_seconds=600.0, poll_interval=600.0,
        ):  # fmt: skip
            await trio.sleep(span + 30)  # past the last tick, so its job has run

    trio.run(scenario, clock=MockClock(autojump_threshold=0))
    expected = reference(expr, zone, start, start + dt.timedelta(seconds=span))
    assert sorted(fired) == [t.timestamp() for t in expected]
