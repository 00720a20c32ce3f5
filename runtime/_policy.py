"""Per-queue policy: the defaults a queue gives the jobs that leave them unset."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from trioforge._errors import ConfigurationError
from trioforge._rules import Retry

__all__ = ["Queue", "QueueLike", "queue_policies", "queue_sizes"]


@attrs.frozen
class Queue:
    """A queue served by ``workers`` workers in this process, with defaults for its jobs.

    ``retry`` and ``timeout`` apply to every job in the queue whose ``@registry.job``
    gives none (a per-enqueue ``max_attempts=`` or ``timeout=`` still wins). A plain int in
    ``queues=`` is ``Queue(that int)``.
    """

    workers: int
    retry: Retry | None = None
    timeout: float | None = None

    def __attrs_post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigurationError(f"Queue workers must be an int >= 0, got {self.workers!r}")
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise ConfigurationError(f"Queue retry must be a trioforge.Retry, got {self.retry!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigurationError("Queue timeout must be > 0 seconds or None")


QueueLike = Queue | int


def _policy(name: object, value: object) -> Queue:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"queue names must be non-empty strings, got {name!r}")
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


def queue_sizes(policies: Mapping[str, Queue]) -> dict[str, int]:
    return {name: policy.workers for name, policy in policies.items()}
