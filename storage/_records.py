"""The data that crosses the storage boundary, as frozen attrs classes.

Payloads and results travel as JSON text into storage and come back decoded in
:class:`JobInfo`; nothing here is ever pickled.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from trioforge._core.states import (
    Cancelled,
    Compensated,
    Discarded,
    Failed,
    JobState,
    Released,
    Succeeded,
    Suspended,
)
from trioforge._core.text import storable_or_none

__all__ = [
    "AttemptRecord",
    "CancelResult",
    "ClaimResult",
    "CancelNotice",
    "ChildRecord",
    "ClaimedJob",
    "CronState",
    "Enqueued",
    "FireResult",
    "JOB_COLUMNS",
    "JobInfo",
    "NEVER",
    "NewJob",
    "Notice",
    "Outcome",
    "ProcessDetails",
    "ProcessInfo",
    "RescuedJob",
    "OutcomeEvent",
    "RenewResult",
    "SchemaStatus",
    "SignalRecord",
    "StepKind",
    "StepRecord",
    "StepStatus",
    "StepWrite",
    "SlotsFreedNotice",
    "WakeNotice",
    "WorkflowRecord",
    "decode_json",
    "job_info",
    "names_by_queue",
    "not_a_run",
    "not_finished",
    "step_record",
    "step_row",
]

OutcomeEvent = Succeeded | Failed | Discarded | Cancelled | Released | Suspended | Compensated

#: The run_at of a workflow run that waits with no deadline (a signal without a timeout,
#: children): only a signal or a child's end makes it due. Epoch seconds, ~31 million years.
NEVER = 1e15


def decode_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@attrs.frozen
class NewJob:
    """A job to insert; ``payload`` is JSON text already checked against the job's type."""

    name: str
    queue: str
    payload: str
    priority: int
    run_at: float
    max_attempts: int
    idempotency_key: str | None = None
    #: The workflow run that started this job as its child (its end wakes the parent).
    parent_id: int | None = None
    #: A workflow run: cancelling it while it waits hands it to a worker to compensate.
    workflow: bool = False
    #: Seconds an attempt may run, set per enqueue (None: the job's own timeout).
    timeout: float | None = None
    #: Capabilities a process must have to claim it (sorted; empty: any process).
    requires: tuple[str, ...] = ()
    #: Its rate-limit bucket and concurrency count (see ``trioforge._core.flow.FlowGate``).
    rate_key: str | None = None
    concurrency_key: str | None = None
    #: Seconds its idempotency key keeps blocking after a job holding it finished.
    unique_for: float | None = None
    #: The enqueuer's trace context, W3C ``traceparent``/``tracestate`` as a JSON object
    #: (see ``trioforge.otel``); None outside a trace or with tracing off.
    trace_context: str | None = None
    #: Its own retention once finished: a JSON object of seconds per final state
    #: ("completed", "cancelled", "dead", "compensated"; null: kept forever), every one
    #: given; None: its queue's.
    retain: str | None = None


@attrs.frozen
class Enqueued:
    id: int
    #: False when an unfinished job with the same idempotency key already existed.
    created: bool


@attrs.frozen
class ClaimedJob:
    """A job handed to a worker; ``lease`` fences every later write about this attempt."""

    id: int
    # Interned: a claim's rows bring their own copies of the same few strings, and one
    # lives per running job (tens of thousands at once in a wide pool).
    name: str = attrs.field(converter=sys.intern)
    queue: str = attrs.field(converter=sys.intern)
    payload: str
    priority: int
    run_at: float
    attempt: int
    max_attempts: int
    lease: int
    #: The per-enqueue timeout, if one was given.
    timeout: float | None = None
    #: The trace context stored at enqueue (``NewJob.trace_context``), every attempt alike.
    trace_context: str | None = None


@attrs.frozen
class ClaimResult:
    jobs: tuple[ClaimedJob, ...]
    #: Earliest run_at of a not-yet-due job this claimer could run, if any: when to look again.
    next_run_at: float | None
    #: Earliest time a due job held back by a rate limit gets its token.
    next_token_at: float | None = None
    #: Whether a concurrency limit held back a due job (it frees when a running one ends).
    held: bool = False


@attrs.frozen
class Outcome:
    """How an attempt ended, written only if ``lease`` is still the job's current lease."""

    job_id: int
    lease: int
    event: OutcomeEvent
    #: Text the runtime wrote is made storable here, the same for every backend.
    result: str | None = attrs.field(default=None, converter=storable_or_none)
    error: str | None = attrs.field(default=None, converter=storable_or_none)


@attrs.frozen
class RenewResult:
    #: Jobs among the renewed ones that someone asked to cancel.
    cancel_requested: frozenset[int]
    #: (job id, lease) of renewed attempts whose lease this owner no longer holds (rescued
    #: or finished elsewhere). By lease: a successor attempt of the same job may be held.
    lost: frozenset[tuple[int, int]]


class CancelResult(enum.StrEnum):
    CANCELLED = "cancelled"  # it was pending; it is cancelled now
    REQUESTED = "requested"  # it is running; its owner has been asked to stop
    FINISHED = "finished"  # already terminal; nothing changed


