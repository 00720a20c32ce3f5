"""Attempt events as log records: one ``logging`` record per event of a job's attempt.

Every attempt's end passes through the queue's worker (``QueueSupervisor._attempt``), the
one place that knows how it ended, how long it took and what the job goes to next; rescues
pass through the reaper. Both describe the event here and log it on ``trioforge.attempts``
with the job's fields in ``extra``, so a text formatter reads the message and a JSON one
(``trioforge.logging.JsonFormatter``) gets every field. Building the record is pure.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

import attrs

from trioforge._core.outcomes import AttemptOutcome
from trioforge._core.states import Event, Failed, JobState, Suspended, next_state
from trioforge.storage import NEVER, ClaimedJob, RescuedJob

__all__ = [
    "AttemptRecord",
    "attempt_ended",
    "headline",
    "log",
    "log_event",
    "released_unstarted",
    "rescued",
    "resumed",
    "started",
]

log = logging.getLogger("trioforge.attempts")

#: The level of each way an attempt ends (a failure that goes dead is raised to ERROR).
_LEVELS: dict[AttemptOutcome, int] = {
    AttemptOutcome.COMPLETED: logging.INFO,
    AttemptOutcome.FAILED: logging.WARNING,
    AttemptOutcome.TIMED_OUT: logging.WARNING,
    AttemptOutcome.DISCARDED: logging.WARNING,
    AttemptOutcome.CANCELLED: logging.INFO,
    AttemptOutcome.RELEASED: logging.INFO,
    AttemptOutcome.SUSPENDED: logging.INFO,
    AttemptOutcome.COMPENSATED: logging.WARNING,
    AttemptOutcome.LOST: logging.WARNING,
}


@attrs.frozen
class AttemptRecord:
    """One event, ready to log: its level, its text and its fields (``extra``)."""

    level: int
    message: str
    fields: dict[str, Any]


def _job_fields(job: ClaimedJob | RescuedJob, event: str) -> dict[str, Any]:
    return {
        "event": event,
        "job_id": job.id,
        "job_name": job.name,
        "queue": job.queue,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
    }


def _who(job: ClaimedJob | RescuedJob) -> str:
    return f"job {job.id} {job.queue}:{job.name} attempt {job.attempt}/{job.max_attempts}"


def headline(error: BaseException | None, text: str | None = None) -> str | None:
    """An error in one line: ``Type: first line``, or the last line of a stored text (a
    traceback ends with it)."""
    if error is not None:
        message = str(error).strip().splitlines()
        return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    if text:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else None
    return None


def _at(when: float) -> str:
    """An epoch time as ISO 8601 UTC, to the second."""
    if not math.isfinite(when) or when >= NEVER:
        return "woken"
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def started(job: ClaimedJob) -> AttemptRecord:
    return AttemptRecord(logging.DEBUG, f"{_who(job)} started", _job_fields(job, "started"))


def resumed(job: ClaimedJob, steps: int) -> AttemptRecord:
    """A workflow run that ran before carries on from its record."""
    fields = _job_fields(job, "resumed") | {"steps": steps}
    return AttemptRecord(
        logging.INFO,
        f"{_who(job)} resumed ({steps} step{'' if steps == 1 else 's'} recorded)",
        fields,
    )


def attempt_ended(
    job: ClaimedJob,
    outcome: AttemptOutcome,
    event: Event | None,
    *,
    seconds: float,
    now: float,
    error: BaseException | None = None,
    error_text: str | None = None,
    why: str | None = None,
) -> AttemptRecord:
    """How one attempt ended (``event``: what is recorded; None: nothing, its lease was
    lost), after ``seconds``, at ``now`` (epoch seconds)."""
    state = None if event is None else next_state(JobState.RUNNING, event)
    seconds = round(seconds, 6)  # the field's value, so the text rounds the same number
    fields = _job_fields(job, outcome.value) | {
        "duration": seconds,
        "state": None if state is None else state.value,
    }
    level = _LEVELS[outcome]
    took = f"in {seconds:.3f}s"
    if outcome is AttemptOutcome.DISCARDED and error_text:  # the reason, not its exception
        problem = headline(None, error_text)
    else:
        problem = headline(error, error_text)
    if problem is not None and outcome is not AttemptOutcome.CANCELLED:
        fields["error"] = problem
    text: str
    if outcome is AttemptOutcome.COMPLETED:
        text = f"completed {took}"
    elif outcome is AttemptOutcome.FAILED:
        text = f"failed {took}: {problem}"
    elif outcome is AttemptOutcome.TIMED_OUT:
        text = f"timed out after {seconds:.3f}s"
    elif outcome is AttemptOutcome.DISCARDED:
        text = f"discarded {took}: {problem}"
    elif outcome is AttemptOutcome.CANCELLED:
        text = f"cancelled after {seconds:.3f}s"
    elif outcome is AttemptOutcome.RELEASED:
        text = f"released after {seconds:.3f}s (the worker is stopping; the attempt is not counted)"
    elif outcome is AttemptOutcome.SUSPENDED:
        assert isinstance(event, Suspended)
        timed = math.isfinite(event.run_at) and event.run_at < NEVER
        fields["wake_at"] = event.run_at if timed else None
        fields["why"] = why
        waits = f" on {why}" if why else ""
        wake = f"until {_at(event.run_at)}"
        if timed:
            wake += f" (in {max(event.run_at - now, 0.0):.1f}s)"
        text = f"suspended{waits} {took}, {wake}"
    elif outcome is AttemptOutcome.COMPENSATED:
        text = f"compensated {took}: {problem}"
    else:
        text = f"lost its lease {took}: another worker has the job; nothing recorded"
    if isinstance(event, Failed):
        if event.retry_at is None:
            # Attempts left, yet dead: the error is one no retry could mend (a payload that
            # no longer decodes, a result that cannot be stored, an attempt that could not
            # begin, one the retry policy refuses); the one record says so.
            text += "; dead" if job.attempt >= job.max_attempts else "; dead, not retried"
            level = logging.ERROR
        else:
            retry_in = max(event.retry_at - now, 0.0)
            fields["retry_at"], fields["retry_in"] = event.retry_at, round(retry_in, 6)
            text += f"; retry in {retry_in:.1f}s"
    elif outcome is AttemptOutcome.DISCARDED:
        text += "; dead"
    return AttemptRecord(level, f"{_who(job)} {text}", fields)


def released_unstarted(job: ClaimedJob) -> AttemptRecord:
    """A job claimed but never started: handed back as the worker stops."""
    fields = _job_fields(job, AttemptOutcome.RELEASED.value) | {"state": "available"}
    text = f"{_who(job)} released before it started (the worker is stopping)"
    return AttemptRecord(logging.INFO, text, fields)


def rescued(job: RescuedJob) -> AttemptRecord:
    """A running job whose worker stopped heartbeating, rescued."""
    fields = _job_fields(job, "rescued") | {"state": job.status.value}
    if job.status is JobState.DEAD:
        then, level = "dead (no attempts left)", logging.ERROR
    elif job.status is JobState.CANCELLED:
        then, level = "cancelled (as requested)", logging.WARNING
    elif job.attempt >= job.max_attempts:  # a workflow run: one attempt more, to undo it
        then, level = "no attempts left: to be undone now", logging.ERROR
    else:
        then, level = "retry now", logging.WARNING
    text = f"{_who(job)} rescued: its worker stopped heartbeating; {then}"
    return AttemptRecord(level, text, fields)


def log_event(record: AttemptRecord) -> None:
    if log.isEnabledFor(record.level):
        log.log(record.level, "%s", record.message, extra=record.fields)
