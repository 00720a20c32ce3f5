"""What ``client.workflow(run_id)`` shows of a run: its job and each durable call."""

from __future__ import annotations

import json
from typing import Any

import attrs

from trioforge.storage import JobInfo, StepKind, StepRecord, StepStatus, WorkflowRecord

__all__ = ["StepInfo", "WorkflowInfo", "workflow_info"]


@attrs.frozen
class StepInfo:
    """One entry of a run's record: a step, sleep, signal wait, child start or undo."""

    seq: int
    kind: StepKind
    name: str
    #: pending, running, completed, failed, or compensated (completed, then undone).
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
        return self.job.status.value


def _step(entry: StepRecord, undone: set[str]) -> StepInfo:
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


def workflow_info(job: JobInfo, record: WorkflowRecord) -> WorkflowInfo:
    """The view of a run from its job and its record (a job name ``name@vN``)."""
    name, _, version = job.name.rpartition("@v")
    undone = {
        e.name
        for e in record.steps
        if e.kind is StepKind.COMPENSATION and e.status is StepStatus.COMPLETED
    }
    return WorkflowInfo(
        job=job,
        name=name,
        version=int(version),
        steps=tuple(_step(e, undone) for e in record.steps),
        pending_signals=tuple((s.name, json.loads(s.payload)) for s in record.signals),
        children=tuple(c.id for c in record.children),
    )
