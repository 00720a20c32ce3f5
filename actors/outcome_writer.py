"""The outcome writer: one actor per queue that records what its workers' attempts decided.

Workers hand it ``(job, outcome)`` pairs (:meth:`OutcomeWriter.report`, never blocking) and
take their next job at once; it writes everything waiting (up to ``WRITE_MAX``) as one
fenced ``Finish``, shielded from cancellation, so an outcome reported is never lost to a
cancel. Once written,
it releases the jobs from ``RunningJobs``, wakes the queue for retries and short
suspensions, tells ``Finished`` of jobs that ended, and wakes the queues a concurrency
limit held back (:class:`HeldQueues`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TypeAlias

import trio

from trioforge._core.clock import Clock
from trioforge._core.errors import InvalidArgumentError
from trioforge._core.states import Discarded as DiscardedEvent
from trioforge._core.states import Failed, JobState, next_state
from trioforge._core.states import Suspended as SuspendedEvent
from trioforge.actors.attempts import MAX_ERROR_CHARS
from trioforge.actors.leases import RETRY_FIRST
from trioforge.actors.running import Finished, RunningJobs
from trioforge.actors.storage_actor import StorageHandle
from trioforge.storage import ClaimedJob, Outcome, ops

__all__ = [
    "RETRY_MAX", "WRITE_MAX", "HeldQueues", "OutcomeWriter", "record_outcomes", "refused_outcome",
]  # fmt: skip

# The queue's logger: these lines have always been the queue's.
log = logging.getLogger("trioforge.queue")

#: Longest pause between tries to record outcomes while the database is away.
RETRY_MAX = 0.5

#: Most outcomes written in one ``Finish``: when tens of thousands of jobs of a wide pool
#: end at once, one write of them all held their rows, JSON and reply in memory together
#: (tens of MB at the process's peak). Not much smaller: each write waits for its reply,
#: a scheduler pass, before the next, and a wide pool's passes can take seconds.
WRITE_MAX = 10_000

#: Per outcome: what was written in its place (itself, or the dead outcome standing in for
#: one the database refused) and whether it was applied (a bool), or why it was not
#: written (the error, None for a timeout): try again.
Recorded: TypeAlias = tuple[Outcome, bool | Exception | None]


async def record_outcomes(storage: StorageHandle, outcomes: Sequence[Outcome]) -> list[Recorded]:
    """Write ``outcomes`` as one fenced ``Finish``. An outcome that fails on its own data
    (the backend refuses a value: InvalidArgumentError) fails alone: the batch is written
    again one request per outcome, so the others land at once, and the refused one is
    recorded as :func:`refused_outcome` instead of being tried forever. A database that is
    away fails them all, to be tried again."""
    recorded: list[Recorded] = list(zip(outcomes, await _finish(storage, outcomes), strict=True))
    refused = [
        (i, refused_outcome(outcome, error))
        for i, (outcome, error) in enumerate(recorded)
        if isinstance(error, InvalidArgumentError)
    ]
    written = await _finish(storage, [stand_in for _, stand_in in refused])
    for (i, stand_in), result in zip(refused, written, strict=True):
        log.error(
            "job %d: its outcome could not be stored (%s); recorded it as dead instead",
            stand_in.job_id, recorded[i][1],
        )  # fmt: skip
        recorded[i] = (stand_in, result)
    return recorded


async def _finish(
    storage: StorageHandle, outcomes: Sequence[Outcome]
) -> list[bool | Exception | None]:
    """One ``Finish`` of ``outcomes``; if it fails on data, one per outcome, all at once."""
    if not outcomes:
        return []
    try:
        applied = await storage.call_shielded(ops.Finish(tuple(outcomes)))
    except Exception as exc:
        if len(outcomes) == 1 or not isinstance(exc, InvalidArgumentError):
            return [exc] * len(outcomes)
        alone = await storage.call_each_shielded([ops.Finish((o,)) for o in outcomes])
        return [_applied(result) for result in alone]
    return [None] * len(outcomes) if applied is None else list(applied)


def _applied(result: object) -> bool | Exception | None:
    """A one-outcome ``Finish``'s reply as one outcome's."""
    if isinstance(result, list):
        return bool(result[0])
    return result if isinstance(result, Exception) else None


def refused_outcome(outcome: Outcome, error: Exception) -> Outcome:
    """What stands in for an outcome the database refused (``error``): the job ends dead
    (retrying would fail the same way), its error saying why and holding the refused text
    as ASCII, which every backend stores."""
    kept = outcome.error if outcome.error is not None else outcome.result
    text = (
        f"trioforge could not store how this attempt ended ({type(outcome.event).__name__}), "
        f"so the job ended dead instead: {error}"
    )
    if kept is not None:
        text += f"\nThe refused text, escaped: {ascii(kept)[:MAX_ERROR_CHARS]}"
    return Outcome(outcome.job_id, outcome.lease, DiscardedEvent(), error=text)


class HeldQueues:
    """The queues of this process whose last claim a concurrency limit held back. Any
    queue recording outcomes wakes them all (a job ending here, in whatever queue, may free
    a limit's slot); ``writes`` counts those records, so a claim that raced one can tell."""

    def __init__(self) -> None:
        self.writes = 0
        self._held: dict[str, Callable[[], None]] = {}

    def set(self, queue: str, wake: Callable[[], None] | None) -> None:
        """``queue`` is held (``wake`` wakes it) or, with None, no longer."""
        if wake is None:
            self._held.pop(queue, None)
        else:
            self._held[queue] = wake

    def written(self) -> None:
        self.writes += 1
        for wake in list(self._held.values()):
            wake()


class OutcomeWriter:
    """One queue's outcome writer (see the module docstring); ``wake`` wakes its queue's
    fetcher for a job due again at a time."""

    def __init__(
        self,
        storage: StorageHandle,
        running: RunningJobs,
        finished: Finished,
        clock: Clock,
        held: HeldQueues,
        wake: Callable[[float], None],
    ) -> None:
        self._storage = storage
        self._running = running
        self._finished = finished
        self._clock = clock
        self._held = held
        self._wake = wake
        self._send, self._outcomes = trio.open_memory_channel[tuple[ClaimedJob, Outcome]](math.inf)

    def report(self, job: ClaimedJob, outcome: Outcome) -> None:
        """Hand ``outcome`` of ``job`` to the writer (never blocks)."""
        self._send.send_nowait((job, outcome))

    def close(self) -> None:
        """No more reports: the writer drains what is left, then :meth:`run` returns."""
        self._send.close()

    async def run(self) -> None:
        """Everything waiting goes out as one fenced ``Finish`` (:data:`WRITE_MAX` at most:
        the rest in the next ones).

        A failed write (the database restarting, SQLite busy) is retried with backoff, with
        whatever arrived meanwhile, for as long as each job's lease holds: the heartbeat
        keeps renewing those leases, and a fenced outcome is safe to write twice. Only an
        outcome whose lease expired is given up (its job will be rescued and run again).
        An outcome the database refuses for its own data is not retried: it fails alone and
        is recorded dead instead (:func:`record_outcomes`).

        Shielded: it ends when the channel closes (every worker is gone), so an outcome
        reported before a cancellation is still written.
        """
        with trio.CancelScope(shield=True):
            async for first in self._outcomes:
                pending, wait = [first], RETRY_FIRST
                del first  # waiting for the next outcome, hold no job's records
                while True:
                    pending.extend(self._reported_meanwhile(WRITE_MAX - len(pending)))
                    pending = await self._write(pending)
                    if pending and self._storage.broken.is_set():
                        self._abandon(pending)  # the runtime is stopping with the error
                        pending = []
                    if not pending:
                        break
                    await trio.sleep(wait)
                    wait = min(wait * 2, RETRY_MAX)

    def _abandon(self, batch: list[tuple[ClaimedJob, Outcome]]) -> None:
        """Give up outcomes that storage cannot take (it is corrupt, read-only...): waiting
        out their leases would only hold up the worker's stop."""
        for job, _ in batch:
            self._running.release(job.id, job.lease)
        log.error(
            "%d outcome(s) not recorded, storage cannot be used: %s; their jobs will be "
            "rescued and run again once it is repaired", len(batch), self._storage.broken_by,
        )  # fmt: skip

    def _reported_meanwhile(self, room: int) -> list[tuple[ClaimedJob, Outcome]]:
        """Up to ``room`` outcomes waiting (the rest wait for the next write)."""
        batch: list[tuple[ClaimedJob, Outcome]] = []
        while len(batch) < room:
            try:
                batch.append(self._outcomes.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batch

    async def _write(
        self, batch: list[tuple[ClaimedJob, Outcome]]
    ) -> list[tuple[ClaimedJob, Outcome]]:
        """Write ``batch``; return the outcomes to try again (their leases still hold)."""
        recorded = await record_outcomes(self._storage, [o for _, o in batch])
        retry, error, landed, ended = [], None, False, []
        for (job, _), (outcome, result) in zip(batch, recorded, strict=True):
            if not isinstance(result, bool):  # the database is away (or timed out)
                retry.append((job, outcome))
                if error is None:
                    error = "timed out" if result is None else str(result) or repr(result)
                continue
            landed = True
            self._running.release(job.id, job.lease)
            if not result:
                log.warning(
                    "job %d: outcome of attempt %d not recorded: its lease was lost (or an "
                    "earlier try recorded it)", job.id, job.attempt
                )  # fmt: skip
                continue
            event = outcome.event
            if isinstance(event, Failed) and event.retry_at is not None:
                self._wake(event.retry_at)  # the retry may be due before the next poll
            elif isinstance(event, SuspendedEvent):
                self._wake(event.run_at)  # a short sleep, or woken while it ran
            target = next_state(JobState.RUNNING, event)
            if target is not None and target.is_terminal:
                ended.append(job.id)
        self._finished.notify_all(ended)
        if landed:
            self._held.written()  # a running job ended: a held-back one may start now
        return self._retryable(retry, error) if retry else []

    def _retryable(
        self, batch: list[tuple[ClaimedJob, Outcome]], error: str | None
    ) -> list[tuple[ClaimedJob, Outcome]]:
        now, keep = self._clock.now(), []
        for job, outcome in batch:
            expiry = self._running.expiry(job.id, job.lease)
            if expiry is not None and expiry > now:
                keep.append((job, outcome))
                continue
            self._running.release(job.id, job.lease)
            log.error(
                "job %d: could not record the outcome of attempt %d before its lease expired"
                " (%s); it will be rescued and run again", job.id, job.attempt, error,
            )  # fmt: skip
        if keep:
            log.warning(
                "could not record %d outcome(s) (%s); retrying while their leases hold",
                len(keep), error,
            )  # fmt: skip
        return keep
