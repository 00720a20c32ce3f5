"""The net change a write makes to the stored job counts (pure: no I/O).

Both SQL backends keep counts per (queue, state) and per (whole second finished, queue,
state); each write of jobs adds what it changed, in its own transaction, as a few rows
whatever the number of jobs. The statements that move many jobs at once (PostgreSQL's
claims, outcomes, rescues, inserts) count in SQL; the others describe their moves here.
A job's ``finished_at`` is set exactly when it reaches a terminal state, so a job that is
pending or running has none.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

__all__ = ["Place", "Tally"]

#: Where a job is counted: (queue, state, finished_at).
Place = tuple[str, str, float | None]


class Tally:
    """Jobs added to (positive) and taken from (negative) each place by one write."""

    def __init__(self, jobs: Mapping[Place, int] | None = None) -> None:
        self.jobs: Counter[Place] = Counter(jobs)

    @classmethod
    def from_running(cls, ended: Mapping[Place, int]) -> Tally:
        """Running jobs that moved to these places, so many to each."""
        tally = cls(ended)
        for (queue, _, _), n in ended.items():
            tally.add(queue, "running", None, -n)
        return tally

    def add(self, queue: str, state: str, finished_at: float | None, n: int = 1) -> None:
        self.jobs[queue, state, finished_at] += n

    def move(
        self, queue: str, old: tuple[str, float | None], new: tuple[str, float | None]
    ) -> Tally:
        """One job of ``queue`` from (state, finished_at) ``old`` to ``new``."""
        self.add(queue, *old, -1)
        self.add(queue, *new)
        return self

    def counts(self) -> list[tuple[str, str, int]]:
        """The non-zero changes per (queue, state)."""
        out: dict[tuple[str, str], int] = {}
        for (queue, state, _), n in self.jobs.items():
            out[queue, state] = out.get((queue, state), 0) + n
        return [(*key, n) for key, n in out.items() if n]

    def finished(self) -> list[tuple[int, str, str, int]]:
        """The non-zero changes per (second finished, queue, state)."""
        out: dict[tuple[int, str, str], int] = {}
        for (queue, state, at), n in self.jobs.items():
            if at is not None:
                key = (math.floor(at), queue, state)
                out[key] = out.get(key, 0) + n
        return [(*key, n) for key, n in out.items() if n]
