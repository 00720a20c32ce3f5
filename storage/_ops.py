"""Storage operations as frozen request objects, each declared once.

The storage actor gathers whatever requests are waiting and hands them to the backend as one
batch (one transaction, one thread hop or one asyncio crossing). Each backend runs every
operation type below and returns, per operation, its result or the exception it raised, so
one bad request never fails its neighbours.

An operation's class says everything the layers around it need, so no list elsewhere names
the operations: its result type (``Op[T]``: ``StorageHandle.call`` returns a ``T``), how the
storage actor may schedule it (:class:`Runs`, and :meth:`Op.writes`), whether PostgreSQL
runs it as one statement (:meth:`Op.atomic_alone`), which jobs it changed visibly
(:meth:`Op.changed`) and the backends' method for it (:attr:`Op.handler`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Set
from typing import TYPE_CHECKING, Any, ClassVar, Generic

import attrs

from trioforge._core.flow import JobLimits, RateLimit
from trioforge._core.states import JobState
from trioforge._core.text import storable, storable_or_none
from trioforge.storage._records import (
    AttemptRecord,
    CancelResult,
    ClaimResult,
    CronState,
    Enqueued,
    FireResult,
    JobInfo,
    NewJob,
    Outcome,
    ProcessDetails,
    ProcessInfo,
    RenewResult,
    RescuedJob,
    StepRecord,
    StepWrite,
    WorkflowRecord,
)

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    #: An operation's result; a bare ``Op`` is any operation.
    T = TypeVar("T", covariant=True, default=object)
else:
    from typing import TypeVar

    T = TypeVar("T", covariant=True)


class Runs(enum.Enum):
    """How the storage actor may run an operation beside batches already in flight (on
    backends with several connections)."""

    #: Beside anything: it only reads (one committed state or another, as beside another
    #: process), or writes only rows no other request of this process writes (pending or
    #: new ones, as claims and enqueues do).
    BESIDE = "beside"
    #: Beside batches that write other jobs: it writes the rows of the jobs its
    #: :meth:`Op.writes` names.
    PER_JOB = "per job"
    #: Only when nothing is in flight, and nothing starts beside it (cancel, retry, cron,
    #: leases, pause, rescue...): the default.
    ALONE = "alone"


#: Every operation type by class name; filled as each is declared (see Op.__init_subclass__).
_DECLARED: dict[str, type[Op]] = {}


class Op(Generic[T]):
    """A storage operation whose result is a ``T``. Subclasses are ``attrs.frozen`` and
    declare, as class attributes, what differs from these defaults."""

    __slots__ = ()

    #: How the storage actor may schedule it; a ``PER_JOB`` op overrides :meth:`writes`.
    runs: ClassVar[Runs] = Runs.ALONE
    #: Whether its writes are one statement on PostgreSQL, so it needs no explicit
    #: transaction there (see :meth:`atomic_alone`).
    single_statement: ClassVar[bool] = False
    #: The name of the backends' method for it, less its leading underscore: the class
    #: name in snake case unless declared.
    handler: ClassVar[str]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if cls.runs is Runs.PER_JOB and cls.writes is Op.writes:
            raise TypeError(f"{cls.__name__} runs per job: it says which jobs in writes()")
        if "handler" not in vars(cls):
            cls.handler = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        # attrs makes a slotted class anew from the declared one; the later one stays.
        _DECLARED[cls.__name__] = cls

    def writes(self) -> frozenset[int] | None:
        """The running jobs whose rows it writes, for the storage actor: none that another
        request of this process writes (empty), or None if it must run alone."""
        return frozenset() if self.runs is Runs.BESIDE else None

    def atomic_alone(self) -> bool:
        """Whether, on PostgreSQL, it needs no explicit transaction: its class's
        ``single_statement``, unless its fields decide otherwise."""
        return self.single_statement

    def changed(self, result: object) -> Iterable[int]:
        """The jobs it changed in a way a watcher can see (status, progress, a workflow
        run's record), given its result; none unless declared."""
        return ()


@attrs.frozen
class Enqueue(Op[list[Enqueued]]):
    """Store new jobs, all in one transaction: their ``Enqueued``, one per job, in order."""

    runs = Runs.BESIDE
    single_statement = True

    jobs: tuple[NewJob, ...]

    def atomic_alone(self) -> bool:
        return all(j.idempotency_key is None for j in self.jobs)  # a held key reads first


@attrs.frozen
class Claim(Op[ClaimResult]):
    """Up to ``limit`` due jobs of ``queue`` whose name is in ``names`` and
    whose required capabilities are all in ``capabilities``; none (and no next run_at)
    while the queue is paused. Jobs whose name has ``limits`` start only as their
    concurrency and rate limits allow (``FlowGate``, in this claim's transaction), and
    every job only as ``queue_rate`` (the queue's own rate limit) allows.
    ``ending`` names attempts ``(job id, lease)`` of this claimer whose handler has
    returned but whose outcome is not recorded yet: they no longer take a concurrency slot,
    so a claim made meanwhile sees the slots they free."""

    runs = Runs.BESIDE
    single_statement = True

    queue: str
    names: Set[str]
    limit: int
    owner: str
    lease_until: float
    capabilities: Set[str] = frozenset()
    limits: Mapping[str, JobLimits] = attrs.field(factory=dict)
    ending: Set[tuple[int, int]] = frozenset()
    queue_rate: RateLimit | None = None

    def atomic_alone(self) -> bool:
        return self.queue_rate is None

    def changed(self, result: object) -> Iterable[int]:
        # The hottest write: PostgreSQL's claim statement sends its own notice, so a job
        # that reports no progress shows running elsewhere as soon as it starts.
        return [j.id for j in result.jobs] if isinstance(result, ClaimResult) else ()

    @property
    def flow_controlled(self) -> bool:
        """Whether some limit applies (the claim then goes through a ``FlowGate``)."""
        return bool(self.limits) or self.queue_rate is not None


@attrs.frozen
class Finish(Op[list[bool]]):
    """Record fenced outcomes: whether each was applied."""

    runs = Runs.PER_JOB
    single_statement = True

    outcomes: tuple[Outcome, ...]

    def writes(self) -> frozenset[int]:
        return frozenset(o.job_id for o in self.outcomes)

    def changed(self, result: object) -> Iterable[int]:
        if not isinstance(result, list):
            return ()
        return [o.job_id for o, applied in zip(self.outcomes, result, strict=True) if applied]


@attrs.frozen
class Renew(Op[RenewResult]):
    """Extend the leases ``(job_id, lease)`` held by ``owner``."""

    runs = Runs.PER_JOB
    single_statement = True

    owner: str
    leases: tuple[tuple[int, int], ...]
    lease_until: float

    def writes(self) -> frozenset[int]:
        return frozenset(job_id for job_id, _ in self.leases)


@attrs.frozen
class ReleaseOrphans(Op[list[int]]):
    """Running jobs of ``queue`` leased to ``owner`` under a lease not in ``held`` go
    back to available, the attempt not counted (as a release); their ids. A claim whose
    reply was lost (its connection died after the commit) leaves such jobs; the owner's
    fetcher, sure of what it holds, hands them back instead of letting their leases run out.
    """

    queue: str
    owner: str
    held: tuple[tuple[int, int], ...]

    def changed(self, result: object) -> Iterable[int]:
        if not isinstance(result, list):
            return ()
        return [job_id for job_id in result if isinstance(job_id, int)]


@attrs.frozen
class Progress(Op[bool]):
    """Record progress of a running attempt (fenced): whether it was."""

    runs = Runs.PER_JOB
    single_statement = True

    job_id: int
    lease: int
    pct: float
    message: str | None = attrs.field(converter=storable_or_none)

    def writes(self) -> frozenset[int]:
        return frozenset((self.job_id,))

    def changed(self, result: object) -> Iterable[int]:
        return (self.job_id,) if result is True else ()


@attrs.frozen
class TakeToken(Op[float | None]):
    """Take a token from rate bucket ``key`` of ``limit`` (a handler's ``ctx.acquire``),
    the bucket claims take from: None once taken, else when it next holds one (nothing
    taken). Writes only the bucket, under the lock claims take for it."""

    runs = Runs.BESIDE

    key: str
    limit: RateLimit


@attrs.frozen
class DrainBucket(Op[None]):
    """Empty rate bucket ``key`` of ``limit`` so it holds no token before ``until`` (the
    upstream answered 429): no claim and no ``TakeToken`` gets one sooner."""

    runs = Runs.BESIDE

    key: str
    limit: RateLimit
    until: float


@attrs.frozen
class Get(Op[JobInfo | None]):
    """The job's snapshot (None: no such job)."""

    runs = Runs.BESIDE
    single_statement = True

    job_id: int


@attrs.frozen
class GetMany(Op[dict[int, JobInfo]]):
    """The snapshots of those of ``job_ids`` that exist (the live
    feed re-reads every watched job that changed in one operation)."""

    runs = Runs.BESIDE
    single_statement = True

    job_ids: tuple[int, ...]


@attrs.frozen
class ListJobs(Op[list[JobInfo]]):
    """Jobs, newest first; with ``before``, only ids below it (the next page)."""

    runs = Runs.BESIDE
    single_statement = True

    status: JobState | None = None
    queue: str | None = None
    name: str | None = None
    limit: int = 100
    before: int | None = None
    #: Only workflow runs (jobs stored as ``workflow``), newest first like any listing.
    runs_only: bool = False
    #: Only runs of this workflow, every version (its job names are ``workflow@vN``).
    workflow: str | None = None


@attrs.frozen
class Throughput(Op[dict[str, dict[JobState, int]]]):
    """Per queue and state, the stored jobs that finished
    in or after the whole second ``since`` (epoch seconds) falls in: kept per second, so a
    window is counted from a few rows however many jobs it holds."""

    runs = Runs.BESIDE
    single_statement = True

    since: float


@attrs.frozen
class ThroughputSeries(Op[dict[str, dict[JobState, dict[int, int]]]]):
    """Per queue and state, the stored jobs
    that finished in or after the whole second ``since`` falls in, counted per ``step``
    seconds (keyed by each step's first second, a multiple of ``step``; empty steps are
    left out): a chart's bars, from the same per-second counts as :class:`Throughput`."""

    runs = Runs.BESIDE
    single_statement = True

    since: float
    step: int = 60


@attrs.frozen
class FoldCounts(Op[None]):
    """Compact the stored counts (PostgreSQL sums its delta rows into one per
    key); the maintenance leader runs it. Counts read the same before and after."""

    runs = Runs.BESIDE
    single_statement = True


@attrs.frozen
class Cancel(Op[CancelResult]):
    """Cancel a job, or ask its process to; raises JobNotFoundError."""

    job_id: int

    def changed(self, result: object) -> Iterable[int]:
        return (self.job_id,) if result is not CancelResult.FINISHED else ()


@attrs.frozen
class RetryJob(Op[bool]):
    """A dead or cancelled job becomes available with fresh attempts; raises
    JobNotFoundError."""

    job_id: int

    def changed(self, result: object) -> Iterable[int]:
        return (self.job_id,) if result is True else ()


@attrs.frozen
class Discard(Op[bool]):
    """A pending job goes to dead (whether it did); raises JobNotFoundError."""

    job_id: int
    reason: str = attrs.field(converter=storable)

    def changed(self, result: object) -> Iterable[int]:
        return (self.job_id,) if result is True else ()


@attrs.frozen
class Rescue(Op[list[RescuedJob]]):
    """Running jobs whose lease expired become retrying (or
    dead), and processes whose last beat is older than ``stale_before`` are forgotten."""

    single_statement = True

    stale_before: float = float("-inf")

    def changed(self, result: object) -> Iterable[int]:
        if not isinstance(result, list):
            return ()
        return [job.id for job in result if isinstance(job, RescuedJob)]


@attrs.frozen
class Beat(Op[None]):
    """Process ``owner`` (running ``queues``, and jobs of ``names``) is alive; its
    registry row."""

    single_statement = True

    owner: str
    queues: tuple[str, ...]
    details: ProcessDetails | None = None
    #: The job names it runs (None: it does not say, as an older trioforge).
    names: tuple[str, ...] | None = None


@attrs.frozen
class WakeAll(Op[None]):
    """Tell every listening process that work falls due on these queues, ``(queue,
    run_at)`` each: a wake-up addressed to one process that it could not take all of,
    passed on. Nothing happens on a backend that sends no notices."""

    runs = Runs.BESIDE
    single_statement = True

    wakes: tuple[tuple[str, float], ...]


@attrs.frozen
class Leave(Op[None]):
    """Process ``owner`` stopped cleanly; its row goes, as do leases it holds."""

    single_statement = True

    owner: str


@attrs.frozen
class Processes(Op[list[ProcessInfo]]):
    """The live process registry, oldest first."""

    runs = Runs.BESIDE
    single_statement = True
    handler = "processes_list"


@attrs.frozen
class WaitingNames(Op[dict[str, frozenset[str]]]):
    """Per queue (of ``queues``; None: every queue), the
    names of its pending jobs (scheduled, available, retrying). Read with the process
    registry, it finds jobs that no live process runs."""

    runs = Runs.BESIDE
    single_statement = True

    queues: tuple[str, ...] | None = None


@attrs.frozen
class Lead(Op[bool]):
    """Take or keep the lease ``name`` until ``until``; True if ``owner`` holds it.

    A lease held by another owner is taken only once it has expired.
    """

    single_statement = True

    name: str
    owner: str
    until: float


@attrs.frozen
class Stats(Op[dict[str, dict[JobState, int]]]):
    """Job counts per queue and state."""

    runs = Runs.BESIDE
    single_statement = True


@attrs.frozen
class PauseQueue(Op[bool]):
    """Pause (or resume) claims on ``queue`` for every process; True if that
    changed anything. Running jobs are not touched. Resuming wakes listening processes."""

    single_statement = True

    queue: str
    paused: bool


@attrs.frozen
class PausedQueues(Op[frozenset[str]]):
    """The queues whose claims are paused."""

    runs = Runs.BESIDE
    single_statement = True


@attrs.frozen
class FireCron(Op[FireResult]):
    """Advance schedule ``name`` from ``expected_last`` (None: no state
    yet) to ``new_last`` and enqueue ``jobs``, in one transaction. If another process moved
    the state first, nothing happens (``conflict``): a tick fires once however many
    schedulers race. With ``skip_if_running``, while the schedule's previous job is
    unfinished the ticks are counted as skipped instead of enqueued."""

    name: str
    expected_last: float | None
    new_last: float
    jobs: tuple[NewJob, ...]
    skip_if_running: bool = False

    def __attrs_post_init__(self) -> None:
        # Creating the state races unlocked on some backends, so it may carry no jobs.
        if self.expected_last is None and self.jobs:
            raise ValueError("a schedule's first state is recorded without jobs")


@attrs.frozen
class CronStates(Op[dict[str, CronState]]):
    """The durable state of every schedule."""

    runs = Runs.BESIDE


@attrs.frozen
class LoadWorkflow(Op[WorkflowRecord | None]):
    """A run's record (None: ``lease`` is not the run's current one). Also clears
    the run's wake-up flag: a signal or child end after this read wakes the run again."""

    runs = Runs.PER_JOB
    # Its one write (the flag) needs no transaction around the read after it: that read
    # sees what the write waited for.
    single_statement = True

    run_id: int
    lease: int

    def writes(self) -> frozenset[int]:
        # A run's row and record (and a child it inserts, a new row like an enqueue's).
        return frozenset((self.run_id,))


@attrs.frozen
class ReadWorkflow(Op[WorkflowRecord | None]):
    """A run's record (None: no such job): a look, changing nothing."""

    runs = Runs.BESIDE
    single_statement = True

    run_id: int


@attrs.frozen
class LatestSteps(Op[dict[int, StepRecord]]):
    """Each run's newest record entry (highest seq), for the runs
    of ``run_ids`` that have one (a list page's "current step", one read for the page)."""

    runs = Runs.BESIDE
    single_statement = True

    run_ids: tuple[int, ...]


@attrs.frozen
class RecordStep(Op[StepWrite]):
    """Write (insert or replace) entry ``step.seq`` of the run's record,
    fenced by the run's lease, together with what belongs to it in the same transaction:
    the signal it consumed, the child job it started (``step.result`` is then ignored and
    the child's id stored), and whether the run's cancel request is now handled."""

    runs = Runs.PER_JOB

    run_id: int
    lease: int
    step: StepRecord
    consume_signal: int | None = None
    child: NewJob | None = None
    clear_cancel: bool = False

    @property
    def plain(self) -> bool:
        """Whether it writes the entry alone (no signal, child or cancel request with it):
        PostgreSQL writes any number of those, of any runs, in one statement."""
        return self.consume_signal is None and self.child is None and not self.clear_cancel

    def writes(self) -> frozenset[int]:
        # A run's row and record (and a child it inserts, a new row like an enqueue's).
        return frozenset((self.run_id,))

    def atomic_alone(self) -> bool:
        return self.plain

    def changed(self, result: object) -> Iterable[int]:
        applied = isinstance(result, StepWrite) and result.applied
        return (self.run_id,) if applied else ()  # a run's page shows its steps


@attrs.frozen
class SendSignal(Op[int]):
    """Keep ``payload`` (JSON text) for run ``run_id``'s waits and wake the run; the
    signal's id. Raises JobNotFoundError, or InvalidStateError once it finished."""

    runs = Runs.PER_JOB

    run_id: int
    name: str
    payload: str = attrs.field(converter=storable)

    def writes(self) -> frozenset[int]:
        # A run's row and record (and a child it inserts, a new row like an enqueue's).
        return frozenset((self.run_id,))

    def changed(self, result: object) -> Iterable[int]:
        return (self.run_id,)  # and its pending signals


@attrs.frozen
class Purge(Op[list[int]]):
    """Delete up to ``limit`` finished jobs whose status is in ``statuses``
    and whose ``finished_at`` is before ``before``, oldest first, of ``queue`` (None: of
    every queue not in ``exclude``). Retention deletes in such small batches, each its own
    transaction, so no long lock is ever held. The ids deleted.

    It runs beside claims and outcomes: it writes only finished jobs, which nothing else
    writes but operations that run alone. Run alone, each batch held every claim of the
    process back (a million purged: the drain at a third of its rate)."""

    runs = Runs.BESIDE

    statuses: tuple[JobState, ...]
    before: float
    limit: int = 500
    queue: str | None = None
    exclude: tuple[str, ...] = ()
    #: Leave out jobs with a retention of their own (the sweeper's queue passes: those
    #: go by :class:`PurgeExpired`); an operator's purge by age takes them too.
    keep_retained: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.statuses or any(not JobState(s).is_terminal for s in self.statuses):
            raise ValueError(
                "only finished jobs (completed, dead, cancelled, compensated) are purged"
            )


@attrs.frozen
class PurgeExpired(Op[list[int]]):
    """Delete up to ``limit`` finished jobs whose own retention (``NewJob.retain``) for the
    state they ended in ran out before ``at``, the longest expired first, in one short
    transaction as :class:`Purge` (and beside other batches, as it). The ids deleted."""

    runs = Runs.BESIDE

    at: float
    limit: int = 500


@attrs.frozen
class Delete(Op[JobState]):
    """Delete one finished job (completed, dead, cancelled or compensated) with its
    attempts and, for a run, its record and signals: a purge of one. The state it was in;
    raises JobNotFoundError, or InvalidStateError while it is unfinished."""

    job_id: int

    def changed(self, result: object) -> Iterable[int]:
        return (self.job_id,) if isinstance(result, JobState) else ()  # a watcher sees it go


@attrs.frozen
class Attempts(Op[list[AttemptRecord]]):
    """Every error the job's attempts left, oldest first, the
    current one last (empty for an unknown job)."""

    job_id: int


@attrs.frozen
class JobFilter:
    """Which jobs a bulk operation touches: every given filter must match. ``since``: jobs
    that finished (unfinished ones: were enqueued) at or after it. ``after_id``: only ids
    above it, oldest first, so a caller pages through ``limit`` at a time."""

    queue: str | None = None
    name: str | None = None
    since: float | None = None
    after_id: int = 0
    limit: int = 1000


@attrs.frozen
class BulkResult:
    """What a bulk operation did: the ids it changed, and the last id it looked at (the
    next page starts after it; None: there is nothing further)."""

    ids: tuple[int, ...]
    last_seen: int | None


@attrs.frozen
class RetryMany(Op[BulkResult]):
    """Jobs of ``status`` (dead or cancelled) matching ``where`` made
    available again with fresh attempts, as :class:`RetryJob` does; a job whose
    idempotency key another unfinished job holds is skipped."""

    status: JobState
    where: JobFilter

    def __attrs_post_init__(self) -> None:
        if self.status not in (JobState.DEAD, JobState.CANCELLED):
            raise ValueError("only dead or cancelled jobs are retried")

    def changed(self, result: object) -> Iterable[int]:
        return result.ids if isinstance(result, BulkResult) else ()


@attrs.frozen
class DiscardMany(Op[BulkResult]):
    """Pending jobs (of ``status``; None: any pending one) matching
    ``where`` sent to dead with ``reason``, as :class:`Discard` does."""

    status: JobState | None
    where: JobFilter
    reason: str = attrs.field(converter=storable)

    def changed(self, result: object) -> Iterable[int]:
        return result.ids if isinstance(result, BulkResult) else ()


def handlers(backend: object) -> dict[type[Op], Any]:
    """Each operation type mapped to the backend's method for it, named ``_<handler>``
    (e.g. ``_enqueue``, ``_list_jobs``); a missing method fails at construction."""
    return {op: getattr(backend, "_" + op.handler) for op in _DECLARED.values()}


__all__ = ["BulkResult", "JobFilter", "Op", "Runs", "handlers", *_DECLARED]
