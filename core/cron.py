"""Cron schedules: which real instants a five-field expression fires at, in a time zone.

Theory of operation
-------------------
croniter walks *local wall-clock* times (naive datetimes): every local minute the
expression matches. Daylight saving makes the map from local times to real instants
uneven, so each local tick becomes zero, one or two instants by the classic (Vixie/Debian)
cron policy:

* A schedule is *fixed-time* when neither its minute nor its hour field starts with ``*``
  (``30 2 * * *``, ``0 9 * * MON-FRI``); otherwise it is *wildcard* (``*/15 * * * *``).
* Spring forward (a gap: local times that never happen): a fixed-time tick in the gap fires
  once, at the end of the gap; several such ticks still fire once. Wildcard ticks in the gap
  do not exist and do not fire.
* Fall back (an overlap: local times that happen twice): a fixed-time tick fires once, at
  its first occurrence; a wildcard tick fires at each real occurrence, so ``*/15`` keeps
  firing every 15 real minutes.

An expression that never fires (``0 0 30 2 *``, 30 February) is refused when declared: it
has no fire in the :data:`HORIZON` after the declaration. Past a declaration, a walk that
finds no fire for :data:`SILENCE` ends instead of searching on, so no expression (nor one
whose ticks all fall into daylight-saving gaps) makes a caller loop or raise.

Everything here is pure, no I/O, and no clock but the declaration check's "now". Instants
come back as aware datetimes in the schedule's zone.
"""

from __future__ import annotations

import datetime as dt
import heapq
import zoneinfo
from collections.abc import Iterator

from croniter import CroniterBadDateError, croniter

from trioforge._core.errors import ConfigurationError

__all__ = ["HORIZON", "SILENCE", "CronSchedule", "upcoming"]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MINUTE = dt.timedelta(minutes=1)
#: More than any daylight-saving shift: instants this far behind the walk are final.
_SETTLE = dt.timedelta(hours=3)
#: A declared expression must fire within this long: a little more than the longest gap
#: between two 29 Februaries (2096 to 2104), so every leap-day expression is accepted.
HORIZON = dt.timedelta(days=9 * 366)
#: A walk with no fire for this long ends: croniter's own search limit (50 years).
SILENCE = dt.timedelta(days=50 * 366)


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


class CronSchedule:
    """A five-field cron expression (names such as MON-FRI and JAN allowed, and the
    ``@daily``-style macros) in an IANA time zone, UTC by default.

    Raises :class:`~trioforge.ConfigurationError` for an invalid expression or zone.
    """

    def __init__(self, expr: str, timezone: str = "UTC") -> None:
        expanded = _MACROS.get(expr.strip().lower(), expr.strip())
        fields = expanded.split()
        if len(fields) != 5:
            raise ConfigurationError(
                f"cron expression {expr!r} has {len(fields)} fields; use five: "
                "minute hour day-of-month month day-of-week (e.g. '0 9 * * MON-FRI')"
            )
        if not croniter.is_valid(expanded):
            raise ConfigurationError(
                f"invalid cron expression {expr!r}; check each field's values and ranges "
                "(minute 0-59, hour 0-23, day 1-31, month 1-12 or JAN-DEC, weekday 0-6 or SUN-SAT)"
            )
        self.expr = expr
        self.timezone = timezone
        self.zone = _zone(timezone)
        self._expanded = expanded
        #: Fixed-time or wildcard, for the daylight-saving policy (see the module docstring).
        self.fixed_time = not (fields[0].startswith("*") or fields[1].startswith("*"))
        now = dt.datetime.now(dt.UTC)
        if next(self._walk(now, HORIZON), None) is None:
            raise ConfigurationError(
                f"cron expression {expr!r} does not fire in the next {HORIZON.days // 366} "
                f"years ({timezone}); check that its day exists in its months (no 30 "
                "February, no 31 April)"
            )

    def __repr__(self) -> str:
        return f"CronSchedule({self.expr!r}, timezone={self.timezone!r})"

    def _instants(self, local: dt.datetime) -> list[dt.datetime]:
        """The real instants of local wall-clock tick ``local`` (naive), in UTC.

        (UTC, because aware datetimes sharing a tzinfo compare by wall time, ignoring
        ``fold``: the two occurrences of 01:30 in an overlap would compare equal.)
        """
        first = local.replace(tzinfo=self.zone, fold=0)
        second = local.replace(tzinfo=self.zone, fold=1)
        exists = first.astimezone(dt.UTC).astimezone(self.zone).replace(tzinfo=None) == local
        if not exists:  # in a spring-forward gap
            if not self.fixed_time:
                return []
            end = local
            while True:  # the first local minute after the gap
                end += _MINUTE
                aware = end.replace(tzinfo=self.zone).astimezone(dt.UTC)
                if aware.astimezone(self.zone).replace(tzinfo=None) == end:
                    return [aware]
        if first.utcoffset() != second.utcoffset() and not self.fixed_time:
            # an overlap: a wildcard tick happens twice
            return [first.astimezone(dt.UTC), second.astimezone(dt.UTC)]
        return [first.astimezone(dt.UTC)]

    def fires(self, after: dt.datetime) -> Iterator[dt.datetime]:
        """Every instant strictly after ``after`` (aware), in order; it ends only after
        :data:`SILENCE` without one."""
        if after.tzinfo is None:
            raise ConfigurationError("`after` must be timezone-aware")
        return self._walk(after, SILENCE)

    def _walk(self, after: dt.datetime, silence: dt.timedelta) -> Iterator[dt.datetime]:
        """The instants after ``after``, ending once ``silence`` passes without one."""
        local = after.astimezone(self.zone).replace(tzinfo=None) - _SETTLE
        after = after.astimezone(dt.UTC)
        quiet_until = after + silence
        ticks = croniter(self._expanded, local)
        pending: list[dt.datetime] = []
        seen: set[dt.datetime] = set()
        while True:
            horizon: dt.datetime | None
            try:
                tick: dt.datetime = ticks.get_next(dt.datetime)
            except CroniterBadDateError:  # no tick for decades: none to come
                horizon = None
            else:
                for instant in self._instants(tick):
                    if instant > after and instant not in seen:
                        seen.add(instant)
                        heapq.heappush(pending, instant)
                horizon = tick.replace(tzinfo=self.zone).astimezone(dt.UTC) - _SETTLE
            while pending and (horizon is None or pending[0] <= horizon):
                instant = heapq.heappop(pending)
                seen.discard(instant)
                quiet_until = instant + silence
                yield instant.astimezone(self.zone)
            if horizon is None or horizon > quiet_until:
                return

    def next_fires(self, after: dt.datetime, count: int) -> list[dt.datetime]:
        """The next ``count`` instants strictly after ``after``."""
        out: list[dt.datetime] = []
        for instant in self.fires(after):
            if len(out) == count:
                break
            out.append(instant)
        return out

    def fires_between(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        """Every instant in ``(start, end]``."""
        out: list[dt.datetime] = []
        end = end.astimezone(dt.UTC)
        for instant in self.fires(start):
            if instant.astimezone(dt.UTC) > end:
                break
            out.append(instant)
        return out


def upcoming(schedule: CronSchedule, after: dt.datetime, count: int) -> list[dt.datetime] | str:
    """The next ``count`` fires for a listing, or the error computing them as text: one
    schedule that cannot be planned shows as such and never hides the others."""
    try:
        return schedule.next_fires(after, count)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
