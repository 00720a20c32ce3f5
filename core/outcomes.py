"""How one attempt ended, in the words hooks, metrics and logs use (from the recorded event)."""

from __future__ import annotations

import enum

from trioforge._core.states import (
    Cancelled,
    Compensated,
    Discarded,
    Event,
    Failed,
    Released,
    Succeeded,
    Suspended,
)

__all__ = [
    "AttemptOutcome",
    "attempt_outcome",
    "counted_as",
]


class AttemptOutcome(enum.StrEnum):
    """How one attempt ended, as ``after_perform`` hooks are told."""

    COMPLETED = "completed"  # the handler returned
    FAILED = "failed"  # it raised: retried or dead, per the job's Retry
    TIMED_OUT = "timed_out"  # it ran past the job's timeout
    DISCARDED = "discarded"  # it raised Discard (or a group holding one)
    CANCELLED = "cancelled"  # cancelled by request: terminal
    RELEASED = "released"  # the runtime is stopping: handed back, the attempt not counted
    SUSPENDED = "suspended"  # a workflow run waits (sleep, signal, children): not counted
    COMPENSATED = "compensated"  # a workflow run ended with its completed steps undone
    LOST = "lost"  # its lease went to another worker: nothing of it is recorded


def attempt_outcome(event: Event | None, *, timed_out: bool) -> AttemptOutcome:
    """What the event recorded for an attempt (None: nothing, the lease was lost) means
    to the hooks."""
    if event is None:
        return AttemptOutcome.LOST
    if isinstance(event, Failed):
        return AttemptOutcome.TIMED_OUT if timed_out else AttemptOutcome.FAILED
    return _ATTEMPT_OUTCOMES[type(event)]


#: The events an attempt's end is recorded as (besides Failed, which depends on why).
_ATTEMPT_OUTCOMES: dict[type[Event], AttemptOutcome] = {
    Succeeded: AttemptOutcome.COMPLETED,
    Discarded: AttemptOutcome.DISCARDED,
    Cancelled: AttemptOutcome.CANCELLED,
    Released: AttemptOutcome.RELEASED,
    Suspended: AttemptOutcome.SUSPENDED,
    Compensated: AttemptOutcome.COMPENSATED,
}


def counted_as(outcome: AttemptOutcome, *, will_retry: bool) -> tuple[str, ...]:
    """The metrics counters an attempt's end adds one to: a failure (raised or timed out)
    is ``failed`` and then ``retried`` or ``dead``; a discard is ``dead``; a release or a
    lost lease counts nothing (the attempt did not end the job's run here)."""
    if outcome is AttemptOutcome.COMPLETED:
        return ("completed",)
    if outcome in (AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT):
        return ("failed", "retried" if will_retry else "dead")
    if outcome is AttemptOutcome.DISCARDED:
        return ("dead",)
    if outcome is AttemptOutcome.CANCELLED:
        return ("cancelled",)
    return ()
