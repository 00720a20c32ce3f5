"""Runtime intervals for tests that run in real time."""

from __future__ import annotations

from typing import Any

#: Short intervals so real-time tests finish fast; never used as synchronisation.
FAST: dict[str, Any] = {"heartbeat_interval": 0.05, "lease_seconds": 5.0, "poll_interval": 0.05}
