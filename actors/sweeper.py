"""The sweeper: retention. Only the holder of the ``sweeper`` lease runs it, so one
replica deletes while the others idle.

Every ``interval`` it deletes finished jobs past their retention (per queue and final
state, see ``SweepPlan``; a job given a ``retain`` of its own by that instead), oldest
first, in batches of ``batch`` jobs, each batch its own
short transaction, and at most ``max_batches`` per plan and state in one pass (a backlog
is worked off over several passes rather than in one long one). A pass that leaves a
backlog is followed by the next at once, not an interval later: at one pass a minute, a
queue finishing more than ``batch * max_batches`` jobs a minute would outgrow its
retention for ever. Only finished jobs are ever deleted: an enqueue racing a sweep is
never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import trio

from trioforge._core.clock import Clock
from trioforge._core.states import JobState
from trioforge.actors.storage_actor import StorageHandle, log_failure
from trioforge.storage import ops

__all__ = ["SWEEPER", "SweepPlan", "sweep", "sweeper"]

#: The lease whose holder sweeps.
SWEEPER = "sweeper"

log = logging.getLogger("trioforge.sweeper")


@attrs.frozen
class SweepPlan:
    """What one retention policy deletes: jobs of ``queue`` (None: of every queue not in
    ``exclude``) finished in a state of ``ages`` longer ago than its age in seconds."""

    queue: str | None
    exclude: tuple[str, ...]
    ages: tuple[tuple[JobState, float], ...]


async def sweep(
    storage: StorageHandle,
    plans: Sequence[SweepPlan],
    now: float,
    *,
    batch: int,
    max_batches: int,
) -> tuple[int, bool]:
    """One pass over ``plans``, then over jobs with a retention of their own (which the
    plans leave alone): the number of jobs deleted, and whether some are left for another
    pass (a plan's ``max_batches`` ran out on full batches)."""
    batches: list[ops.Purge | ops.PurgeExpired] = [
        ops.Purge((state,), now - age, batch, plan.queue, plan.exclude, keep_retained=True)
        for plan in plans
        for state, age in plan.ages
    ]
    deleted, left = 0, False
    for op in [*batches, ops.PurgeExpired(now, batch)]:
        for _ in range(max_batches):
            ids: list[int] = await storage.call(op)
            deleted += len(ids)
            if len(ids) < batch:
                break
        else:
            left = True
    return deleted, left


async def sweeper(
    storage: StorageHandle,
    clock: Clock,
    plans: Sequence[SweepPlan],
    *,
    owner: str,
    interval: float,
    batch: int = 500,
    max_batches: int = 20,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    left = False
    while True:
        await trio.sleep(0 if left else interval)
        now, left = clock.now(), False
        try:
            # Held for three intervals: a successor takes over soon after a leader dies.
            if not await storage.call(ops.Lead(SWEEPER, owner, now + 3 * interval)):
                continue
            deleted, left = await sweep(storage, plans, now, batch=batch, max_batches=max_batches)
        except Exception as exc:
            log_failure(log, exc, "retention pass failed; retrying in %.1fs", interval)
            continue
        if deleted:
            log.info("retention: deleted %d finished job(s)", deleted)