@attrs.frozen
class WakeNotice:
    """Another process enqueued work on ``queue`` that becomes due at ``run_at``."""

    queue: str
    run_at: float
    #: For a notice addressed to this process alone (its listener's own channel): how many
    #: jobs it announces, which this process takes or passes on to every other one. 0: a
    #: notice every listening process hears.
    owed: int = 0


@attrs.frozen
class CancelNotice:
    """Another process asked to cancel running job ``job_id``."""

    job_id: int


@attrs.frozen
class SlotsFreedNotice:
    """Jobs with a concurrency limit ended in another process: claims a limit held back
    may start now."""


Notice = WakeNotice | CancelNotice | SlotsFreedNotice


@attrs.frozen
class CronState:
    """A schedule's durable state: the last tick handled (fired or skipped)."""

    name: str
    last_tick: float
    last_job_id: int | None
    skipped: int


@attrs.frozen
class FireResult:
    conflict: bool = False
    job_ids: tuple[int, ...] = ()
    skipped: int = 0


@attrs.frozen
class RescuedJob:
    """A running job whose lease expired, as a rescue left it (its worker's log line)."""

    id: int
    name: str
    queue: str
    #: The attempt that was lost.
    attempt: int
    max_attempts: int
    #: Where it went: retrying, dead, or cancelled (a cancel was asked for).
    status: JobState


@attrs.frozen
class AttemptRecord:
    """One attempt's error, kept when a later write replaced it (a retry's claim, a
    rescue, an operator's retry), or the job's current one."""

    attempt: int
    started_at: float | None
    error: str


@attrs.frozen
class ProcessDetails:
    """What a runtime says about itself at each heartbeat (``trioforge workers list``)."""

    host: str
    pid: int
    #: Worker pool size per queue, at the last beat.
    pools: tuple[tuple[str, int], ...]
    capabilities: tuple[str, ...]
    #: Jobs running (or with their outcome unwritten) there at the last beat.
    running: int
    #: Workers holding a job per queue, at the last beat (none said: an older trioforge).
    busy: tuple[tuple[str, int], ...] = ()
    #: The channel only this process's listener hears, where an enqueue may address its
    #: wake-up to this process alone, and until when (wall clock) it may; None: address
    #: none here (no listener, a deaf one, a runtime stopping, or an older trioforge).
    wake_channel: str | None = None
    wake_until: float | None = None

    def to_json(self) -> str:
        data: dict[str, object] = {
            "host": self.host, "pid": self.pid, "pools": dict(self.pools),
            "capabilities": list(self.capabilities), "running": self.running,
            "busy": dict(self.busy),
        }  # fmt: skip
        if self.wake_channel is not None:
            data["wake_channel"], data["wake_until"] = self.wake_channel, self.wake_until
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | None) -> ProcessDetails | None:
        if text is None:
            return None
        data = json.loads(text)
        return cls(
            str(data["host"]), int(data["pid"]),
            tuple((str(q), int(n)) for q, n in data["pools"].items()),
            tuple(str(c) for c in data["capabilities"]), int(data["running"]),
            tuple((str(q), int(n)) for q, n in data.get("busy", {}).items()),
            *_wake_address(data.get("wake_channel"), data.get("wake_until")),
        )  # fmt: skip


def _wake_address(channel: object, until: object) -> tuple[str | None, float | None]:
    if isinstance(channel, str) and isinstance(until, int | float):
        return channel, float(until)
    return None, None


@attrs.frozen
class ProcessInfo:
    """A row of the process registry: a runtime that heartbeats."""

    owner: str
    queues: tuple[str, ...]
    started_at: float
    heartbeat_at: float
    #: None for a process that did not say (an older trioforge).
    details: ProcessDetails | None = None
    #: The job names it runs; None for a process that did not say (an older trioforge).
    names: tuple[str, ...] | None = None


@attrs.frozen
class SchemaStatus:
    current: int
    latest: int

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest


