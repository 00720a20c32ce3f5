"""One queue's supervisor, its fetcher and its workers.

The fetcher claims up to <free worker slots> jobs per round trip and hands them to workers
over a channel that never holds more jobs than there are free slots, so a hand-off never
blocks. It sleeps until a wake-up (an in-process enqueue), the earliest known future
``run_at``, or its poll interval.
Each worker runs one attempt at a time inside that job's own cancel scope and writes the
outcome shielded from cancellation, so an outcome is never lost to a cancel.
"""

from __future__ import annotations

import logging
import math
import random
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeAlias

import attrs
import trio

from trioforge._core.clock import Clock
from trioforge._core.errors import InvalidArgumentError, JobTimeoutError, PayloadError
from trioforge._core.flow import JobLimits, RateLimit
from trioforge._core.outcomes import AttemptOutcome, attempt_outcome
from trioforge._core.retry import Retry, discard_reason, failure_outcome
from trioforge._core.states import Cancelled as CancelledEvent
from trioforge._core.states import Discarded as DiscardedEvent
from trioforge._core.states import Failed, JobState, Succeeded, next_state
from trioforge._core.states import Released as ReleasedEvent
from trioforge._core.states import Suspended as SuspendedEvent
from trioforge.actors import events
from trioforge.actors.leases import RETRY_FIRST
from trioforge.actors.running import Finished, RunningJobs, StopReason
from trioforge.actors.storage_actor import StorageHandle, log_failure
from trioforge.storage import ClaimedJob, ClaimResult, Outcome, ops
from trioforge.storage._records import OutcomeEvent

__all__ = [
    "Attempt",
    "Ended",
    "HeldQueues",
    "JobTable",
    "QueueConfig",
    "QueueSupervisor",
    "decide_outcome",
    "record_outcomes",
    "refused_outcome",
]

log = logging.getLogger("trioforge.queue")

#: Longest traceback text kept per failed attempt.
MAX_ERROR_CHARS = 8000
#: Longest pause between tries to record outcomes while the database is away.
RETRY_MAX = 0.5
#: How long an attempt's after hooks may take (they run shielded from cancellation).
AFTER_HOOKS_SECONDS = 10.0


@attrs.frozen
class Ended:
    """An attempt that decided its own outcome (a workflow run suspending, undone, or
    failing for good): what to record, fenced by the lease like any outcome."""

    event: OutcomeEvent
    result: str | None = None
    error: str | None = None
    #: What a suspended run waits for (``sleep``, ``signal 'paid'``...), for its log line.
    why: str | None = None


class Attempt(Protocol):
    """One attempt of a job, as the application runs it."""

    async def run(self) -> str | Ended | None:
        """Run the handler (and what goes before it); return the JSON text of the result,
        or how the attempt ended when it decided that itself."""
        ...

    def cancelled(self) -> Ended | None:
        """What to record when a cancel request stopped the attempt (None: cancelled)."""
        ...

    @property
    def watched(self) -> bool:
        """Whether ``end`` has anyone to tell (no after hooks: the worker skips it)."""
        ...

    async def end(self, outcome: AttemptOutcome, error: BaseException | None) -> None:
        """Tell the application how the attempt ended (nothing if ``run`` never started)."""
        ...


class JobTable(Protocol):
    """What workers need from the application's registry."""

    def names(self) -> frozenset[str]: ...

    def limits(self) -> Mapping[str, JobLimits]:
        """The rate and concurrency limits of the jobs that have any, by job name."""
        ...

    def policy(self, job: ClaimedJob) -> tuple[Retry, float | None]:
        """The job's retry policy and timeout in seconds (None: no timeout), in its queue
        (the attempt count comes from ``job.max_attempts``, set at enqueue)."""
        ...

    def attempt(self, job: ClaimedJob) -> Attempt:
        """A new, not yet started attempt of ``job``."""
        ...


@attrs.frozen
class QueueConfig:
    name: str
    concurrency: int
    owner: str
    lease_seconds: float
    poll_interval: float
    #: What this process offers jobs that ``require`` capabilities.
    capabilities: frozenset[str] = frozenset()
    #: The queue's own rate limit, which every job of it starts through.
    rate_limit: RateLimit | None = None


