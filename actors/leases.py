"""The heartbeat and the reaper: keeping this process's leases alive, rescuing others'.

Heartbeat: every ``interval``, this process's row in the process registry, and one batched
renewal for every job running here. The reply says which of them were cancelled by another
process (their scopes fire, ending them as ``cancelled``) and which leases were lost (their
scopes fire; nothing is written).

Reaper: every ``interval``, if this process holds (or takes) the ``maintenance`` lease, so
that one replica does it rather than all: running jobs whose lease expired (their owner
stopped heartbeating: crashed or hung) become ``retrying`` as a new attempt, or ``dead`` when
attempts are spent; registry rows of processes silent for a job lease are forgotten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from trioforge._clock import Clock
from trioforge.actors.running import RunningJobs, StopReason
from trioforge.actors.storage_actor import StorageHandle
from trioforge.storage import RenewResult, ops

__all__ = ["MAINTENANCE", "apply_renewal", "heartbeat", "reaper"]

#: The lease whose holder runs maintenance (rescue now; retention and cron later).
MAINTENANCE = "maintenance"

log = logging.getLogger("trioforge.leases")


def apply_renewal(running: RunningJobs, renewal: RenewResult) -> None:
    for job_id in renewal.cancel_requested:
        running.stop(job_id, StopReason.USER)
    for job_id, lease in renewal.lost:
        running.stop(job_id, StopReason.LOST, lease=lease)


async def heartbeat(
    storage: StorageHandle,
    running: RunningJobs,
    clock: Clock,
    *,
    owner: str,
    queues: tuple[str, ...],
    interval: float,
    lease_seconds: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # The first beat comes before ``started``: once the runtime is open, it is registered.
    try:
        await storage.call(ops.Beat(owner, queues))
    except Exception:
        log.exception("first heartbeat failed; retrying in %.1fs", interval)
    task_status.started()
    while True:
        try:
            await trio.sleep(interval)
            await storage.call(ops.Beat(owner, queues))
            leases = running.leases()
            if leases:
                op = ops.Renew(owner, leases, clock.now() + lease_seconds)
                renewal: RenewResult = await storage.call(op)
                apply_renewal(running, renewal)
        except Exception:
            log.exception("heartbeat failed; retrying in %.1fs", interval)


async def reaper(
    storage: StorageHandle,
    clock: Clock,
    *,
    owner: str,
    interval: float,
    lease_seconds: float,
    on_rescued: Callable[[], None] = lambda: None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    while True:
        await trio.sleep(interval)
        now = clock.now()
        try:
            # Held for three intervals: a successor takes over soon after a leader dies.
            if not await storage.call(ops.Lead(MAINTENANCE, owner, now + 3 * interval)):
                continue
            rescued: list[int] = await storage.call(ops.Rescue(now - lease_seconds))
        except Exception:
            log.exception("rescue pass failed; retrying in %.1fs", interval)
            continue
        if rescued:
            on_rescued()
            log.warning(
                "rescued %d job(s) whose worker stopped heartbeating: %s", len(rescued), rescued
            )
