"""The scheduling rules, as pure functions and a tiny state machine (no I/O, no clock).

Theory of operation
-------------------
A job is a row with a *state*. Every change of state is caused by one *event*; the table
:data:`TRANSITIONS` says which events each state accepts and where they lead. Nothing here
reads a clock or touches storage: callers pass ``now`` in, and get back the decision. The
memory backend applies these functions directly; the SQL backends encode the same rules in
their statements; the property tests use them as the reference model. So a rule changes in
one place and the contract suite tells every backend about it.

States::

    scheduled ─┐  (run_at in the future; claimable once due, no promotion step needed)
    available ─┼─ Claimed ──► running ─┬─ Succeeded ──► completed
    retrying ──┘                       ├─ Failed(retry) ──► retrying (run_at = now + backoff)
                                       ├─ Failed(no retry) / Discarded ──► dead
                                       ├─ Cancelled ──► cancelled
                                       ├─ Released ──► available (attempt not counted)
                                       ├─ Suspended ──► scheduled (a workflow run waits; the
                                       │                attempt not counted)
                                       ├─ Compensated ──► compensated (a workflow run undone)
                                       └─ Rescued ──► retrying | dead (owner stopped heartbeating)
    scheduled/available/retrying ─ Cancelled ──► cancelled;  ─ Discarded ──► dead
    dead/cancelled ─ Retried ──► available (attempts start over)

Claim order within a queue: higher priority first, then earlier ``run_at``, then enqueue
order (the job id). A claim never takes a job before its ``run_at``.

Leases fence writes: each claim bumps ``lease`` (a per-job counter). A write about a running
job (progress, heartbeat, outcome) names the lease it holds and is ignored unless that is
still the job's current lease and the job is still running.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Literal, TypeAlias

import attrs

from trioforge._core.errors import ConfigurationError


class JobState(enum.StrEnum):
    """Where a job is in its life; see the module docstring for the transitions."""

    SCHEDULED = "scheduled"
    AVAILABLE = "available"
    RUNNING = "running"
    COMPLETED = "completed"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"
    #: A workflow run that failed or was cancelled, its completed steps undone.
    COMPENSATED = "compensated"

    @property
    def is_terminal(self) -> bool:
        """Whether the state is final: completed, dead, cancelled or compensated. Only an
        operator's ``retry`` moves a job out of it."""
        return self in TERMINAL_STATES


#: States a claim may take a job from (once its run_at is due).
PENDING_STATES = frozenset({JobState.SCHEDULED, JobState.AVAILABLE, JobState.RETRYING})
#: States nothing leaves except an operator's explicit retry.
TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED, JobState.COMPENSATED}
)


class Priority(enum.IntEnum):
    """Claim order among due jobs of one queue; stored as the integer value."""

    LOW = 0
    NORMAL = 10
    HIGH = 20
    CRITICAL = 30


PriorityLike: TypeAlias = Priority | Literal["low", "normal", "high", "critical"] | int


#: Largest count or priority stored (the columns are 32-bit signed integers).
MAX_STORED_INT = 2**31 - 1


def parse_priority(value: PriorityLike) -> int:
    """Normalise a priority name, :class:`Priority` or int to the stored integer."""
    if isinstance(value, bool):
        raise ConfigurationError(f"priority must be a name or an int, not {value!r}")
    if isinstance(value, int):
        if not -MAX_STORED_INT <= value <= MAX_STORED_INT:
            raise ConfigurationError(
                f"priority must be an int between {-MAX_STORED_INT} and {MAX_STORED_INT}, "
                f"got {value!r}"
            )
        return int(value)
    try:
        return int(Priority[value.upper()])
    except KeyError:
        names = ", ".join(p.name.lower() for p in Priority)
        raise ConfigurationError(
            f"unknown priority {value!r}; use one of {names} or an int"
        ) from None


def is_due(run_at: float, now: float) -> bool:
    """A job never starts before its run_at."""
    return run_at <= now


def claim_key(priority: int, run_at: float, job_id: int) -> tuple[int, float, int]:
    """Sort key among due jobs of one queue: smaller sorts first."""
    return (-priority, run_at, job_id)


# --- events --------------------------------------------------------------------------


@attrs.frozen
class Claimed:
    pass


@attrs.frozen
class Succeeded:
    pass


@attrs.frozen
class Failed:
    #: None: no retry (attempts exhausted or exception not retried) -> dead.
    retry_at: float | None


@attrs.frozen
class Discarded:
    pass


@attrs.frozen
class Cancelled:
    pass


@attrs.frozen
class Released:
    pass


@attrs.frozen
class Suspended:
    """A workflow run stops until ``run_at`` (a durable sleep, a signal or its children):
    its row waits as ``scheduled`` and holds no worker slot. If the run was woken while it
    ran (a signal, a child finished), storage makes it due at once instead."""

    run_at: float


@attrs.frozen
class Compensated:
    pass


@attrs.frozen
class Rescued:
    retry_at: float | None


@attrs.frozen
class Retried:
    pass


Event: TypeAlias = (
    Claimed
    | Succeeded
    | Failed
    | Discarded
    | Cancelled
    | Released
    | Suspended
    | Compensated
    | Rescued
    | Retried
)

__all__ = [
    "MAX_STORED_INT",
    "PENDING_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Cancelled",
    "Claimed",
    "Compensated",
    "Discarded",
    "Event",
    "Failed",
    "JobState",
    "Priority",
    "PriorityLike",
    "Released",
    "Rescued",
    "Retried",
    "Succeeded",
    "Suspended",
    "claim_key",
    "is_due",
    "next_state",
    "parse_priority",
]


_S = JobState
_RUNNING_ONLY = frozenset({_S.RUNNING})

#: Which states accept which event types.
TRANSITIONS: dict[type[Event], frozenset[JobState]] = {
    Claimed: PENDING_STATES,
    Succeeded: _RUNNING_ONLY,
    Failed: _RUNNING_ONLY,
    Discarded: PENDING_STATES | _RUNNING_ONLY,
    Cancelled: PENDING_STATES | _RUNNING_ONLY,
    Released: _RUNNING_ONLY,
    Suspended: _RUNNING_ONLY,
    Compensated: _RUNNING_ONLY,
    Rescued: _RUNNING_ONLY,
    Retried: frozenset({_S.DEAD, _S.CANCELLED}),
}

_TARGET: dict[type[Event], Callable[[Event], JobState]] = {
    Claimed: lambda e: _S.RUNNING,
    Succeeded: lambda e: _S.COMPLETED,
    Failed: lambda e: _S.DEAD if e.retry_at is None else _S.RETRYING,  # type: ignore[union-attr]
    Discarded: lambda e: _S.DEAD,
    Cancelled: lambda e: _S.CANCELLED,
    Released: lambda e: _S.AVAILABLE,
    Suspended: lambda e: _S.SCHEDULED,
    Compensated: lambda e: _S.COMPENSATED,
    Rescued: lambda e: _S.DEAD if e.retry_at is None else _S.RETRYING,  # type: ignore[union-attr]
    Retried: lambda e: _S.AVAILABLE,
}


def next_state(state: JobState, event: Event) -> JobState | None:
    """The state ``event`` leads to from ``state``, or None if ``state`` ignores it."""
    if state not in TRANSITIONS[type(event)]:
        return None
    return _TARGET[type(event)](event)
