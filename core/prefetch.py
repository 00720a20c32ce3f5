"""How far a queue's fetcher claims ahead of its free worker slots.

A fetcher waits for each claim to come back before it sends the next. When jobs are short,
a pool's slots can all come free long before the claim returns, and its workers idle for
the rest of the round trip: a drain of no-op jobs then runs at ``size / round trip`` jobs
per second, whatever the workers could do. Claiming a few more jobs than there are free
slots keeps jobs waiting at the workers while the next claim is out.

How many: the slots expected to come free during one claim round trip (completion rate x
round trip, each smoothed over the last claims), never more than the pool's size. That is
the number of jobs workers would otherwise wait for, and it is self-limiting: a job claimed
ahead waits about one round trip before a slot takes it, so long jobs (a low completion
rate) get no prefetch at all, and a job is never held away from other processes for much
longer than a claim takes. No prefetch either while the last claim did not fill its limit:
the queue has no backlog, and a job claimed then would wait at busy workers here instead of
starting at once at an idle process.

Pure arithmetic: the fetcher passes in what it measured and gets the bound back.
"""

from __future__ import annotations

import attrs

__all__ = ["SMOOTHING", "ClaimPace", "claim_ahead"]

#: The weight of a new measurement in the smoothed rate and round trip: a drain reaches
#: its pace within a few claims, one slow claim moves the bound by half its excess.
SMOOTHING = 0.5


@attrs.frozen
class ClaimPace:
    """What a fetcher has seen of its queue over its last claims."""

    #: Worker slots come free per second (jobs done), smoothed; 0 until measured.
    rate: float = 0.0
    #: Seconds a claim takes to come back, smoothed; 0 until measured.
    round_trip: float = 0.0
    #: Whether the last claim returned as many jobs as it asked for (more may be due).
    backlog: bool = False

    def observed(
        self, *, freed: int, seconds: float, round_trip: float, filled: bool
    ) -> ClaimPace:
        """The pace after a claim that took ``round_trip`` seconds and returned as many
        jobs as it asked for (``filled``) or fewer, ``freed`` slots having come free in the
        ``seconds`` since the claim before it was sent (0 seconds: the first claim, no
        rate to measure yet)."""
        rate = self.rate
        if seconds > 0:
            rate = _smooth(self.rate, freed / seconds)
        return ClaimPace(rate, _smooth(self.round_trip, round_trip), filled)


def _smooth(old: float, new: float) -> float:
    return new if old == 0 else old + SMOOTHING * (new - old)


def claim_ahead(pace: ClaimPace, size: int) -> int:
    """How many jobs beyond its free slots a pool of ``size`` workers may claim: the slots
    expected to come free during one claim round trip (rounded down, so jobs that take
    longer than a round trip, one slot after another, get none), at most ``size``, and 0
    without a backlog."""
    if not pace.backlog or size <= 0:
        return 0
    return min(size, int(pace.rate * pace.round_trip))
