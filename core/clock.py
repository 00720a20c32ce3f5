"""The runtime's notion of time.

Storage keeps epoch seconds, and every stored time is computed by the runtime, never by a
backend. In production that is the wall clock; in tests it is trio's (possibly virtual)
clock shifted to an epoch, so ``MockClock`` drives delays, backoff and leases too.
"""

from __future__ import annotations

import time
from typing import Protocol

import trio

__all__ = ["Clock", "VirtualClock", "WallClock"]


class Clock(Protocol):
    """What the runtime reads time from: wall-clock seconds (``now``) and the trio
    deadline at which a wall-clock time arrives (``deadline``). ``WallClock`` in production,
    ``VirtualClock`` under trio's ``MockClock`` in tests."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def deadline(self, at: float) -> float:
        """The trio deadline (``trio.current_time()`` scale) matching epoch time ``at``."""
        ...


class WallClock:
    """``time.time()``: comparable across processes and machines."""

    def now(self) -> float:
        """Seconds since the Unix epoch, from ``time.time()``."""
        return time.time()

    def deadline(self, at: float) -> float:
        """The trio deadline at which wall-clock time ``at`` arrives."""
        return trio.current_time() + (at - time.time())


class VirtualClock:
    """trio's clock plus a fixed epoch; with ``MockClock`` the epoch time is virtual too."""

    def __init__(self, epoch: float = 1_700_000_000.0) -> None:
        self.epoch = epoch

    def now(self) -> float:
        """``epoch`` plus trio's clock: virtual seconds under ``MockClock``."""
        return self.epoch + trio.current_time()

    def deadline(self, at: float) -> float:
        """The trio deadline at which virtual time ``at`` arrives (``at - epoch``)."""
        return at - self.epoch
