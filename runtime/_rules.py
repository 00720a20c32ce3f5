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

import datetime as dt
import enum
import math
from collections.abc import Callable, Mapping, Set
from typing import Any, Literal, TypeAlias

import attrs

from trioforge._durations import seconds
from trioforge._errors import ConfigurationError, Discard, PayloadError
from trioforge._text import check_storable

__all__ = [
    "PENDING_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "FLOW_WINDOW",
    "TOKEN_EPSILON",
    "AttemptOutcome",
    "Bucket",
    "Cancelled",
    "Claimed",
    "Compensated",
    "ConcurrencyLimit",
    "Discarded",
    "Event",
    "Failed",
    "FlowGate",
    "JobLimits",
    "JobState",
    "Priority",
    "RateLimit",
    "Released",
    "Rescued",
    "Retried",
    "Retry",
    "Succeeded",
    "Suspended",
    "attempt_outcome",
    "backoff_delay",
    "claim_key",
    "discard_reason",
    "failure_outcome",
    "is_due",
    "next_state",
    "parse_priority",
    "refill",
    "rescue_outcome",
]


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


def _base_delay(value: float | dt.timedelta) -> float:
    return seconds(value, "Retry.base_delay")


def _max_delay(value: float | dt.timedelta) -> float:
    return seconds(value, "Retry.max_delay")


@attrs.frozen
class Retry:
    """How a failing job is retried.

    ``max_attempts`` counts every attempt, the first included (1 means never retry).
    After failed attempt *n* the job waits ``min(base_delay * 2**(n-1), max_delay)`` seconds
    (``backoff="exponential"``) or ``base_delay`` (``"constant"``), reduced by up to
    ``jitter`` (a fraction in [0, 1)) at random. ``on`` limits which exception types are
    retried; an empty tuple retries every exception. A timed-out attempt raises
    :class:`~trioforge.JobTimeoutError` (a ``TimeoutError``) for this purpose.

    An exception group (what a nursery inside the handler raises) retries only if every
    exception in it, nested groups included, is of a type in ``on``: one error that is not
    retryable makes the whole attempt not retryable.
    """

    max_attempts: int = 3
    backoff: Literal["exponential", "constant"] = "exponential"
    #: Seconds (given as seconds or a timedelta), as ``max_delay``.
    base_delay: float = attrs.field(default=1.0, converter=_base_delay)
    max_delay: float = attrs.field(default=300.0, converter=_max_delay)
    jitter: float = 0.0
    on: tuple[type[BaseException], ...] = ()
    discard_on: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = ()

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.max_attempts <= MAX_STORED_INT:
            raise ConfigurationError(
                f"Retry.max_attempts must be between 1 (no retries) and {MAX_STORED_INT}, "
                f"got {self.max_attempts!r}"
            )
        if self.backoff not in ("exponential", "constant"):
            raise ConfigurationError("Retry.backoff must be 'exponential' or 'constant'")
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigurationError("Retry.jitter must be a fraction in [0, 1)")
        is_function = callable(self.discard_on) and not isinstance(self.discard_on, type)
        if not is_function and not (
            isinstance(self.discard_on, tuple)
            and all(isinstance(t, type) and issubclass(t, BaseException) for t in self.discard_on)
        ):
            raise ConfigurationError(
                "Retry.discard_on must be a tuple of exception types (one type: "
                f"(TypeError,)) or a function (exc) -> bool, got {self.discard_on!r}"
            )

    def discards(self, exc: BaseException) -> bool:
        """Whether ``exc`` (a group: any exception in it) is one ``discard_on`` names."""
        condition = self.discard_on
        if condition == ():
            return False
        try:
            if isinstance(exc, BaseExceptionGroup):
                found, _ = exc.split(condition)
                return found is not None
            if isinstance(condition, tuple):
                return isinstance(exc, condition)
            return bool(condition(exc))
        except Exception:
            return False

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is of a type this policy retries (a group: all of its leaves)."""
        if not self.on:
            return True
        if isinstance(exc, BaseExceptionGroup):
            _, rest = exc.split(self.on)
            return rest is None
        return isinstance(exc, self.on)


def discard_reason(exc: BaseException) -> str | None:
    """The reason of the :class:`~trioforge.Discard` that ``exc`` is or holds (anywhere in
    nested exception groups), None if it holds none. Several Discards in one group: their
    distinct reasons joined by "; ", in the group's order."""
    if isinstance(exc, Discard):
        return exc.reason
    if not isinstance(exc, BaseExceptionGroup):
        return None
    found, _ = exc.split(Discard)
    if found is None:
        return None
    reasons: list[str] = []
    pending: list[BaseException] = [found]
    while pending:
        leaf = pending.pop(0)
        if isinstance(leaf, BaseExceptionGroup):
            pending[:0] = leaf.exceptions
        elif isinstance(leaf, Discard) and leaf.reason not in reasons:
            reasons.append(leaf.reason)
    return "; ".join(reasons)