@attrs.frozen
class JobInfo:
    """A snapshot of one job, as stored."""

    id: int
    name: str
    queue: str
    status: JobState
    priority: int
    payload: Any
    attempt: int
    max_attempts: int
    run_at: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: Any
    error: str | None
    progress: float | None
    progress_message: str | None
    idempotency_key: str | None
    cancel_requested: bool
    #: Its own retention once finished (``retain=`` of its enqueue or declaration):
    #: seconds per final state ("completed", "cancelled", "dead", "compensated"; None:
    #: kept forever). None: its queue's retention applies.
    retain: dict[str, float | None] | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the job has finished (completed, dead, cancelled or compensated)."""
        return self.status.is_terminal


#: The columns SQL backends select for a :class:`JobInfo`, in :func:`job_info`'s order.
JOB_COLUMNS = (
    "id, name, queue, status, priority, payload, attempt, max_attempts, run_at, created_at, "
    "started_at, finished_at, result, error, progress, progress_message, idempotency_key, "
    "cancel_requested, retain"
)


def job_info(row: Sequence[Any]) -> JobInfo:
    """A :class:`JobInfo` from a row selected as :data:`JOB_COLUMNS`."""
    (id_, name, queue, status, priority, payload, attempt, max_attempts, run_at, created_at,
     started_at, finished_at, result, error, progress, message, key, cancel,
     retain) = row  # fmt: skip
    return JobInfo(
        id=id_,
        name=name,
        queue=queue,
        status=JobState(status),
        priority=priority,
        payload=decode_json(payload),
        attempt=attempt,
        max_attempts=max_attempts,
        run_at=run_at,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        result=decode_json(result),
        error=error,
        progress=progress,
        progress_message=message,
        idempotency_key=key,
        cancel_requested=bool(cancel),
        retain=decode_json(retain),
    )


class StepKind(enum.StrEnum):
    """What a workflow run's record entry is (replay checks the code makes the same calls)."""

    STEP = "step"
    SLEEP = "sleep"
    SIGNAL = "signal"
    CHILD = "child"
    #: Where the run stopped going forward and began undoing its steps (result: why).
    COMPENSATING = "compensating"
    #: The compensation of the completed step of the same name.
    COMPENSATION = "compensation"


class StepStatus(enum.StrEnum):
    """Where one entry of a workflow run's record stands (``StepInfo.status``)."""

    #: A step whose attempt was cut short (its worker stopped, or its run was released or
    #: ended, while its function ran): it runs again, same attempt, when the run does
    #: (shown, never stored).
    PENDING = "pending"
    #: Started and not finished: a step's function running (written once it has run for a
    #: moment), a sleep or a signal wait not yet over.
    RUNNING = "running"
    COMPLETED = "completed"
    #: The last attempt failed: retried at ``wake_at``, or for good when that is None.
    FAILED = "failed"
    #: Completed, then undone by its compensation (shown, never stored).
    COMPENSATED = "compensated"


@attrs.frozen
class StepRecord:
    """Entry ``seq`` of a workflow run's durable record; ``result`` is JSON text."""

    seq: int
    kind: StepKind
    name: str
    status: StepStatus
    attempt: int = 0
    result: str | None = attrs.field(default=None, converter=storable_or_none)
    error: str | None = attrs.field(default=None, converter=storable_or_none)
    #: A sleep's wake time, a signal wait's deadline, a failed step's next attempt.
    wake_at: float | None = None
    #: Whether the step has a compensation to run if the run fails.
    compensable: bool = False
    started_at: float | None = None
    finished_at: float | None = None


@attrs.frozen
class SignalRecord:
    """A signal sent to a run and not yet consumed by a wait; ``payload`` is JSON text."""

    id: int
    name: str
    payload: str
    sent_at: float


@attrs.frozen
class ChildRecord:
    """A job a run started as its child, as it stands."""

    id: int
    name: str
    status: JobState
    result: str | None
    error: str | None


@attrs.frozen
class WorkflowRecord:
    """Everything a run's replay needs: its record, pending signals and children."""

    run_id: int
    created_at: float
    cancel_requested: bool
    steps: tuple[StepRecord, ...]
    signals: tuple[SignalRecord, ...]
    children: tuple[ChildRecord, ...]
    #: Whether the job is a workflow run at all (a plain job's record is empty).
    workflow: bool = True


@attrs.frozen
class StepWrite:
    #: False: the run's lease was lost, nothing was written.
    applied: bool
    #: The id of the child job inserted with the step, if any.
    child_id: int | None = None


def step_record(row: Sequence[Any]) -> StepRecord:
    """A :class:`StepRecord` from a row of the SQL backends' step columns, in order."""
    seq, kind, name, status, attempt, result, error, wake_at, compensable, started, finished = row
    return StepRecord(
        seq, StepKind(kind), name, StepStatus(status), attempt, result, error, wake_at,
        bool(compensable), started, finished,
    )  # fmt: skip


def step_row(step: StepRecord) -> tuple[Any, ...]:
    """The SQL backends' step columns of ``step``, in :func:`step_record`'s order."""
    return (
        step.seq, step.kind.value, step.name, step.status.value, step.attempt, step.result,
        step.error, step.wake_at, step.compensable, step.started_at, step.finished_at,
    )  # fmt: skip


def not_finished(job_id: int, status: JobState) -> str:
    """The message for a delete of a job that has not finished: what ends it first."""
    how = "cancel it" if status is JobState.RUNNING else "cancel or discard it"
    return f"job {job_id} is {status}, not finished: {how} first, then delete it"


def not_a_run(job_id: int, name: str) -> str:
    """The message for a signal sent to a job that is not a workflow run."""
    return (
        f"job {job_id} ({name!r}) is not a workflow run; signals are for runs of workflows "
        "declared with registry.workflow"
    )


def names_by_queue(pairs: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    """``(queue, job name)`` pairs as the names of each queue."""
    out: dict[str, set[str]] = {}
    for queue, name in pairs:
        out.setdefault(queue, set()).add(name)
    return {queue: frozenset(names) for queue, names in out.items()}
