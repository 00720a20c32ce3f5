"""One queue's supervisor, its fetcher and its workers.

The fetcher has one claim out at a time. It claims for its free worker slots and, while the
queue has a backlog of short jobs, ahead of them: the slots expected to come free during
one claim round trip, at most the pool's size (:mod:`trioforge._core.prefetch` says how
many and why), so workers are not left idle while the next claim is out. It hands the jobs
to workers over an unbounded channel (a hand-off never blocks); jobs claimed ahead wait
there, held (their leases renewed) and cancellable like any claimed job, for the first
worker to come free; there are never more workers than slots. Their timeout runs from the
attempt's start. At shutdown the jobs not yet started are released, not run. A queue with
rate limits claims for its free slots only: a claim spends the job's token. The fetcher
sleeps until a wake-up (an in-process enqueue, or a notice), the earliest known future
``run_at``, or its poll interval. A wake-up addressed to this process alone (PostgreSQL:
an enqueue picked it) is owed: the next claim answers for its jobs, or the fetcher hands
it to the relay (:mod:`trioforge.actors.relay`) for every process to hear.
Each worker runs one attempt at a time inside that job's own cancel scope, decides its
outcome (:mod:`trioforge.actors.attempts`) and hands it to the queue's outcome writer
(:mod:`trioforge.actors.outcome_writer`), which records it, batched with others and
shielded from cancellation, while the worker takes its next job.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence

import attrs
import trio

from trioforge._core.clock import Clock
from trioforge._core.errors import JobTimeoutError
from trioforge._core.flow import JobLimits, RateLimit
from trioforge._core.outcomes import AttemptOutcome, attempt_outcome
from trioforge._core.prefetch import ClaimPace, claim_ahead, claim_size
from trioforge._core.retry import Retry
from trioforge._core.states import Released as ReleasedEvent
from trioforge._core.wakes import left_over
from trioforge.actors import events
from trioforge.actors.attempts import (
    Attempt,
    Ended,
    JobTable,
    decide_outcome,
    unstartable_outcome,
)
from trioforge.actors.outcome_writer import HeldQueues, OutcomeWriter
from trioforge.actors.running import Finished, Running, RunningJobs, StopReason
from trioforge.actors.storage_actor import StorageHandle, log_failure
from trioforge.storage import ClaimedJob, ClaimResult, Outcome, ops
from trioforge.storage._records import OutcomeEvent

__all__ = ["QueueConfig", "QueueSupervisor"]

log = logging.getLogger("trioforge.queue")

#: How long an attempt's after hooks may take (they run shielded from cancellation).
AFTER_HOOKS_SECONDS = 10.0

#: Most jobs of a claim started in one scheduler pass (:meth:`QueueSupervisor._hand_out`).
#: On the 2-core development machine 50,000 handed out at once held the heartbeat up for
#: 41 s under load (past the 30 s lease); a pass of 10,000 is a fifth of that, and smaller
#: passes cost more CPU per job (docs/performance.md, "Wide pools").
HAND_OUT = 10_000


#: Most idle workers a pool keeps while its queue has no backlog (the next burst starts
#: workers again): a pool of 50,000 slots kept 50,000 parked tasks after its first burst.
IDLE_KEEP = 1_000


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


def _next_look(result: ClaimResult) -> float | None:
    """When a claim may find more than ``result`` did: the next run_at falling due or the
    next token of a rate limit that held jobs back."""
    times = [t for t in (result.next_run_at, result.next_token_at) if t is not None]
    return min(times, default=None)


@attrs.frozen
class _Wake:
    run_at: float
    #: Jobs announced to this process alone, which it takes or passes on (0: a wake-up
    #: every process heard, or this process's own).
    owed: int = 0


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

_SLOT_FREED = _SlotFreed()  # sent once per job: one instance serves them all


@attrs.define(eq=False)
class _Run:
    """One attempt in a worker's hands, from its start to its outcome's hand-off."""

    job: ClaimedJob
    attempt: Attempt
    retry: Retry
    timeout: float | None
    heartbeat: float | None
    entry: Running
    began: float
    started: bool = False  # its handler was called (not cancelled before its start)
    result: str | Ended | None = None
    error: BaseException | None = None
    timed_out: bool = False


class QueueSupervisor:
    """Owns one queue's nursery: a fetcher and up to ``concurrency`` workers, restarted one
    for one if they crash (at most ``max_restarts`` per minute, then the queue fails loudly).

    Workers start as the fetcher hands out jobs, never more than there are jobs out or
    slots: a slot that has never held a job costs nothing, and a pool of 50,000 slots does
    not start 50,000 tasks before its first claim (a worker started for a job takes it at
    once; jobs claimed ahead wait for one to come free). Once a claim comes back short
    (no backlog), a pool keeps at most :data:`IDLE_KEEP` idle workers: one that comes free
    beyond them leaves, and those idle already are retired like a shrink's. After a burst
    the pool keeps that many parked tasks, not one per slot it ever used; while claims
    come back full, workers stay: a drain of 50,000 no-op jobs on 2,000 slots whose
    workers left as they came free started 18,000 of them instead of 2,000 (each claim's
    jobs end before the next claim lands, leaving the whole pool idle for a moment).

    The pool can be resized while it runs (:meth:`resize`). Growing lets the fetcher claim
    for the new slots at once. Shrinking never interrupts a job: the fetcher's free slots
    drop before its next claim (so it may owe slots until running jobs finish), and it
    sends one ``_Retire`` per worker beyond the new size down the job channel, behind the
    jobs already handed out, to be taken by whichever workers come free first. A grow
    while workers are on their way out keeps them (their ``_Retire`` is then ignored)
    rather than start new ones beside them.
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
        pass_on: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self._table = table
        self._storage = storage
        self._running = running
        self._finished = finished
        self._clock = clock
        self._max_restarts = max_restarts
        self._inbox_send, self._inbox = trio.open_memory_channel[_Message](math.inf)
        # Unbounded; holds the jobs handed out and not yet taken: one per free slot, and
        # those claimed ahead (the fetcher counts them all in ``_out``).
        self._jobs_send, self._jobs = trio.open_memory_channel[ClaimedJob | _Retire](math.inf)
        self._fetch_scope = trio.CancelScope()
        self._stopping = False  # release jobs instead of starting them
        self._restarts: list[float] = []
        self._orphans_possible = False  # after a failed claim (see _claim)
        # Whether a concurrency limit held a due job back at the last claim: claim again
        # once outcomes are written here (that may have freed the slot).
        self._held = held if held is not None else HeldQueues()
        self._writer = OutcomeWriter(storage, running, finished, clock, self._held, self.wake)
        self._report = self._writer.report
        self._size = config.concurrency
        self._busy = 0  # workers holding a job (pool utilisation: busy / size)
        self._worker_name = f"{config.name}-worker"
        self._workers = 0  # worker tasks alive
        self._retiring = 0  # of those, the ones a ``_Retire`` sent is for
        self._unretire = 0  # ``_Retire`` sent, then taken back by a grow: to be ignored
        self._out = 0  # jobs handed out whose slot has not come free
        self._backlog = False  # the last claim came back full: idle workers stay
        # Attempts concluded since the last claim returned, and the seconds they held
        # their slots in all: how long a job takes, for claiming ahead.
        self._done = 0
        self._busy_seconds = 0.0
        self._pool: trio.Nursery | None = None
        # Wake-ups addressed to this process alone (``wake(owed=...)``) not yet answered: how
        # many jobs they announced and the earliest run_at; answered by the next claim made
        # once that run_at is due, or passed on to every process (``pass_on``).
        self._pass_on = pass_on
        self._owed = 0
        self._owed_at = math.inf

    # --- control (synchronous; safe from any task) -------------------------------------

    def wake(self, run_at: float, owed: int = 0) -> None:
        """Tell the fetcher that a job becomes due at ``run_at``; ``owed``: the wake-up was
        addressed to this process alone, for that many jobs, which the fetcher claims or
        passes on to every process (no free slot, a failed claim, or what
        :func:`trioforge._core.wakes.left_over` says)."""
        self._inbox_send.send_nowait(_Wake(run_at, owed))

    @property
    def fetching(self) -> bool:
        """Whether its fetcher is claiming (started, and not stopping)."""
        return self._pool is not None and not self._fetch_scope.cancel_called

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
        if delta:
            self._inbox_send.send_nowait(_Resized(delta))

    def stop_fetching(self) -> None:
        """No new claims and no new starts: jobs claimed but not started (some claimed
        ahead of a free slot) are released; running ones finish, then the supervisor
        returns."""
        self._stopping = True
        self._fetch_scope.cancel()

    def stop_now(self) -> None:
        """Like :meth:`stop_fetching`; the runtime stops the running jobs through
        RunningJobs."""
        self.stop_fetching()

    # --- the actor --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        name = self.config.name
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer.run, name=f"{name}-outcomes")
            try:
                async with trio.open_nursery() as pool:
                    pool.start_soon(self._fetch_guarded, name=f"{name}-fetcher")
                    self._pool = pool
                    task_status.started()
            finally:
                self._pool = None
                self._release_unstarted()
                self._writer.close()  # the writer drains what is left, then returns

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

    async def _hand_out(self, jobs: Sequence[ClaimedJob]) -> None:
        """Hand claimed jobs to workers, :data:`HAND_OUT` at a time, with a checkpoint
        between (shielded: these jobs are claimed, they must all reach a worker).

        Each job's start runs in the scheduler pass after its hand-out, and no timer fires
        and no thread's reply is taken until a pass ends: a wide pool's claim of 50,000
        handed out at once started them all in one pass, which on a loaded machine held up
        the heartbeat for longer than a lease (its jobs could have been rescued while they
        ran)."""
        for start in range(0, len(jobs), HAND_OUT):
            if start:
                await trio.lowlevel.cancel_shielded_checkpoint()
            chunk = jobs[start : start + HAND_OUT]
            for job in chunk:
                self._jobs_send.send_nowait(job)
            self._out += len(chunk)
            self._staff()

    def _release_now(self, jobs: Sequence[ClaimedJob]) -> None:
        """Hand back jobs claimed while the pool was resized to 0: no worker would take
        them, and their leases would be renewed, the jobs kept from every other process."""
        for job in jobs:
            events.log_event(events.released_unstarted(job))
            self._report(job, Outcome(job.id, job.lease, ReleasedEvent()))

    def _staff(self) -> None:
        """Start workers until there is one for each job handed out whose slot has not come
        free, or one per slot (jobs claimed ahead wait in the channel for the first to come
        free): every job in the channel has a worker that will take it."""
        assert self._pool is not None
        wanted = min(self._out, self._size)
        # Workers still on their way out stay instead (their ``_Retire`` is ignored): a new
        # worker beside them could run more jobs than the size. (A grow can be seen here,
        # through ``_size``, before the fetcher reads its message.)
        kept = min(self._retiring, max(0, wanted - (self._workers - self._retiring)))
        self._retiring -= kept
        self._unretire += kept
        while self._workers - self._retiring < wanted:
            self._start_worker(self._pool)

    def _start_worker(self, pool: trio.Nursery) -> None:
        self._workers += 1
        # One name for all (a string per worker is memory per running job in a wide pool).
        pool.start_soon(self._worker, name=self._worker_name)

    def _give_up(self) -> bool:
        """A worker's loop raised (a bug): log it; True if workers crashed more than
        ``max_restarts`` times in the last minute (the queue fails), else the worker starts
        over."""
        now = trio.current_time()
        self._restarts = [t for t in self._restarts if now - t < 60.0] + [now]
        if len(self._restarts) > self._max_restarts:
            log.error("queue %s: too many crashes, giving up", self.config.name)
            return True
        log.exception("queue %s: actor crashed; restarting it", self.config.name)
        return False

    async def _fetch_guarded(self) -> None:
        try:
            with self._fetch_scope:
                await self._fetch()
        finally:
            self._jobs_send.close()  # workers drain what is buffered, then stop
            # Wake-ups addressed here that no claim of this process will answer now.
            while True:
                try:
                    message = self._inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(message, _Wake):
                    self._absorb(message, 0, None)
            self._settle_owed()

    async def _fetch(self) -> None:
        cfg, clock = self.config, self._clock
        free = cfg.concurrency  # slots minus jobs out: below 0 while jobs wait in the channel
        wanted_at: float | None = clock.now()  # when a claim may find something
        last_claim = -math.inf
        names, limits = self._table.names(), self._table.limits()
        # A claim spends a rate limit's token: a job held in the channel would start later
        # than its token, and starts could bunch past the limit. (A concurrency limit
        # counts a claimed job as running: one held ahead only keeps its slot a little
        # longer, never lets more run.)
        rates = cfg.rate_limit is not None or any(j.rate is not None for j in limits.values())
        prefetch = not rates
        pace = ClaimPace()
        while True:
            # A claim is shielded, and one may follow another without a wait: stop here
            # once fetching is stopped (jobs released at shutdown would be claimed again).
            await trio.lowlevel.checkpoint_if_cancelled()
            # Everything that happened meanwhile (freed slots, resizes, wake-ups) counts
            # before the next claim is decided.
            while True:
                try:
                    message = self._inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                free, wanted_at = self._absorb(message, free, wanted_at)
            if self._owed and free <= 0:
                self._settle_owed()  # no free slot: every other process hears of them
            deadline = math.inf
            limit = claim_size(free, claim_ahead(pace, self._size) if prefetch else 0, self._size)
            if limit > 0:
                target = last_claim + cfg.poll_interval
                if wanted_at is not None:
                    target = min(target, wanted_at)
                now = clock.now()
                if now >= target:
                    writes_before = self._held.writes
                    began = trio.current_time()
                    result = await self._claim(names, limits, limit, now)
                    last_claim = now
                    if self._owed and self._owed_at <= now:  # answered by this claim
                        # (Not by one whose jobs go back: resized to 0, or stopping.)
                        gone = self._size == 0 or self._fetch_scope.cancel_called
                        if result is None or gone or left_over(
                            (job.run_at for job in result.jobs), taken=len(result.jobs),
                            limit=limit, owed=self._owed, owed_at=self._owed_at,
                            limited=result.next_token_at is not None or result.held,
                        ):  # fmt: skip
                            self._settle_owed()
                        else:
                            self._owed, self._owed_at = 0, math.inf
                    if result is None:  # storage error, logged: try again after the poll interval
                        wanted_at = None
                        continue
                    filled = self._backlog = len(result.jobs) == limit
                    pace = pace.observed(
                        done=self._done, busy=self._busy_seconds,
                        round_trip=trio.current_time() - began, filled=filled,
                    )  # fmt: skip
                    self._done, self._busy_seconds = 0, 0.0
                    if self._size == 0:  # resized to 0 while the claim was out
                        self._release_now(result.jobs)
                    else:
                        free -= len(result.jobs)
                        await self._hand_out(result.jobs)
                        if not filled:
                            self._let_go()
                    wanted_at = now if filled else _next_look(result)
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
            self._retire(self._size)
            if message.delta > 0:  # new slots take jobs waiting in the channel, and due ones
                self._staff()
                return free + message.delta, self._clock.now()
            return free + message.delta, wanted_at
        if message.owed:
            self._owed += message.owed
            self._owed_at = min(self._owed_at, message.run_at)
        if wanted_at is None or message.run_at < wanted_at:
            return free, message.run_at
        return free, wanted_at

    def _settle_owed(self) -> None:
        """Pass the wake-ups addressed here and not answered on to every process."""
        if self._owed and self._pass_on is not None:
            self._pass_on(self.config.name, self._owed_at)
        self._owed, self._owed_at = 0, math.inf

    def _retire(self, keep: int) -> None:
        """Retire the workers beyond ``keep`` (not counting those already retiring).
        Sent from the fetcher, so every job already handed out is ahead of their
        ``_Retire`` in the channel: a retiring worker never strands a claimed job."""
        for _ in range(self._workers - self._retiring - keep):
            self._retiring += 1
            self._jobs_send.send_nowait(_Retire())

    def _let_go(self) -> None:
        """No backlog: retire the idle workers beyond :data:`IDLE_KEEP` (those the jobs
        handed out need stay)."""
        self._retire(max(self._busy + IDLE_KEEP, min(self._out, self._size)))

    def _surplus(self) -> bool:
        """Whether a worker that just came free leaves: no backlog, more than
        :data:`IDLE_KEEP` idle, and the rest still give every job handed out a worker (the
        staffing :meth:`_staff` keeps)."""
        return (
            not self._backlog
            and self._workers - self._busy > IDLE_KEEP
            and self._workers - self._retiring > min(self._out, self._size)
        )

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
        """Run jobs one at a time, each attempt in a cancel scope that only its job's cancel,
        timeout or heartbeat deadline fires. A worker's attempts share one scope until one
        of them fires it, then take a fresh one: entering and leaving a scope per job cost
        about a tenth of a no-op drain. Between attempts the scope has no deadline and is
        known to no one (``RunningJobs`` lets go of it when the attempt ends), so nothing
        but the attempt holding it can fire it.

        A crash (an exception escaping the loop) starts the loop over (:meth:`_give_up`).
        All of it is one coroutine, the handler's caller: each frame between the worker
        loop and the handler is held by every running job (tens of thousands in a wide
        pool)."""
        while True:
            run: _Run | None = None  # the attempt in hand, when the scope catches its cancel
            try:
                try:
                    with trio.CancelScope() as scope:
                        async for job in self._jobs:
                            if isinstance(job, _Retire):
                                if self._unretire:  # a grow took this retirement back
                                    self._unretire -= 1
                                    continue
                                self._workers -= 1
                                self._retiring -= 1
                                return  # its slot was already taken off the fetcher's count
                            self._busy += 1
                            if self._stopping:
                                events.log_event(events.released_unstarted(job))
                                self._report(job, Outcome(job.id, job.lease, ReleasedEvent()))
                                self._slot_freed()
                                continue
                            if self._running.expiry(job.id, job.lease) is None:
                                # Its lease was lost while it waited (claimed ahead): the
                                # job is another process's now; nothing to report.
                                log.warning(
                                    "job %d (%s): lease lost before it started; not run here",
                                    job.id, job.name,
                                )  # fmt: skip
                                self._slot_freed()
                                continue
                            try:
                                run = self._begin(job, scope)
                            except Exception as exc:
                                self._refuse(job, exc)
                                continue
                            except BaseException:
                                self._slot_freed()
                                raise
                            try:
                                if run.entry.reason is None:  # not cancelled before its start
                                    if events.log.isEnabledFor(logging.DEBUG):
                                        events.log_event(events.started(job))
                                    run.started = True
                                    run.result = run.attempt.result(await run.attempt.start())
                            except Exception as exc:
                                run.error = exc
                            fired = self._settle(run)
                            ended, run = run, None
                            await self._conclude(ended)
                            # Waiting for the next job, hold nothing of this one's (its
                            # payload, result, context): a wide pool's idle workers would
                            # keep the last burst's records alive.
                            del job, ended
                            if self._surplus():
                                self._workers -= 1
                                return
                            if fired:
                                break  # a fired scope stays fired: the next job gets a fresh one
                        else:
                            return  # the fetcher is gone and every job handed out is taken
                except BaseException:
                    if run is not None:  # cancelled from outside (runtime torn down) or
                        await self._hand_back(run)  # interrupted: hand the job back
                    raise
                if run is not None:  # its scope caught its cancel (or its deadline's)
                    self._settle(run)
                    await self._conclude(run)
            except Exception:
                if self._give_up():
                    raise

    def _slot_freed(self) -> None:
        self._busy -= 1
        # Counted out at once, not when the fetcher reads the message: a claim handed out
        # over several passes (_hand_out) then starts no worker for a job that a worker
        # freed meanwhile will take.
        self._out -= 1
        # The slot frees as soon as the handler is done; the outcome is written by the
        # writer, batched with others, while this worker takes the next job (a claim made
        # meanwhile counts the attempt out of its concurrency limit).
        self._inbox_send.send_nowait(_SLOT_FREED)

    def _begin(self, job: ClaimedJob, scope: trio.CancelScope) -> _Run:
        retry, timeout = self._table.policy(job)
        heartbeat = self._table.heartbeat_timeout(job)
        run = _Run(job, self._table.attempt(job), retry, timeout, heartbeat,
                   self._running.start(job.id, job.lease, scope), trio.current_time())  # fmt: skip
        if timeout is not None or heartbeat is not None:
            # One scope for all: a stop request sets entry.reason, the deadlines do not.
            run.entry.set_deadlines(timeout, heartbeat)
        return run

    def _refuse(self, job: ClaimedJob, error: Exception) -> None:
        """``job``'s attempt could not begin (:meth:`_begin` raised: an invalid stored
        timeout, a bug in making the attempt): it goes dead alone, logged once, and the
        worker takes its next job (raised into the worker loop, the job would stay claimed
        here until shutdown, then be handed back to fail the same way again)."""
        try:
            self._running.finish(job.id, job.lease)
            outcome = unstartable_outcome(job, error)
            self._log_end(job, AttemptOutcome.FAILED, outcome.event, trio.current_time(),
                          None, outcome)  # fmt: skip
            self._report(job, outcome)
        finally:
            self._slot_freed()

    def _settle(self, run: _Run) -> bool:
        """The attempt's handler is done: whether its scope fired (and for a timeout, the
        error that says which); the scope is left without a deadline, the job no longer
        cancellable by id. True: the scope fired, leave it."""
        job, entry = run.job, run.entry
        # Only a stop request (which sets entry.reason first) or a deadline fires it.
        fired, missed_heartbeat = entry.reason is not None, False
        if run.timeout is not None or run.heartbeat is not None:  # (setting one costs)
            missed_heartbeat = entry.missed_heartbeat
            entry.scope.deadline = math.inf  # fired already, or not to fire for the next job
            fired = entry.scope.cancel_called
        self._running.finish(job.id, job.lease)
        if entry.reason is None and fired:
            # Whatever the handler turned the cancellation into.
            run.timed_out = True
            if missed_heartbeat:
                run.error = JobTimeoutError(
                    f"attempt {job.attempt}: no heartbeat for {run.heartbeat}s"
                )
            else:
                run.error = JobTimeoutError(f"attempt {job.attempt} ran past {run.timeout}s")
        return fired

    async def _hand_back(self, run: _Run) -> None:
        job = run.job
        self._running.stop(job.id, StopReason.SHUTDOWN, lease=job.lease)
        self._running.finish(job.id, job.lease)
        self._report(job, Outcome(job.id, job.lease, ReleasedEvent()))
        self._log_end(job, AttemptOutcome.RELEASED, ReleasedEvent(), run.began, run.error, None)
        try:
            await self._end(job, run.attempt, AttemptOutcome.RELEASED, run.error)
        finally:
            self._slot_freed()

    async def _conclude(self, run: _Run) -> None:
        """Decide the settled attempt's outcome, log it, run its after hooks and hand the
        outcome to the writer; then its slot is free."""
        try:
            job, error, reason = run.job, run.error, run.entry.reason
            outcome = decide_outcome(
                job,
                run.retry,
                reason=reason,
                error=error,
                result=run.result,
                now=self._clock.now(),
                u=random.random() if run.retry.jitter else 0.0,
                on_cancel=run.attempt.cancelled() if reason is StopReason.USER else None,
            )
            event = None if outcome is None else outcome.event
            kind = attempt_outcome(event, timed_out=run.timed_out)
            result = run.result
            self._log_end(
                job, kind, event, run.began, error,
                result if isinstance(result, Ended) else outcome,
            )  # fmt: skip
            # Before the outcome is written, so a waiter that sees it knows the hooks ran.
            await self._end(job, run.attempt, kind, error)
            if outcome is not None:
                self._report(job, outcome)
            else:  # the lease is another owner's now
                self._running.release(job.id, job.lease)
        finally:
            if run.started:  # (one cancelled before its start, or refused, took no time)
                self._done += 1
                self._busy_seconds += trio.current_time() - run.began
            self._slot_freed()

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
