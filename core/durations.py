"""Durations: every timeout, delay, interval and age takes seconds or a timedelta.

One rule for all of them, so ``timeout=timedelta(minutes=5)`` works wherever ``timeout=300``
does and a NaN, negative or infinite value is refused with the argument's name. Settings
given at declaration (``registry.job``, ``Retry``, ``Queue``, ``open_runtime``) raise
:class:`~trioforge.ConfigurationError`; arguments of a call (``enqueue``, ``job.result``,
a step) raise :class:`~trioforge.InvalidArgumentError`. Both are ``ValueError``.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TypeAlias

from trioforge._core.errors import ConfigurationError

__all__ = ["Duration", "optional_seconds", "seconds"]

#: Seconds (an int or a float) or a :class:`datetime.timedelta`.
Duration: TypeAlias = float | dt.timedelta


def seconds(
    value: Duration,
    what: str,
    *,
    error: type[ValueError] = ConfigurationError,
    positive: bool = False,
) -> float:
    """``value`` in seconds, checked to be finite and >= 0 (> 0 if ``positive``)."""
    number = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise error(f"{what} must be a number of seconds or a datetime.timedelta, got {value!r}")
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise error(f"{what} must be a finite number of seconds {bound}, got {value!r}")
    return float(number)


def optional_seconds(
    value: Duration | None,
    what: str,
    *,
    error: type[ValueError] = ConfigurationError,
    positive: bool = False,
) -> float | None:
    """:func:`seconds`, with None (no limit) passed through."""
    if value is None:
        return None
    return seconds(value, what, error=error, positive=positive)
