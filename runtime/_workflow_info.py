"""What ``client.workflow(run_id)`` shows of a run: its job and each durable call."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs

from trioforge._core.states import JobState
from trioforge.storage import JobInfo, StepKind, StepRecord, StepStatus, WorkflowRecord

__all__ = [
    "StepInfo",
    "WorkflowInfo",
    "error_line",
    "short_json",
    "shown_in",
    "step_detail",
    "step_info",
    "workflow_info",
]


@attrs.frozen
class StepInfo:
    """One entry of a run's record: a step, sleep, signal wait, child start or undo."""

    seq: int
    kind: StepKind
    name: str
    #: running (a step's function from its start, a sleep or wait not over), completed,
    #: failed, compensated (completed, then undone), or pending (a step whose attempt was
    #: cut short: it runs again, same attempt, when the run does).
    status: StepStatus
    attempts: int
    started_at: float | None
    finished_at: float | None
    #: The decoded JSON result (a child start: the child's job id).
    result: Any
    error: str | None
    #: A sleep's wake time, a signal wait's deadline, a failed step's next attempt.
    wake_at: float | None


@attrs.frozen
class WorkflowInfo:
    """A workflow run as stored: the run's job, its version and its record."""

    job: JobInfo
    #: The workflow's name (without the version) and the version the run runs on.
    name: str
    version: int
    steps: tuple[StepInfo, ...]
    #: Signals sent and not yet consumed by a wait, as (name, decoded payload).
    pending_signals: tuple[tuple[str, Any], ...]
    #: The run's child jobs, by id.
    children: tuple[int, ...]

    @property
    def status(self) -> str:
        """The run's job status as text (``"running"``, ``"completed"``, ...)."""
        return self.job.status.value


def step_info(entry: StepRecord, undone: frozenset[str] = frozenset()) -> StepInfo:
    """One entry as shown; a completed step named in ``undone`` shows ``compensated``."""
    status = entry.status
    if entry.kind is StepKind.STEP and entry.name in undone:
        status = StepStatus.COMPENSATED
    return StepInfo(
        seq=entry.seq,
        kind=entry.kind,
        name=entry.name,
        status=status,
        attempts=entry.attempt,
        started_at=entry.started_at,
        finished_at=entry.finished_at,
        result=None if entry.result is None else json.loads(entry.result),
        error=entry.error,
        wake_at=entry.wake_at,
    )


#: The entries whose functions the worker runs (steps and undos; the others are waits):
#: only they are ever shown running, and cut short.
RUN_BY_FUNCTIONS = frozenset((StepKind.STEP, StepKind.COMPENSATION))


def shown_in(step: StepInfo, run: JobState) -> StepInfo:
    """``step`` as a run in state ``run`` shows it: a step (or an undo) left ``running``
    while the run is not running was cut short (its worker stopped, or the run was released
    or ended while it ran), and shows ``pending``."""
    cut_short = step.status is StepStatus.RUNNING and step.kind in RUN_BY_FUNCTIONS
    if cut_short and run is not JobState.RUNNING:
        return attrs.evolve(step, status=StepStatus.PENDING)
    return step


def workflow_info(job: JobInfo, record: WorkflowRecord) -> WorkflowInfo:
    """The view of a run from its job and its record (a job name ``name@vN``)."""
    name, _, version = job.name.rpartition("@v")
    undone = frozenset(
        e.name
        for e in record.steps
        if e.kind is StepKind.COMPENSATION and e.status is StepStatus.COMPLETED
    )
    return WorkflowInfo(
        job=job,
        name=name,
        version=int(version),
        steps=tuple(shown_in(step_info(e, undone), job.status) for e in record.steps),
        pending_signals=tuple((s.name, json.loads(s.payload)) for s in record.signals),
        children=tuple(c.id for c in record.children),
    )


def error_line(text: str | None) -> str:
    """The line of an error that says what happened: a traceback's last, else the first."""
    return "" if not text else text.strip().splitlines()[-1 if "Traceback" in text else 0]


def short_json(value: Any, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def step_detail(step: StepInfo, when: Callable[[float | None], str]) -> str:
    """What one record entry holds, in a few words: its result, error or wake time
    (``when`` writes a time)."""
    if step.kind is StepKind.CHILD:
        return f"child job {step.result}"
    if step.kind is StepKind.COMPENSATING:
        why = step.result if isinstance(step.result, dict) else {}
        return f"undoing ({why.get('outcome', '?')}): {error_line(str(why.get('reason', '')))}"
    if step.status is StepStatus.FAILED:
        retry = "for good" if step.wake_at is None else f"next attempt {when(step.wake_at)}"
        if isinstance(step.result, dict) and "discarded" in step.result:
            retry = "discarded"
        return f"{retry}; error: {error_line(step.error)}"
    if step.kind in RUN_BY_FUNCTIONS:
        if step.status is StepStatus.RUNNING:
            return f"attempt {step.attempts} running since {when(step.started_at)}"
        if step.status is StepStatus.PENDING:
            return f"attempt {step.attempts} cut short; runs again if the run goes on"
    if step.status is StepStatus.RUNNING:
        if step.kind is StepKind.SLEEP:
            return f"wakes {when(step.wake_at)}"
        if step.kind is StepKind.SIGNAL:
            return "no timeout" if step.wake_at is None else f"times out {when(step.wake_at)}"
    if step.kind is StepKind.SIGNAL and step.status is StepStatus.COMPLETED:
        return "timed out" if step.result is None else f"payload {short_json(step.result)}"
    if step.kind is StepKind.SLEEP:
        return f"woke {when(step.finished_at)} (due {when(step.wake_at)})"
    return f"result {short_json(step.result)}"
