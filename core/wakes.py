"""When a process told alone of due jobs must pass the wake-up on to every process.

On PostgreSQL an enqueue addresses the wake-up for its due jobs to one process serving the
queue (``storage._pg_sql._wake_notices``), which owes them from then on: its next claim
answers for them. Every other process was told nothing and finds jobs left over only at
its next poll, so the addressed one passes the wake-up on to all (a broadcast, as an
enqueue used to send) whenever that claim may have left due jobs another process could
take now:

- it came back full with fewer jobs than were announced: the rest are still there;
- it came back full with a job older than the announced ones (``run_at`` before the
  earliest announced): jobs nobody was told of, such as ones a stopped process released,
  took their places;
- it came back short of what was announced because a rate or concurrency limit held jobs
  back: only a claim learns when the rate limit's next token comes, and only a process
  whose own claim was held wakes when a running job frees a concurrency slot (the notice
  of a written outcome goes to all, but each process re-claims only for the queues its
  last claim found held); this process may have no free slot by then.

A claim that came back short otherwise left nothing to tell: other processes took the
jobs. A process with no free slot, or whose claim failed, passes the wake-up on without
asking this.

Pure: the fetcher passes in what its claim returned.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["left_over"]


def left_over(
    run_ats: Iterable[float],
    *,
    taken: int,
    limit: int,
    owed: int,
    owed_at: float,
    limited: bool,
) -> bool:
    """Whether a claim of ``limit`` that took ``taken`` jobs (due at ``run_ats``), made to
    answer ``owed`` announced jobs due from ``owed_at``, may have left due jobs that other
    processes should hear of; ``limited``: a rate or concurrency limit held due jobs back."""
    if taken >= limit:
        return taken < owed or any(run_at < owed_at for run_at in run_ats)
    return taken < owed and limited
