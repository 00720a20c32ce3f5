"""What the HTTP API says about a job or a workflow run: JSON objects built from snapshots
(pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from trioforge._core.states import PENDING_STATES, JobState, Priority
from trioforge._workflow_info import StepInfo, WorkflowInfo, step_detail
from trioforge.storage import NEVER, JobInfo, StepKind

__all__ = [
    "job_view",
    "priority_name",
    "run_updated_at",
    "run_view",
    "shown_progress",
    "step_view",
    "when",
]


def when(ts: float | None) -> str:
    """A time as the dashboard writes it (UTC), or a dash; "never" for a time no calendar
    reaches (a run waiting for a signal with no timeout is due at ``NEVER``)."""
    if ts is None or ts != ts:  # None or NaN
        return "—"
    if ts >= NEVER:
        return "never"
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):  # beyond the years datetime knows
        return "never" if ts > 0 else "—"


def priority_name(priority: int) -> str:
    """A priority as it was given: its name (``high``) when it has one, else its number."""
    try:
        return Priority(priority).name.lower()
    except ValueError:
        return str(priority)


def shown_progress(info: JobInfo) -> float | None:
    """The progress a page shows: 100 for a completed job (whatever it last reported)."""
    return 100.0 if info.status is JobState.COMPLETED else info.progress


def job_view(info: JobInfo) -> dict[str, Any]:
    """The tracking view of a job: no payload (ids are guessable; the payload is the
    caller's input, not something a tracker needs). ``retain``: its own retention in
    seconds per final state (null: kept forever), or null when its queue's applies."""
    return {
        "id": info.id,
        "name": info.name,
        "queue": info.queue,
        "status": info.status.value,
        "terminal": info.is_terminal,
        "attempt": info.attempt,
        "max_attempts": info.max_attempts,
        "progress": info.progress,
        "message": info.progress_message,
        "error": info.error,
        "result": info.result,
        "cancel_requested": info.cancel_requested,
        "created_at": info.created_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "retain": info.retain,
    }


def step_view(step: StepInfo) -> dict[str, Any]:
    """One entry of a run's record; ``child`` is the child job's id for a child start,
    ``compensation`` whether the entry belongs to the run's undo, ``detail`` its result,
    error or wake time in a few words."""
    return {
        "seq": step.seq,
        "kind": step.kind.value,
        "name": step.name,
        "status": step.status.value,
        "attempts": step.attempts,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "duration": None
        if step.started_at is None or step.finished_at is None
        else max(step.finished_at - step.started_at, 0.0),
        "result": step.result,
        "error": step.error,
        "wake_at": step.wake_at,
        "child": step.result if step.kind is StepKind.CHILD else None,
        "compensation": step.kind in (StepKind.COMPENSATING, StepKind.COMPENSATION),
        "detail": step_detail(step, when),
    }


def run_updated_at(job: JobInfo, step: StepInfo | None) -> float:
    """When a run last moved, as far as its row and its newest entry say."""
    times = [job.created_at, job.started_at, job.finished_at]
    if step is not None:
        times += [step.started_at, step.finished_at]
    return max(t for t in times if t is not None)


def run_view(info: WorkflowInfo) -> dict[str, Any]:
    """A run's tracking view: the job's (no payload), its workflow and version, its wake
    time while it waits (None: until a signal or its children), and every entry of its
    record (signals waiting to be taken by name only: their payloads are not shown)."""
    steps, job = info.steps, info.job
    waiting = job.status in PENDING_STATES
    return job_view(job) | {
        "workflow": info.name,
        "version": info.version,
        "wake_at": job.run_at if waiting and job.run_at < NEVER else None,
        "updated_at": run_updated_at(job, steps[-1] if steps else None),
        "steps": [step_view(s) for s in steps],
        "pending_signals": [name for name, _ in info.pending_signals],
        "children": list(info.children),
    }
