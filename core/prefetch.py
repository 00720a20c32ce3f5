"""How far a queue's fetcher claims ahead of its free worker slots, and when it claims.

A fetcher has one claim out at a time. When jobs are short, a pool's slots can all come free
long before the claim returns, and its workers idle for the rest of the round trip: a drain
of no-op jobs then runs at ``size / round trip`` jobs per second, whatever the workers could
do. Claiming more jobs than there are free slots keeps jobs waiting at the workers while the
next claim is out.

How many more: the slots expected to come free during one claim round trip while every
slot is busy (``size x round trip / job duration``, the duration and round trip each
smoothed over the last claims), never more than the pool's size. That is the number of jobs
the workers would otherwise wait for, and it bounds itself: a job claimed ahead waits about
one round trip before a slot takes it, so jobs that take much longer than a claim get no
prefetch at all (a pool of 64 with 5 ms claims prefetches nothing for jobs of 320 ms or
more), and a job is held away from other processes for about as long as a claim takes. The
job duration is measured, not the completion rate, which a pool short of jobs keeps low.
No prefetch while the last claim did not fill its limit either: the queue has no backlog,
and a job claimed then would wait at busy workers here instead of starting at once at an
idle process.

What one claim asks for, and when it is sent: see :func:`claim_size`. While jobs claimed
ahead still wait, a claim goes out once it can ask for at least half the bound (a claim
costs about the same for one job as for fifty, and the jobs waiting cover the round trip).

Pure arithmetic: the fetcher passes in what it measured and gets the bound back.
"""

from __future__ import annotations

import attrs

__all__ = ["SMOOTHING", "ClaimPace", "claim_ahead", "claim_size"]

#: The weight of a new measurement in the smoothed figures: a drain reaches its pace within
#: a few claims, and one slow claim moves the bound by half its excess.
SMOOTHING = 0.5


@attrs.frozen
class ClaimPace:
    """What a fetcher has seen of its queue over its last claims."""

    #: Seconds a job holds its slot, smoothed (None: no job done yet).
    duration: float | None = None
    #: Seconds a claim takes to come back, smoothed (None: no claim yet).
    round_trip: float | None = None
    #: Whether the last claim returned as many jobs as it asked for (more may be due).
    backlog: bool = False

    def observed(self, *, done: int, busy: float, round_trip: float, filled: bool) -> ClaimPace:
        """The pace after a claim that took ``round_trip`` seconds and returned as many
        jobs as it asked for (``filled``) or fewer; since the claim before it, ``done``
        jobs freed their slots after holding them ``busy`` seconds in all."""
        duration = self.duration
        if done:
            duration = _smooth(duration, busy / done)
        return ClaimPace(duration, _smooth(self.round_trip, round_trip), filled)


def _smooth(old: float | None, new: float) -> float:
    return new if old is None else old + SMOOTHING * (new - old)


def claim_ahead(pace: ClaimPace, size: int) -> int:
    """How many jobs beyond its free slots a pool of ``size`` workers may claim: the slots
    expected to come free during one claim round trip with every slot busy (rounded down),
    at most ``size``; 0 without a backlog or before anything was measured."""
    if not pace.backlog or size <= 0 or pace.duration is None or pace.round_trip is None:
        return 0
    if pace.duration == 0:
        return size
    slots = size * pace.round_trip / pace.duration
    return size if slots >= size else int(slots)


def claim_size(free: int, ahead: int, size: int) -> int:
    """How many jobs a pool of ``size`` workers claims now with ``free`` slots (below 0:
    jobs claimed ahead wait for a slot) and ``ahead`` allowed beyond them; 0: wait for more
    slots to come free.

    The claim is for the slots free when it comes back (``free + ahead`` if ``ahead`` come
    free meanwhile, at most ``size``) and ``ahead`` more to cover the next round trip: a
    claim for ``free + ahead`` counted at sending would come back to slots already filled
    by the last one, and every other claim would be a short one. So after a claim the jobs
    held beyond the slots are about ``ahead`` and never more than ``2 x ahead``.
    """
    want = min(free + 2 * ahead, size + ahead)
    return want if want >= max(1, (ahead + 1) // 2) else 0
