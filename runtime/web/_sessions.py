"""Logged-in browsers and login attempts, in the memory of the web process.

The session cookie holds a random session id, never the action token: logging out deletes
the session here, so a copy of the cookie is worth nothing afterwards. A restart of the
web process logs every browser out.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

import attrs

__all__ = ["Session", "Sessions", "Throttle"]


@attrs.frozen
class Session:
    #: The token every dashboard form carries back (hidden input ``csrf``).
    csrf: str
    expires_at: float


class Sessions:
    """Session id → session; at most ``most`` (the oldest goes first), each for
    ``lifetime`` seconds of the caller's clock."""

    def __init__(self, lifetime: float = 12 * 3600.0, most: int = 1000) -> None:
        self.lifetime, self.most = lifetime, most
        self._open: OrderedDict[str, Session] = OrderedDict()

    def open(self, now: float) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), now + self.lifetime)
        self._open[session_id] = session
        while len(self._open) > self.most:
            self._open.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None, now: float) -> Session | None:
        session = self._open.get(session_id) if session_id else None
        if session is not None and session.expires_at <= now:
            self.close(session_id)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._open.pop(session_id, None)


class Throttle:
    """Login attempts per client address: a bucket of ``burst`` attempts, refilled at one
    per ``every`` seconds. Addresses whose bucket is full again are forgotten."""

    def __init__(self, burst: int = 10, every: float = 6.0, most: int = 10_000) -> None:
        self.burst, self.every, self.most = burst, every, most
        self._buckets: dict[str, tuple[float, float]] = {}  # address → (tokens, at)

    def take(self, address: str, now: float) -> float:
        """0.0 when an attempt may go ahead (it uses one), else the seconds to wait."""
        tokens = self._level(address, now)
        if tokens < 1.0 - 1e-9:  # after exactly the wait it named, rounding aside
            # A bucket left a rounding error below empty still refills within one period.
            return min((1.0 - tokens) * self.every, self.every)
        self._buckets[address] = (tokens - 1.0, now)
        if len(self._buckets) > self.most:
            self._forget_full(now)
        return 0.0

    def _level(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + max(now - at, 0.0) / self.every)

    def _forget_full(self, now: float) -> None:
        for address in [a for a in self._buckets if self._level(a, now) >= self.burst]:
            del self._buckets[address]