def format_error(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= MAX_ERROR_CHARS else "..." + text[-MAX_ERROR_CHARS:]


def decide_outcome(
    job: ClaimedJob,
    retry: Retry,
    *,
    reason: StopReason | None,
    error: BaseException | None,
    result: str | Ended | None,
    now: float,
    u: float = 0.0,
    on_cancel: Ended | None = None,
) -> Outcome | None:
    """Turn how an attempt ended into the fenced outcome to write (None: write nothing)."""
    if reason is StopReason.LOST:
        return None
    if reason is StopReason.USER:
        if on_cancel is not None:
            return Outcome(job.id, job.lease, on_cancel.event, on_cancel.result, on_cancel.error)
        return Outcome(job.id, job.lease, CancelledEvent(), error="cancelled by request")
    if reason is StopReason.SHUTDOWN:
        return Outcome(job.id, job.lease, ReleasedEvent())
    if isinstance(result, Ended):
        return Outcome(job.id, job.lease, result.event, result.result, result.error)
    if error is None:
        return Outcome(job.id, job.lease, Succeeded(), result=result)
    reason_text = discard_reason(error)  # a Discard, or a group holding one
    if reason_text is not None:
        return Outcome(job.id, job.lease, DiscardedEvent(), error=reason_text)
    if retry.max_attempts != job.max_attempts:  # fixed at enqueue, maybe overridden there
        retry = attrs.evolve(retry, max_attempts=job.max_attempts)
    event = failure_outcome(retry, job.attempt, error, now, u)
    return Outcome(job.id, job.lease, event, error=format_error(error))


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


def _next_look(result: ClaimResult) -> float | None:
    """When a claim may find more than ``result`` did: the next run_at falling due or the
    next token of a rate limit that held jobs back."""
    times = [t for t in (result.next_run_at, result.next_token_at) if t is not None]
    return min(times, default=None)


@attrs.frozen
class _Wake:
    run_at: float


@attrs.frozen
class _SlotFreed:
    pass


@attrs.frozen
class _Resized:
    delta: int


@attrs.frozen
class _Retire:
    """Handed to a worker like a job: that worker leaves the pool (a shrink)."""


_Message = _Wake | _SlotFreed | _Resized


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


class QueueSupervisor:
    """Owns one queue's nursery: a fetcher and ``concurrency`` workers, restarted one for
    one if they crash (at most ``max_restarts`` per minute, then the queue fails loudly).

    The pool can be resized while it runs (:meth:`resize`). Growing starts workers and lets
    the fetcher claim for the new slots at once. Shrinking never interrupts a job: the
    fetcher's free slots drop before its next claim (so it may owe slots until running jobs
    finish), and it sends one ``_Retire`` per removed slot down the job channel, behind the
    jobs already handed out, to be taken by whichever workers come free first.
    """

    def __init__(
        self,
        config: QueueConfig,
        table: JobTable,
        storage: StorageHandle,
        running: RunningJobs,
        finished: Finished,
        clock: Clock,
        *,
        max_restarts: int = 10,
        held: HeldQueues | None = None,
    ) -> None:
        self.config = config
        self._table = table
        self._storage = storage
        self._running = running
        self._finished = finished
        self._clock = clock
        self._max_restarts = max_restarts
        self._inbox_send, self._inbox = trio.open_memory_channel[_Message](math.inf)
        # Unbounded, but never holds more jobs than free slots: the fetcher counts them.
        self._jobs_send, self._jobs = trio.open_memory_channel[ClaimedJob | _Retire](math.inf)
        self._outcomes_send, self._outcomes = trio.open_memory_channel[tuple[ClaimedJob, Outcome]](
            math.inf
        )
        self._fetch_scope = trio.CancelScope()
        self._stopping = False  # after stop_now(): release jobs instead of starting them
        self._restarts: list[float] = []
        self._orphans_possible = False  # after a failed claim (see _claim)
        # Whether a concurrency limit held a due job back at the last claim: claim again
        # once outcomes are written here (that may have freed the slot).
        self._held = held if held is not None else HeldQueues()
        self._size = config.concurrency
        self._busy = 0  # workers holding a job (pool utilisation: busy / size)
        self._workers_started = 0
        self._pool: trio.Nursery | None = None

    # --- control (synchronous; safe from any task) -------------------------------------

    def wake(self, run_at: float) -> None:
        """Tell the fetcher that a job becomes due at ``run_at``."""
        self._inbox_send.send_nowait(_Wake(run_at))

    def _wake_now(self) -> None:
        self.wake(self._clock.now())

    @property
    def size(self) -> int:
        """How many workers the pool has (or is shrinking to)."""
        return self._size

    @property
    def busy(self) -> int:
        """How many workers hold a job (running it, or releasing it at shutdown)."""
        return self._busy

    def resize(self, size: int) -> None:
        """Grow or shrink the pool to ``size`` workers (0: claim nothing new).

        Running jobs are never interrupted; see the class docstring. Raises
        ``trio.ClosedResourceError`` once the queue is stopping or has not started.
        """
        if self._pool is None or self._fetch_scope.cancel_called:
            raise trio.ClosedResourceError(f"queue {self.config.name!r} is not running")
        delta, self._size = size - self._size, size
        for _ in range(delta):
            self._start_worker(self._pool)
        if delta:
            self._inbox_send.send_nowait(_Resized(delta))

    def stop_fetching(self) -> None:
        """No new claims; workers finish what they have, then the supervisor returns."""
        self._fetch_scope.cancel()

    def stop_now(self) -> None:
        """Release jobs not yet started; running ones are stopped through RunningJobs."""
        self._stopping = True
        self._fetch_scope.cancel()

    # --- the actor --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        name = self.config.name
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_outcomes, name=f"{name}-outcomes")
            try:
                async with trio.open_nursery() as pool:
                    for _ in range(self.config.concurrency):
                        self._start_worker(pool)
                    pool.start_soon(self._fetch_guarded, name=f"{name}-fetcher")
                    self._pool = pool
                    task_status.started()
            finally:
                self._pool = None
                self._release_unstarted()
                self._outcomes_send.close()  # the writer drains what is left, then returns

    def _release_unstarted(self) -> None:
        """Hand back jobs claimed but never taken by a worker: a claim is shielded, so one
        can complete while the pool is being cancelled, after its workers are gone."""
        while True:
            try:
                job = self._jobs.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            if not isinstance(job, _Retire):
                events.log_event(events.released_unstarted(job))
                self._report(job, Outcome(job.id, job.lease, ReleasedEvent()))

    def _start_worker(self, pool: trio.Nursery) -> None:
        self._workers_started += 1
        name = f"{self.config.name}-w{self._workers_started}"
        pool.start_soon(self._supervise, self._worker, name=name)

    async def _supervise(self, child: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await child()
                return
            except Exception:
                now = trio.current_time()
                self._restarts = [t for t in self._restarts if now - t < 60.0] + [now]
                if len(self._restarts) > self._max_restarts:
                    log.error("queue %s: too many crashes, giving up", self.config.name)
                    raise
                log.exception("queue %s: actor crashed; restarting it", self.config.name)

    async def _fetch_guarded(self) -> None:
        try:
            with self._fetch_scope:
                await self._fetch()
        finally:
            self._jobs_send.close()  # workers drain what is buffered, then stop

    async def _fetch(self) -> None:
        cfg, clock = self.config, self._clock
        free = cfg.concurrency
        wanted_at: float | None = clock.now()  # when a claim may find something
        last_claim = -math.inf
        names, limits = self._table.names(), self._table.limits()
        while True:
            # Everything that happened meanwhile (freed slots, resizes, wake-ups) counts
            # before the next claim is decided.
            while True:
                try:
                    message = self._inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                free, wanted_at = self._absorb(message, free, wanted_at)
            deadline = math.inf
            if free > 0:
                target = last_claim + cfg.poll_interval
                if wanted_at is not None:
                    target = min(target, wanted_at)
                now = clock.now()
                if now >= target:
                    writes_before = self._held.writes
                    result = await self._claim(names, limits, free, now)
                    last_claim = now
                    if result is None:  # storage error, logged: try again after the poll interval
                        wanted_at = None
                        continue
                    for job in result.jobs:
                        self._jobs_send.send_nowait(job)
                    free -= len(result.jobs)
                    wanted_at = now if result.jobs and free == 0 else _next_look(result)
                    if result.held and self._held.writes != writes_before:
                        wanted_at = now  # an outcome written meanwhile may have freed a slot
                    self._held.set(cfg.name, self._wake_now if result.held else None)
                    continue
                deadline = clock.deadline(target)
            with trio.move_on_at(deadline):
                free, wanted_at = self._absorb(await self._inbox.receive(), free, wanted_at)

    def _absorb(
        self, message: _Message, free: int, wanted_at: float | None
    ) -> tuple[int, float | None]:
        """The fetcher's free slots and next claim time after ``message``."""
        if isinstance(message, _SlotFreed):
            return free + 1, wanted_at
        if isinstance(message, _Resized):
            # Sent from here, so every job already handed out is ahead of them in the
            # channel: a retiring worker never strands a claimed job.
            for _ in range(-message.delta):
                self._jobs_send.send_nowait(_Retire())
            if message.delta > 0:  # new slots may take jobs already due
                return free + message.delta, self._clock.now()
            return free + message.delta, wanted_at
        if wanted_at is None or message.run_at < wanted_at:
            return free, message.run_at
        return free, wanted_at

    async def _claim(
        self, names: frozenset[str], limits: Mapping[str, JobLimits], limit: int, now: float
    ) -> ClaimResult | None:
        cfg = self.config
        if self._orphans_possible and not await self._release_orphans():
            return None
        op = ops.Claim(
            queue=cfg.name,
            names=names,
            limit=limit,
            owner=cfg.owner,
            lease_until=now + cfg.lease_seconds,
            capabilities=cfg.capabilities,
            limits=limits,
            ending=self._running.ending() if limits else frozenset(),
            queue_rate=cfg.rate_limit,
        )
        sent = self._running.claiming()
        try:
            # Shielded: once claimed, jobs must reach a worker (or be released), never
            # be dropped half-way by a cancel.
            result: ClaimResult | None = await self._storage.call_shielded(op)
        except Exception as exc:
            log_failure(log, exc, "queue %s: claim failed", cfg.name)
            result = None
        if result is not None:
            for job in result.jobs:  # held from here until its outcome is recorded
                self._running.hold(job.id, job.lease, op.lease_until, sent)
            if result.jobs:
                self._finished.claimed(job.id for job in result.jobs)
        # A failed claim may have committed all the same (the reply lost with the
        # connection): its jobs would sit unseen until their leases ran out.
        self._orphans_possible = result is None
        return result

    async def _release_orphans(self) -> bool:
        """Hand back jobs of this queue leased to this process that it does not hold (a
        lost claim reply); True once storage has answered."""
        cfg = self.config
        op = ops.ReleaseOrphans(cfg.name, cfg.owner, self._running.leases())
        try:
            released: list[int] | None = await self._storage.call_shielded(op)
        except Exception as exc:
            log_failure(log, exc, "queue %s: could not check for orphaned claims", cfg.name)
            return False
        if released:
            log.warning(
                "queue %s: handed back %d job(s) whose claim reply was lost: %s",
                cfg.name, len(released), released,
            )  # fmt: skip
        return released is not None

    async def _worker(self) -> None:
        async for job in self._jobs:
            if isinstance(job, _Retire):
                return  # its slot was already taken off the fetcher's count
            self._busy += 1
            try:
                if self._stopping:
                    events.log_event(events.released_unstarted(job))
                    self._report(job, Outcome(job.id, job.lease, ReleasedEvent()))
                else:
                    await self._attempt(job)
            finally:
                self._busy -= 1
                # The slot frees as soon as the handler is done; the outcome is written by
                # the writer, batched with others, while this worker takes the next job (a
                # claim made meanwhile counts the attempt out of its concurrency limit).
                self._inbox_send.send_nowait(_SlotFreed())

    def _report(self, job: ClaimedJob, outcome: Outcome) -> None:
        self._outcomes_send.send_nowait((job, outcome))

    async def _attempt(self, job: ClaimedJob) -> None:
        retry, timeout = self._table.policy(job)
        attempt = self._table.attempt(job)
        entry = self._running.start(job.id, job.lease)
        if timeout is not None:
            # One scope for both: a stop request sets entry.reason, the deadline does not.
            entry.scope.deadline = trio.current_time() + timeout
        error: BaseException | None = None
        result: str | Ended | None = None
        began = trio.current_time()
        try:
            with entry.scope:
                try:
                    if entry.reason is None:  # not cancelled between claim and start
                        if events.log.isEnabledFor(logging.DEBUG):
                            events.log_event(events.started(job))
                        result = await attempt.run()
                except Exception as exc:
                    error = exc
            timed_out = entry.reason is None and entry.scope.cancel_called
            if timed_out:
                # Whatever the handler turned the cancellation into.
                error = JobTimeoutError(f"attempt {job.attempt} ran past {timeout}s")
        except BaseException:
            # Cancelled from outside (runtime torn down) or interrupted: hand the job back.
            self._running.stop(job.id, StopReason.SHUTDOWN, lease=job.lease)
            self._report(job, Outcome(job.id, job.lease, ReleasedEvent()))
            self._log_end(job, AttemptOutcome.RELEASED, ReleasedEvent(), began, error, None)
            await self._end(job, attempt, AttemptOutcome.RELEASED, error)
            raise
        finally:
            self._running.finish(job.id, job.lease)
        outcome = decide_outcome(
            job,
            retry,
            reason=entry.reason,
            error=error,
            result=result,
            now=self._clock.now(),
            u=random.random() if retry.jitter else 0.0,
            on_cancel=attempt.cancelled() if entry.reason is StopReason.USER else None,
        )
        kind = attempt_outcome(None if outcome is None else outcome.event, timed_out=timed_out)
        if isinstance(error, PayloadError) and error.final:  # dead without a retry: say why
            log.error("job %d (%s) goes dead without retries: %s", job.id, job.name, error)
        self._log_end(
            job, kind, None if outcome is None else outcome.event, began, error,
            result if isinstance(result, Ended) else outcome,
        )  # fmt: skip
        # Before the outcome is written, so a waiter that sees it knows the hooks ran.
        await self._end(job, attempt, kind, error)
        if outcome is not None:
            self._report(job, outcome)
        else:  # the lease is another owner's now
            self._running.release(job.id, job.lease)

    def _log_end(
        self,
        job: ClaimedJob,
        kind: AttemptOutcome,
        event: OutcomeEvent | None,
        began: float,
        error: BaseException | None,
        ended: Ended | Outcome | None,
    ) -> None:
        """The attempt's one log line (``trioforge.attempts``): how it ended, after how
        long, and what its job goes to next."""
        # The common case, a job completed with INFO off, builds nothing.
        quiet = logging.INFO if kind is AttemptOutcome.COMPLETED else logging.ERROR
        if not events.log.isEnabledFor(quiet):
            return
        record = events.attempt_ended(
            job, kind, event, seconds=trio.current_time() - began, now=self._clock.now(),
            error=error, error_text=None if ended is None else ended.error,
            why=ended.why if isinstance(ended, Ended) else None,
        )  # fmt: skip
        events.log_event(record)

    async def _end(
        self,
        job: ClaimedJob,
        attempt: Attempt,
        outcome: AttemptOutcome,
        error: BaseException | None,
    ) -> None:
        """Run the attempt's after hooks even if a cancel ended it: shielded, but bounded."""
        if not attempt.watched:  # the common case: no scope, no await, per job
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + AFTER_HOOKS_SECONDS
            await attempt.end(outcome, error)
        if scope.cancelled_caught:
            log.warning("job %d: after hooks stopped after %.0fs", job.id, AFTER_HOOKS_SECONDS)

    async def _write_outcomes(self) -> None:
        """The outcome writer: everything waiting goes out as one fenced ``Finish``.

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
                while True:
                    pending.extend(self._reported_meanwhile())
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

    def _reported_meanwhile(self) -> list[tuple[ClaimedJob, Outcome]]:
        batch = []
        while True:
            try:
                batch.append(self._outcomes.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return batch

    async def _write(
        self, batch: list[tuple[ClaimedJob, Outcome]]
    ) -> list[tuple[ClaimedJob, Outcome]]:
        """Write ``batch``; return the outcomes to try again (their leases still hold)."""
        recorded = await record_outcomes(self._storage, [o for _, o in batch])
        retry, error, landed = [], None, False
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
                self.wake(event.retry_at)  # the retry may be due before the next poll
            elif isinstance(event, SuspendedEvent):
                self.wake(event.run_at)  # a short sleep, or woken while it ran
            target = next_state(JobState.RUNNING, event)
            if target is not None and target.is_terminal:
                self._finished.notify(job.id)
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