def backoff_delay(policy: Retry, attempt: int, u: float = 0.0) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based); ``u`` in [0, 1) is the
    random draw used for jitter, passed in so the rule stays deterministic."""
    if policy.backoff == "constant":
        delay = policy.base_delay
    else:
        # Cap the exponent so huge attempt numbers cannot overflow a float.
        delay = min(policy.base_delay * 2.0 ** min(attempt - 1, 1000), policy.max_delay)
    return delay * (1.0 - policy.jitter * u)


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


def failure_outcome(
    policy: Retry, attempt: int, exc: BaseException, now: float, u: float = 0.0
) -> Failed:
    """Decide what failed attempt ``attempt`` leads to (a final PayloadError: dead at once)."""
    if (
        attempt >= policy.max_attempts
        or policy.discards(exc)
        or not policy.retries(exc)
        or (isinstance(exc, PayloadError) and exc.final)
    ):
        return Failed(retry_at=None)
    return Failed(retry_at=now + backoff_delay(policy, attempt, u))


def rescue_outcome(attempt: int, max_attempts: int, now: float) -> Rescued:
    """A job whose owner vanished: retry at once if attempts are left (the lost attempt
    counts), else dead. Backoff is not applied: the failure was the worker's, not the job's."""
    return Rescued(retry_at=now if attempt < max_attempts else None)


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


# --- flow control ----------------------------------------------------------------------
#
# A claim walks the due jobs of its queue in claim order and asks a FlowGate about each:
# a job starts only if its concurrency key has a free slot and its rate bucket a token.
# The SQL backends read the counters and buckets a claim needs (locked, on PostgreSQL) in
# the claim's own transaction and feed them to the same gate, so every backend decides
# alike; the memory backend keeps them in dicts.

#: Due jobs one flow-controlled claim looks at, at most (those held back included).
FLOW_WINDOW = 1000
#: Seconds: a bucket whose next whole token is this close has it, and a held-back job is
#: looked at again no sooner than this: epoch times carry ~1e-7 s of float rounding, and
#: a fetcher sleeping until the computed refill time must find the token there (or at
#: least a later instant), never spin at one instant.
TOKEN_EPSILON = 1e-6


def _check_limit_name(kind: str, name: object) -> None:
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigurationError(
            f"a {kind} name must be a non-empty string without ':', got {name!r}"
        )
    check_storable(name, f"{kind} name", ConfigurationError)


def _limit_key(name: str, key: Callable[[Any], object] | None, payload: Any) -> str:
    if key is None:
        return name
    return f"{name}:{key(payload)}"


@attrs.frozen
class RateLimit:
    """At most ``rate`` starts per ``per`` (seconds or a timedelta), in bursts of up to
    ``burst``: a token bucket of ``burst`` tokens refilled at ``rate / per`` per second,
    one token per start. So in any window of W seconds at most ``rate/per * W + burst``
    jobs start, across every process. Jobs declaring a limit of the same ``name`` share
    its bucket; with ``key`` (a function of the payload) each key value has its own.
    """

    name: str
    rate: float
    per: float | dt.timedelta = 1.0
    burst: int = 1
    key: Callable[[Any], object] | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        _check_limit_name("rate limit", self.name)
        per = self.per.total_seconds() if isinstance(self.per, dt.timedelta) else self.per
        if not (isinstance(self.rate, int | float) and 0 < self.rate < math.inf):
            raise ConfigurationError(f"RateLimit.rate must be a number > 0, got {self.rate!r}")
        if not (isinstance(per, int | float) and 0 < per < math.inf):
            raise ConfigurationError(f"RateLimit.per must be > 0 seconds, got {self.per!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigurationError(f"RateLimit.burst must be an int >= 1, got {self.burst!r}")
        if self.key is not None and not callable(self.key):
            raise ConfigurationError("RateLimit.key must be a function of the payload")

    @property
    def per_second(self) -> float:
        per = self.per.total_seconds() if isinstance(self.per, dt.timedelta) else self.per
        return self.rate / per

    def key_for(self, payload: Any) -> str:
        """The bucket a job with ``payload`` takes its token from."""
        return _limit_key(self.name, self.key, payload)


@attrs.frozen
class ConcurrencyLimit:
    """At most ``limit`` jobs running at once across every process, per value of ``key``
    (a function of the payload; none: one count for the name). Jobs declaring a limit of
    the same ``name`` share its counts."""

    name: str
    limit: int
    key: Callable[[Any], object] | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        _check_limit_name("concurrency limit", self.name)
        if (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, int)
            or not 1 <= self.limit <= MAX_STORED_INT
        ):
            raise ConfigurationError(
                f"ConcurrencyLimit.limit must be an int from 1 to {MAX_STORED_INT}, "
                f"got {self.limit!r}"
            )
        if self.key is not None and not callable(self.key):
            raise ConfigurationError("ConcurrencyLimit.key must be a function of the payload")

    def key_for(self, payload: Any) -> str:
        """The count a job with ``payload`` is part of."""
        return _limit_key(self.name, self.key, payload)


@attrs.frozen
class JobLimits:
    """The limits a claimer applies to one job name."""

    rate: RateLimit | None = None
    concurrency: ConcurrencyLimit | None = None


@attrs.frozen
class Bucket:
    """A token bucket as stored: ``tokens`` as of ``at``."""

    tokens: float
    at: float


def refill(bucket: Bucket | None, limit: RateLimit, now: float) -> Bucket:
    """The bucket at ``now``: full when new, refilled for the time since ``at`` (never
    past ``burst``; a clock behind ``at`` refills nothing and keeps ``at``)."""
    if bucket is None:
        return Bucket(float(limit.burst), now)
    if now <= bucket.at:
        return bucket
    tokens = min(float(limit.burst), bucket.tokens + (now - bucket.at) * limit.per_second)
    return Bucket(tokens, now)


def next_token_at(bucket: Bucket, limit: RateLimit) -> float:
    """When ``bucket`` (refilled) holds a whole token again."""
    return bucket.at + max(0.0, 1.0 - bucket.tokens) / limit.per_second


class FlowGate:
    """Decides, job by job in claim order, which due jobs one claim may start.

    ``running`` counts running jobs per concurrency key and ``buckets`` holds the stored
    buckets of the rate keys involved, as read in the claim's transaction. ``queue_rate``
    is the claimed queue's own limit (``Queue(rate_limit=)``): every job of the queue
    takes a token from its bucket as well as from its own (one token when both are the
    same bucket). After the walk, :attr:`buckets` holds the buckets to store back,
    :attr:`next_token_at` the earliest time a job held back by a rate limit gets a token,
    and :attr:`held` whether a concurrency limit held any job back (it frees when a
    running one ends).
    """

    def __init__(
        self,
        limits: Mapping[str, JobLimits],
        running: Mapping[str, int],
        buckets: Mapping[str, Bucket],
        now: float,
        queue_rate: RateLimit | None = None,
    ) -> None:
        self._limits = limits
        self._queue_rate = queue_rate
        self._running = dict(running)
        self._stored = buckets
        self._now = now
        self.buckets: dict[str, Bucket] = {}
        self.next_token_at: float | None = None
        self.held = False
        self._busy: set[str] = set()

    def learn(
        self,
        running: Mapping[str, int],
        buckets: Mapping[str, Bucket],
        busy: Set[str] = frozenset(),
    ) -> None:
        """Counts and stored buckets of more keys (a claim reading due jobs in chunks);
        keys already known keep what this claim made of them. ``busy`` keys (rate or
        concurrency) could not be read now (another claim holds them): their jobs wait."""
        for key, count in running.items():
            self._running.setdefault(key, count)
        self._stored = {**buckets, **self._stored}
        self._busy |= busy

    def _rates(self, limits: JobLimits | None, rate_key: str | None) -> list[tuple[str, RateLimit]]:
        """The buckets a job takes a token from: its own, and its queue's."""
        rates = []
        if limits is not None and limits.rate is not None and rate_key is not None:
            rates.append((rate_key, limits.rate))
        queue = self._queue_rate
        if queue is not None and queue.name != rate_key:
            rates.append((queue.name, queue))
        return rates

    def _bucket(self, key: str, limit: RateLimit) -> Bucket:
        return self.buckets.get(key) or refill(self._stored.get(key), limit, self._now)

    def admit(self, name: str, rate_key: str | None, concurrency_key: str | None) -> bool:
        """Whether the job may start now; if so, it takes its slot and its tokens."""
        limits = self._limits.get(name)
        rates = self._rates(limits, rate_key)
        concurrency = limits.concurrency if limits is not None else None
        if concurrency_key is None:
            concurrency = None
        if concurrency is None and not rates:
            return True
        if self._busy and (
            concurrency_key in self._busy or any(key in self._busy for key, _ in rates)
        ):
            self.held = True  # look again soon: the other claim is about to commit
            return False
        if (
            concurrency is not None
            and concurrency_key is not None
            and self._running.get(concurrency_key, 0) >= concurrency.limit
        ):
            self.held = True
            return False
        buckets = [(key, rate, self._bucket(key, rate)) for key, rate in rates]
        short = [
            (rate, bucket)
            for _, rate, bucket in buckets
            if (1.0 - bucket.tokens) / rate.per_second > TOKEN_EPSILON
        ]
        if short:  # it starts once every one of its buckets has a token
            for key, _, bucket in buckets:
                self.buckets[key] = bucket
            at = max(self._now + TOKEN_EPSILON, *(next_token_at(b, r) for r, b in short))
            if self.next_token_at is None or at < self.next_token_at:
                self.next_token_at = at
            return False
        for key, _, bucket in buckets:
            self.buckets[key] = Bucket(max(0.0, bucket.tokens - 1.0), bucket.at)
        if concurrency is not None and concurrency_key is not None:
            self._running[concurrency_key] = self._running.get(concurrency_key, 0) + 1
        return True
