"""Per-queue policy: the defaults a queue gives the jobs that leave them unset."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping

import attrs

from trioforge._core.durations import Duration, optional_seconds, seconds
from trioforge._core.errors import ConfigurationError
from trioforge._core.flow import RateLimit
from trioforge._core.retry import Retry
from trioforge._core.states import JobState
from trioforge._core.text import check_storable

__all__ = [
    "Queue",
    "QueueLike",
    "Retention",
    "check_rate_limits",
    "describe_retention",
    "job_retention",
    "queue_policies",
    "queue_sizes",
]

Age = float | dt.timedelta | None


def _queue_timeout(value: Duration | None) -> float | None:
    return optional_seconds(value, "Queue timeout", positive=True)


@attrs.frozen
class Retention:
    """How long finished jobs are kept, per final state (None: forever). The lease-elected
    sweeper deletes older ones in small batches."""

    completed: Age = dt.timedelta(days=1)
    cancelled: Age = dt.timedelta(days=7)
    dead: Age = dt.timedelta(days=30)
    #: Workflow runs undone (compensated): kept as long as dead jobs by default.
    compensated: Age = dt.timedelta(days=30)

    def __attrs_post_init__(self) -> None:
        for state, age in self._given():
            seconds(age, f"Retention.{state.value}")

    def _given(self) -> list[tuple[JobState, float | dt.timedelta]]:
        ages = [(JobState.COMPLETED, self.completed), (JobState.CANCELLED, self.cancelled),
                (JobState.DEAD, self.dead), (JobState.COMPENSATED, self.compensated)]  # fmt: skip
        return [(state, age) for state, age in ages if age is not None]

    def ages(self) -> tuple[tuple[JobState, float], ...]:
        """Each state with a retention, and its age in seconds."""
        return tuple((state, seconds(age, state.value)) for state, age in self._given())

    def as_json(self) -> str:
        """As one job stores it (``retain=``): seconds per final state, null kept forever."""
        kept = dict.fromkeys(TERMINAL_ORDER, None) | {s.value: a for s, a in self.ages()}
        return json.dumps(kept, sort_keys=True)


#: A job's final states, as a stored ``retain`` names them.
TERMINAL_ORDER = ("completed", "cancelled", "dead", "compensated")


def job_retention(
    value: Retention | Duration | None, what: str, error: type[ValueError] = ConfigurationError
) -> str | None:
    """A job's own ``retain=`` as stored (JSON text; None: its queue's retention): a
    :class:`Retention`, or one duration for every final state."""
    if value is None:
        return None
    if isinstance(value, Retention):
        return value.as_json()
    if isinstance(value, bool) or not isinstance(value, int | float | dt.timedelta):
        raise error(
            f"{what} must be a trioforge.Retention (per final state), a number of seconds "
            f"or a datetime.timedelta, got {value!r}"
        )
    age = seconds(value, what, error=error)
    return json.dumps(dict.fromkeys(TERMINAL_ORDER, age), sort_keys=True)


def describe_retention(retain: Mapping[str, float | None] | None) -> str:
    """A job's own retention as people read it (``completed 20s, dead forever, ...``), or
    that its queue's applies: what ``trioforge jobs show`` and the job page print."""
    if retain is None:
        return "its queue's retention"
    return ", ".join(
        f"{state} {'forever' if retain.get(state) is None else _short(retain[state] or 0.0)}"
        for state in TERMINAL_ORDER
    )


def _short(age: float) -> str:
    """Seconds in the largest whole unit (``7d``, ``2h``, ``90s``; ``1.5s``)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= size and age % size == 0:
            return f"{age // size:.0f}{unit}"
    return f"{age:g}s"


@attrs.frozen
class Queue:
    """A queue served by ``workers`` workers in this process, with defaults for its jobs.

    ``retry`` and ``timeout`` apply to every job in the queue whose ``@registry.job``
    gives none (a per-enqueue ``max_attempts=`` or ``timeout=`` still wins); ``retention``
    says how long its finished jobs are kept. A plain int in ``queues=`` is
    ``Queue(that int)``.

    ``rate_limit`` is not a default but a cap on the whole queue: every start of any job
    in it (retries and workflow resumptions included, whoever enqueued it) takes a token
    from the limit's bucket, so at most ``rate/per * W + burst`` jobs of the queue start
    in any W seconds, across every process. A job's own ``rate_limit`` applies as well
    (it starts once both buckets have a token; one token if both are the same bucket).
    The limit is enforced by the claims of the processes serving the queue: give every
    one of them the same ``Queue(rate_limit=...)``. It has no ``key`` (the queue's jobs
    share one bucket); it shares the bucket of any job or queue limit of the same name.
    """

    workers: int
    retry: Retry | None = None
    #: Seconds (given as seconds or a timedelta).
    timeout: float | None = attrs.field(default=None, converter=_queue_timeout)
    #: How long its finished jobs are kept (None: ``open_runtime``'s ``retention``).
    retention: Retention | None = None
    #: A token bucket every job of the queue starts through (see above).
    rate_limit: RateLimit | None = None

    def __attrs_post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigurationError(f"Queue workers must be an int >= 0, got {self.workers!r}")
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise ConfigurationError(f"Queue retry must be a trioforge.Retry, got {self.retry!r}")
        if self.retention is not None and not isinstance(self.retention, Retention):
            raise ConfigurationError("Queue retention must be a trioforge.Retention")
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise ConfigurationError(
                f"Queue rate_limit must be a trioforge.RateLimit, got {self.rate_limit!r}"
            )
        if self.rate_limit is not None and self.rate_limit.key is not None:
            raise ConfigurationError(
                f"Queue rate_limit {self.rate_limit.name!r} cannot have a key: a queue's "
                "jobs share one bucket; give the jobs a RateLimit(key=...) of their own"
            )


QueueLike = Queue | int


def _policy(name: object, value: object) -> Queue:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"queue names must be non-empty strings, got {name!r}")
    check_storable(name, "queue name", ConfigurationError)
    if isinstance(value, Queue):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"queues must map queue names to worker counts >= 0 or trioforge.Queue(...), "
            f"got {name!r}: {value!r}"
        )
    return Queue(value)


def queue_policies(queues: Mapping[str, QueueLike] | None) -> dict[str, Queue]:
    """``queues=`` as checked :class:`Queue` policies (ints become ``Queue(n)``)."""
    return {name: _policy(name, value) for name, value in (queues or {}).items()}


def check_rate_limits(policies: Mapping[str, Queue], declared: Iterable[RateLimit]) -> None:
    """Rate limits of one name, on queues or jobs, share one bucket: they must agree."""
    known: dict[str, RateLimit] = {}
    for limit in declared:
        known.setdefault(limit.name, limit)
    for queue, policy in policies.items():
        if policy.rate_limit is None:
            continue
        limit = policy.rate_limit
        other = known.setdefault(limit.name, limit)
        if other != limit:
            raise ConfigurationError(
                f"queue {queue!r}: rate limit {limit.name!r} is already declared as "
                f"{other!r}; limits of one name share a bucket and must give it the "
                "same settings (or use another name)"
            )


def queue_sizes(policies: Mapping[str, Queue]) -> dict[str, int]:
    return {name: policy.workers for name, policy in policies.items()}
