"""Stored times (epoch seconds) as JSON shows them: ISO 8601 strings in UTC.

One form for the CLI's ``--json`` and the HTTP API, readable by people, ``jq``,
``datetime.fromisoformat`` and JavaScript's ``Date`` (milliseconds, ``Z``). Pure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from trioforge.storage import NEVER

__all__ = ["TIME_FIELDS", "iso_utc", "with_iso_times"]

#: The keys of JSON views that hold a time.
TIME_FIELDS = frozenset(
    {"created_at", "run_at", "started_at", "finished_at", "wake_at", "updated_at",
     "heartbeat_at", "last_tick"}
)  # fmt: skip


def iso_utc(ts: float | None) -> str | None:
    """``2026-12-03T10:24:38.123Z``; None for no time and for a time no calendar reaches
    (a run waiting for a signal with no timeout is due at ``NEVER``)."""
    if ts is None or ts != ts or ts >= NEVER:
        return None
    try:
        moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    except (OverflowError, ValueError, OSError):  # beyond the years datetime knows
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def with_iso_times(view: Mapping[str, Any]) -> dict[str, Any]:
    """``view`` with its times (:data:`TIME_FIELDS`, also in nested ``steps``) as ISO
    strings."""
    out = dict(view)
    for key, value in view.items():
        if key in TIME_FIELDS and (value is None or isinstance(value, (int, float))):
            out[key] = iso_utc(value)
        elif key == "steps" and isinstance(value, list):
            out[key] = [with_iso_times(s) if isinstance(s, Mapping) else s for s in value]
    return out
