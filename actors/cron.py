"""The cron scheduler: turns schedule ticks into jobs, once each across every replica.

Only the holder of the ``cron`` lease computes ticks. For each schedule it reads the last
tick handled (durable), takes the ticks since then up to now, and hands them to storage as
one ``FireCron``: the jobs are enqueued and the state advanced in one transaction, and only
if nobody advanced it first, so even two leaders for a moment cannot fire a tick twice.

A tick fired at most :data:`ON_TIME` seconds late is on time. Older ticks were missed (no
scheduler ran): ``catch_up=N`` replays the N most recent of them, oldest first, and 0 skips
them. A schedule seen for the first time starts from now: nothing before it is missed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs
import trio

from trioforge._core.clock import Clock
from trioforge._core.cron import CronSchedule
from trioforge.actors.storage_actor import StorageHandle, log_failure
from trioforge.storage import NewJob, ops
from trioforge.storage._records import CronState, FireResult

__all__ = ["CRON", "ON_TIME", "CronJob", "cron_scheduler", "plan"]

log = logging.getLogger("trioforge.cron")
_T = TypeVar("_T")

#: The lease whose holder fires cron ticks.
CRON = "cron"
#: Seconds a tick may be late and still count as on time rather than missed.
ON_TIME = 60.0


@attrs.frozen
class CronJob:
    """What the scheduler needs to know of one cron job."""

    name: str
    schedule: CronSchedule
    catch_up: int
    skip_if_running: bool
    queue: str
    priority: int
    max_attempts: int
    #: Its runs' own retention, as stored (``NewJob.retain``); None: the queue's.
    retain: str | None = None


def _at(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def plan(job: CronJob, state: CronState | None, now: float) -> ops.FireCron | None:
    """The storage operation that brings ``job`` up to ``now`` (None: nothing is due)."""
    if state is None:
        return ops.FireCron(job.name, None, now, ())
    due = job.schedule.fires_between(_at(state.last_tick), _at(now))
    if not due:
        return None
    ticks = [t.timestamp() for t in due]
    missed = [t for t in ticks if now - t > ON_TIME]
    on_time = ticks[len(missed) :]
    fire = (missed[-job.catch_up :] if job.catch_up else []) + on_time
    jobs = tuple(
        NewJob(
            name=job.name,
            queue=job.queue,
            payload=json.dumps({"scheduled_at": tick}),
            priority=job.priority,
            run_at=tick,
            max_attempts=job.max_attempts,
            idempotency_key=f"{job.name}@{tick!r}",
            retain=job.retain,
        )
        for tick in fire
    )
    return ops.FireCron(job.name, state.last_tick, ticks[-1], jobs, job.skip_if_running)


async def cron_scheduler(
    storage: StorageHandle,
    clock: Clock,
    jobs: Sequence[CronJob],
    *,
    owner: str,
    interval: float,
    wake: Callable[[str, float], None],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    # Per schedule: the stored last tick this was computed from, and the next tick after it.
    # Re-planned only when that tick is due or another process moved the state.
    known: dict[str, tuple[float | None, float]] = {}
    failing = _Failing()
    while True:
        now = clock.now()
        wake_at = now + interval  # leadership is re-checked at least this often
        try:
            if await storage.call(ops.Lead(CRON, owner, now + 3 * interval)):
                states: dict[str, CronState] = await storage.call(ops.CronStates())
                for job in jobs:
                    state = states.get(job.name)
                    last = state.last_tick if state else None
                    seen = known.get(job.name)
                    if seen is None or seen[0] != last or now >= seen[1]:
                        try:
                            seen = await _bring_up_to_date(storage, job, state, now, wake)
                        except _PlanningError as exc:  # this schedule only: retried next pass
                            failing.failed(job.name, exc.__cause__ or exc)
                            known.pop(job.name, None)
                            continue
                        failing.planned(job.name)
                        known[job.name] = seen
                    wake_at = min(wake_at, seen[1])
        except Exception as exc:
            known.clear()
            log_failure(log, exc, "cron pass failed; retrying in %.1fs", interval)
        await trio.sleep_until(clock.deadline(wake_at))


class _PlanningError(Exception):
    """Computing one schedule's ticks failed (its ``__cause__`` says why)."""


@attrs.define
class _Failing:
    """The schedules whose planning fails, each logged once until it succeeds again (a
    pass runs every few seconds; a traceback each time would bury everything else)."""

    errors: dict[str, str] = attrs.field(factory=dict)

    def failed(self, name: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if self.errors.get(name) != text:
            self.errors[name] = text
            log.error(
                "%s: cannot compute its cron ticks (other schedules go on); retrying each pass",
                name,
                exc_info=exc,
            )

    def planned(self, name: str) -> None:
        if self.errors.pop(name, None) is not None:
            log.info("%s: cron ticks computed again", name)


def _planned(job: CronJob, compute: Callable[[], _T]) -> _T:
    """``compute()``, its failure marked as this schedule's own."""
    try:
        return compute()
    except Exception as exc:
        raise _PlanningError(job.name) from exc


async def _bring_up_to_date(
    storage: StorageHandle,
    job: CronJob,
    state: CronState | None,
    now: float,
    wake: Callable[[str, float], None],
) -> tuple[float | None, float]:
    """Fire what is due; return the state's last tick now and the next tick after it."""
    op = _planned(job, lambda: plan(job, state, now))
    last = state.last_tick if state else None
    if op is not None:
        result: FireResult = await storage.call(op)
        if result.conflict:  # another scheduler got there first: re-read next pass
            return (None, now)
        last = op.new_last
        if result.job_ids:
            wake(job.queue, now)
        if result.skipped:
            log.info("%s: %d tick(s) skipped, previous run unfinished", job.name, result.skipped)
    after = _at(max(last or now, now))
    upcoming = _planned(job, lambda: job.schedule.next_fires(after, 1))
    return (last, upcoming[0].timestamp() if upcoming else float("inf"))
