"""Storage operations as frozen request objects.

The storage actor gathers whatever requests are waiting and hands them to the backend as one
batch (one transaction, one thread hop or one asyncio crossing). Each backend runs every
operation type below and returns, per operation, its result or the exception it raised, so
one bad request never fails its neighbours.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any, TypeAlias

import attrs

from trioforge._core.flow import JobLimits, RateLimit
from trioforge._core.states import JobState
from trioforge._core.text import storable, storable_or_none
from trioforge.storage._records import NewJob, Outcome, ProcessDetails, StepRecord

__all__ = [
    "Attempts",
    "Beat",
    "BulkResult",
    "Cancel",
    "Claim",
    "CronStates",
    "Discard",
    "DiscardMany",
    "Enqueue",
    "FireCron",
    "Finish",
    "FoldCounts",
    "Get",
    "GetMany",
    "JobFilter",
    "Lead",
    "Leave",
    "ListJobs",
    "LoadWorkflow",
    "Op",
    "PauseQueue",
    "PausedQueues",
    "Processes",
    "Progress",
    "LatestSteps",
    "ReadWorkflow",
    "RecordStep",
    "Purge",
    "ReleaseOrphans",
    "Renew",
    "Rescue",
    "RetryJob",
    "SendSignal",
    "RetryMany",
    "Stats",
    "Throughput",
    "ThroughputSeries",
    "WaitingNames",
    "handlers",
]


@attrs.frozen
class Enqueue:
    """-> list[Enqueued], one per job, in order; all in one transaction."""

    jobs: tuple[NewJob, ...]


@attrs.frozen
class Claim:
    """-> ClaimResult: up to ``limit`` due jobs of ``queue`` whose name is in ``names`` and
    whose required capabilities are all in ``capabilities``; none (and no next run_at)
    while the queue is paused. Jobs whose name has ``limits`` start only as their
    concurrency and rate limits allow (``FlowGate``, in this claim's transaction), and
    every job only as ``queue_rate`` (the queue's own rate limit) allows.
    ``ending`` names attempts ``(job id, lease)`` of this claimer whose handler has
    returned but whose outcome is not recorded yet: they no longer take a concurrency slot,
    so a claim made meanwhile sees the slots they free."""

    queue: str
    names: Set[str]
    limit: int
    owner: str
    lease_until: float
    capabilities: Set[str] = frozenset()
    limits: Mapping[str, JobLimits] = attrs.field(factory=dict)
    ending: Set[tuple[int, int]] = frozenset()
    queue_rate: RateLimit | None = None

    @property
    def flow_controlled(self) -> bool:
        """Whether some limit applies (the claim then goes through a ``FlowGate``)."""
        return bool(self.limits) or self.queue_rate is not None


@attrs.frozen
class Finish:
    """-> list[bool]: whether each fenced outcome was applied."""

    outcomes: tuple[Outcome, ...]


@attrs.frozen
class Renew:
    """-> RenewResult: extend the leases ``(job_id, lease)`` held by ``owner``."""

    owner: str
    leases: tuple[tuple[int, int], ...]
    lease_until: float


@attrs.frozen
class ReleaseOrphans:
    """-> list[int]: running jobs of ``queue`` leased to ``owner`` under a lease not in
    ``held`` go back to available, the attempt not counted (as a release). A claim whose
    reply was lost (its connection died after the commit) leaves such jobs; the owner's
    fetcher, sure of what it holds, hands them back instead of letting their leases run out.
    """

    queue: str
    owner: str
    held: tuple[tuple[int, int], ...]


@attrs.frozen
class Progress:
    """-> bool: record progress of a running attempt (fenced)."""

    job_id: int
    lease: int
    pct: float
    message: str | None = attrs.field(converter=storable_or_none)


@attrs.frozen
class Get:
    """-> JobInfo | None."""

    job_id: int


@attrs.frozen
class GetMany:
    """-> dict[int, JobInfo]: the snapshots of those of ``job_ids`` that exist (the live
    feed re-reads every watched job that changed in one operation)."""

    job_ids: tuple[int, ...]


@attrs.frozen
class ListJobs:
    """-> list[JobInfo], newest first; with ``before``, only ids below it (the next page)."""

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
class Throughput:
    """-> dict[str, dict[JobState, int]]: per queue and state, the stored jobs that finished
    in or after the whole second ``since`` (epoch seconds) falls in: kept per second, so a
    window is counted from a few rows however many jobs it holds."""

    since: float


@attrs.frozen
class ThroughputSeries:
    """-> dict[str, dict[JobState, dict[int, int]]]: per queue and state, the stored jobs
    that finished in or after the whole second ``since`` falls in, counted per ``step``
    seconds (keyed by each step's first second, a multiple of ``step``; empty steps are
    left out): a chart's bars, from the same per-second counts as :class:`Throughput`."""

    since: float
    step: int = 60


@attrs.frozen
class FoldCounts:
    """-> None: compact the stored counts (PostgreSQL sums its delta rows into one per
    key); the maintenance leader runs it. Counts read the same before and after."""


@attrs.frozen
class Cancel:
    """-> CancelResult; raises JobNotFoundError."""

    job_id: int


@attrs.frozen
class RetryJob:
    """-> bool: a dead or cancelled job becomes available with fresh attempts; raises
    JobNotFoundError."""

    job_id: int


@attrs.frozen
class Discard:
    """-> bool: a pending job goes to dead; raises JobNotFoundError."""

    job_id: int
    reason: str = attrs.field(converter=storable)


@attrs.frozen
class Rescue:
    """-> list[RescuedJob], by id: running jobs whose lease expired become retrying (or
    dead), and processes whose last beat is older than ``stale_before`` are forgotten."""

    stale_before: float = float("-inf")


@attrs.frozen
class Beat:
    """-> None: process ``owner`` (running ``queues``, and jobs of ``names``) is alive; its
    registry row."""

    owner: str
    queues: tuple[str, ...]
    details: ProcessDetails | None = None
    #: The job names it runs (None: it does not say, as an older trioforge).
    names: tuple[str, ...] | None = None


@attrs.frozen
class Leave:
    """-> None: process ``owner`` stopped cleanly; its row goes, as do leases it holds."""

    owner: str


@attrs.frozen
class Processes:
    """-> list[ProcessInfo]: the live process registry, oldest first."""


@attrs.frozen
class WaitingNames:
    """-> dict[str, frozenset[str]]: per queue (of ``queues``; None: every queue), the
    names of its pending jobs (scheduled, available, retrying). Read with the process
    registry, it finds jobs that no live process runs."""

    queues: tuple[str, ...] | None = None


@attrs.frozen
class Lead:
    """-> bool: take or keep the lease ``name`` until ``until``; True if ``owner`` holds it.

    A lease held by another owner is taken only once it has expired.
    """

    name: str
    owner: str
    until: float


@attrs.frozen
class Stats:
    """-> dict[str, dict[JobState, int]]: job counts per queue and state."""


@attrs.frozen
class PauseQueue:
    """-> bool: pause (or resume) claims on ``queue`` for every process; True if that
    changed anything. Running jobs are not touched. Resuming wakes listening processes."""

    queue: str
    paused: bool


@attrs.frozen
class PausedQueues:
    """-> frozenset[str]: the queues whose claims are paused."""


@attrs.frozen
class FireCron:
    """-> FireResult: advance schedule ``name`` from ``expected_last`` (None: no state
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
class CronStates:
    """-> dict[str, CronState]: the durable state of every schedule."""


@attrs.frozen
class LoadWorkflow:
    """-> WorkflowRecord | None (None: ``lease`` is not the run's current one). Also clears
    the run's wake-up flag: a signal or child end after this read wakes the run again."""

    run_id: int
    lease: int


@attrs.frozen
class ReadWorkflow:
    """-> WorkflowRecord | None (None: no such job): a look, changing nothing."""

    run_id: int


@attrs.frozen
class LatestSteps:
    """-> dict[int, StepRecord]: each run's newest record entry (highest seq), for the runs
    of ``run_ids`` that have one (a list page's "current step", one read for the page)."""

    run_ids: tuple[int, ...]


@attrs.frozen
class RecordStep:
    """-> StepWrite: write (insert or replace) entry ``step.seq`` of the run's record,
    fenced by the run's lease, together with what belongs to it in the same transaction:
    the signal it consumed, the child job it started (``step.result`` is then ignored and
    the child's id stored), and whether the run's cancel request is now handled."""

    run_id: int
    lease: int
    step: StepRecord
    consume_signal: int | None = None
    child: NewJob | None = None
    clear_cancel: bool = False


@attrs.frozen
class SendSignal:
    """-> int (the signal's id): keep ``payload`` (JSON text) for run ``run_id``'s waits
    and wake the run. Raises JobNotFoundError, or InvalidStateError once it finished."""

    run_id: int
    name: str
    payload: str = attrs.field(converter=storable)


@attrs.frozen
class Purge:
    """-> list[int]: delete up to ``limit`` finished jobs whose status is in ``statuses``
    and whose ``finished_at`` is before ``before``, oldest first, of ``queue`` (None: of
    every queue not in ``exclude``). Retention deletes in such small batches, each its own
    transaction, so no long lock is ever held."""

    statuses: tuple[JobState, ...]
    before: float
    limit: int = 500
    queue: str | None = None
    exclude: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not self.statuses or any(not JobState(s).is_terminal for s in self.statuses):
            raise ValueError(
                "only finished jobs (completed, dead, cancelled, compensated) are purged"
            )


@attrs.frozen
class Attempts:
    """-> list[AttemptRecord]: every error the job's attempts left, oldest first, the
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
class RetryMany:
    """-> BulkResult: jobs of ``status`` (dead or cancelled) matching ``where`` made
    available again with fresh attempts, as :class:`RetryJob` does; a job whose
    idempotency key another unfinished job holds is skipped."""

    status: JobState
    where: JobFilter

    def __attrs_post_init__(self) -> None:
        if self.status not in (JobState.DEAD, JobState.CANCELLED):
            raise ValueError("only dead or cancelled jobs are retried")


@attrs.frozen
class DiscardMany:
    """-> BulkResult: pending jobs (of ``status``; None: any pending one) matching
    ``where`` sent to dead with ``reason``, as :class:`Discard` does."""

    status: JobState | None
    where: JobFilter
    reason: str = attrs.field(converter=storable)


@attrs.frozen
class BulkResult:
    """What a bulk operation did: the ids it changed, and the last id it looked at (the
    next page starts after it; None: there is nothing further)."""

    ids: tuple[int, ...]
    last_seen: int | None


def handlers(backend: object) -> dict[type, Any]:
    """Each operation type mapped to the backend's method for it, named ``_<op_name>``
    (e.g. ``_enqueue``, ``_list_jobs``); a missing method fails at construction."""
    return {op: getattr(backend, "_" + name) for op, name in _NAMES.items()}


Op: TypeAlias = (
    Enqueue
    | Claim
    | Finish
    | Renew
    | ReleaseOrphans
    | Progress
    | Get
    | GetMany
    | ListJobs
    | Cancel
    | RetryJob
    | Discard
    | Rescue
    | Stats
    | Throughput
    | ThroughputSeries
    | FoldCounts
    | PauseQueue
    | PausedQueues
    | Beat
    | Leave
    | Processes
    | WaitingNames
    | Lead
    | FireCron
    | CronStates
    | LoadWorkflow
    | ReadWorkflow
    | LatestSteps
    | RecordStep
    | SendSignal
    | Purge
    | Attempts
    | RetryMany
    | DiscardMany
)

_NAMES: dict[type, str] = {
    Enqueue: "enqueue",
    Claim: "claim",
    Finish: "finish",
    Renew: "renew",
    ReleaseOrphans: "release_orphans",
    Progress: "progress",
    Get: "get",
    GetMany: "get_many",
    ListJobs: "list_jobs",
    Cancel: "cancel",
    RetryJob: "retry_job",
    Discard: "discard",
    Rescue: "rescue",
    Stats: "stats",
    Throughput: "throughput",
    ThroughputSeries: "throughput_series",
    FoldCounts: "fold_counts",
    PauseQueue: "pause_queue",
    PausedQueues: "paused_queues",
    Beat: "beat",
    Leave: "leave",
    Processes: "processes_list",
    WaitingNames: "waiting_names",
    Lead: "lead",
    FireCron: "fire_cron",
    CronStates: "cron_states",
    LoadWorkflow: "load_workflow",
    ReadWorkflow: "read_workflow",
    LatestSteps: "latest_steps",
    RecordStep: "record_step",
    SendSignal: "send_signal",
    Purge: "purge",
    Attempts: "attempts",
    RetryMany: "retry_many",
    DiscardMany: "discard_many",
}
