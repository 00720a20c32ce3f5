"""The heartbeat and the reaper: keeping this process's leases alive, rescuing others'.

Heartbeat: every ``interval``, a batched renewal of every lease held here (jobs running,
claimed, or with their outcome not yet recorded; ``RENEW_MAX`` a request) and this
process's row in the process registry; after a failure it retries with backoff rather than
wait a whole interval. The reply says which jobs were cancelled by another process (their
scopes fire, ending them as ``cancelled``) and which leases were lost (their scopes fire;
nothing is written). A :class:`Nudge` brings the next beat forward (what the process says
of itself changed: its listener now hears its own channel).

Reaper: every ``interval``, if this process holds (or takes) the ``maintenance`` lease, so
that one replica does it rather than all: running jobs whose lease expired (their owner
stopped heartbeating: crashed or hung) become ``retrying`` as a new attempt, or ``dead`` when
attempts are spent; registry rows of processes silent for a job lease are forgotten; the
stored job counts are compacted (``FoldCounts``: PostgreSQL's delta rows summed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from trioforge._core.clock import Clock
from trioforge.actors import events
from trioforge.actors.running import RunningJobs
from trioforge.actors.storage_actor import StorageHandle, log_failure
from trioforge.storage import ProcessDetails, RenewResult, RescuedJob, ops

__all__ = [
    "MAINTENANCE", "RENEW_MAX", "RETRY_FIRST", "Nudge", "heartbeat", "reaper", "renew_leases",
]  # fmt: skip

#: The first pause before retrying a failed storage write that must not be lost (lease
#: renewals, outcomes); doubled on each further failure.
RETRY_FIRST = 0.05

#: The lease whose holder runs maintenance: rescue, then folding the stored counts (cron
#: and retention lead with leases of their own, so other processes may hold them).
MAINTENANCE = "maintenance"

#: Most leases renewed in one request. A wide pool holds tens of thousands: one renewal
#: of 50,000 built its arrays and reply all at once (tens of MB at the process's peak).
RENEW_MAX = 10_000

log = logging.getLogger("trioforge.leases")


class Nudge:
    """Asks the heartbeat to beat now rather than at the end of its interval."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        """Beat now (never blocks); nudges before that beat are one."""
        self._event.set()

    async def wait(self, seconds: float) -> None:
        """Until nudged or ``seconds`` passed (a cancel point); the nudge is then spent."""
        with trio.move_on_after(seconds):
            await self._event.wait()
        if self._event.is_set():
            self._event = trio.Event()


async def heartbeat(
    storage: StorageHandle,
    running: RunningJobs,
    clock: Clock,
    *,
    owner: str,
    queues: tuple[str, ...],
    interval: float,
    lease_seconds: float,
    describe: Callable[[], ProcessDetails | None] = lambda: None,
    names: tuple[str, ...] | None = None,
    nudge: Nudge | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    nudge = nudge or Nudge()
    # The first beat comes before ``started``: once the runtime is open, it is registered.
    try:
        await storage.call(ops.Beat(owner, queues, describe(), names))
    except Exception as exc:
        log_failure(log, exc, "first heartbeat failed; retrying in %.1fs", interval)
    task_status.started()
    wait, failing = interval, False
    while True:
        await nudge.wait(wait)
        try:
            # Leases first: they are what a database blip must not cost.
            await renew_leases(storage, running, clock, owner=owner, lease_seconds=lease_seconds)
            await storage.call(ops.Beat(owner, queues, describe(), names))
        except Exception as exc:
            # Retry soon, backing off to the interval: a renewal that waits a whole
            # interval after a blip brings held leases that much closer to expiring.
            wait = min(interval, wait * 2 if failing else RETRY_FIRST)
            if not failing:
                log.warning("heartbeat failed (%s); retrying with backoff", exc)
            failing = True
            continue
        if failing:
            log.info("heartbeat recovered")
        wait, failing = interval, False


async def renew_leases(
    storage: StorageHandle, running: RunningJobs, clock: Clock, *, owner: str, lease_seconds: float
) -> None:
    """Renew every lease held here, :data:`RENEW_MAX` a request, every request sent at once
    (one after the other, each would wait for a scheduler pass, and a wide pool's passes
    can take seconds while a big claim starts); each reply applied to ``running``. Raises
    (an ``ExceptionGroup`` when several requests fail) if a request failed."""
    leases = running.leases()
    until = clock.now() + lease_seconds

    async def renew(chunk: tuple[tuple[int, int], ...]) -> None:
        renewal: RenewResult = await storage.call(ops.Renew(owner, chunk, until))
        running.renewed(chunk, until, renewal)

    if len(leases) <= RENEW_MAX:  # the common case: no nursery
        if leases:
            await renew(leases)
        return
    async with trio.open_nursery() as nursery:
        for start in range(0, len(leases), RENEW_MAX):
            nursery.start_soon(renew, leases[start : start + RENEW_MAX])


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
            rescued: list[RescuedJob] = await storage.call(ops.Rescue(now - lease_seconds))
            await storage.call(ops.FoldCounts())
        except Exception as exc:
            log_failure(log, exc, "rescue pass failed; retrying in %.1fs", interval)
            continue
        if rescued:
            on_rescued()
            for job in rescued:
                events.log_event(events.rescued(job))
