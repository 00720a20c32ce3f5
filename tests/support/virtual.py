"""Running a scenario in virtual time on the memory backend (never with threads/sockets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from trioforge import VirtualClock
from trioforge.storage import MemoryBackend
from trioforge.testing import EPOCH, run

__all__ = ["EPOCH", "run_virtual"]


def run_virtual(
    scenario: Callable[[MemoryBackend, VirtualClock], Awaitable[None]],
    backend: MemoryBackend | None = None,
    *,
    epoch: float = EPOCH,
) -> None:
    """Run ``scenario(backend, clock)`` under an autojumping MockClock whose epoch time
    starts at ``epoch``; pass the same ``backend`` to several runs to model restarts."""
    run(scenario, backend or MemoryBackend(), VirtualClock(epoch))
