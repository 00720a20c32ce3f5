"""What a running handler sees of the runtime: its job's identity and a few fenced writes."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

import trio

from trioforge._core.durations import Duration, seconds
from trioforge._core.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    InvalidStateError,
)
from trioforge._core.flow import RateLimit
from trioforge._lifespan import NO_STATE, StateT
from trioforge.actors import RunningJobs, StorageHandle
from trioforge.storage import ClaimedJob, RenewResult, ops

if TYPE_CHECKING:
    from trioforge._client import Client, JobRef
    from trioforge._core.clock import Clock
    from trioforge._job import Job
    from trioforge._registry import JobDefinition

__all__ = ["CronContext", "JobContext"]

_log = logging.getLogger("trioforge.job")
#: The rate limits of a context given none (one for every context: one lives per job).
_NO_LIMITS: Mapping[str, RateLimit] = MappingProxyType({})
_P = TypeVar("_P")
_R = TypeVar("_R")


def job_fields(job: ClaimedJob) -> dict[str, Any]:
    """The fields of every ``ctx.log`` record (``extra``): which job and attempt logged it."""
    return {
        "job_id": job.id,
        "job_name": job.name,
        "queue": job.queue,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
    }


class JobContext(Generic[StateT]):
    """Passed as the first argument to every handler.

    Every write it makes is fenced by the attempt's lease: once the job was rescued by
    another worker, progress from this attempt is ignored. ``JobContext[State]`` types
    :attr:`state`, the value the registry's lifespan yields.
    """

    # One context lives per running job (tens of thousands at once in a wide pool): slots
    # instead of an attribute dict; ``__dict__`` keeps room for what subclasses, hooks or
    # handlers add, made only when something is.
    __slots__ = (
        "__dict__", "_client", "_clock", "_job", "_lease_seconds", "_log", "_owner",
        "_rate_limits", "_running", "_state", "_storage",
    )  # fmt: skip

    def __init__(
        self,
        job: ClaimedJob,
        *,
        client: Client,
        storage: StorageHandle,
        running: RunningJobs,
        clock: Clock,
        owner: str,
        lease_seconds: float,
        state: Any = NO_STATE,
        rate_limits: Mapping[str, RateLimit] | None = None,
    ) -> None:
        self._job = job
        self._rate_limits = _NO_LIMITS if rate_limits is None else rate_limits
        self._state = state
        self._client = client
        self._storage = storage
        self._running = running
        self._clock = clock
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger (``trioforge.job``) whose records carry the job's fields in ``extra``
        (its id, name, queue, attempt and max_attempts)."""
        if self._log is None:  # made on first use: most handlers never log
            self._log = logging.LoggerAdapter(_log, job_fields(self._job))
        return self._log

    @log.setter
    def log(self, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self._log = log

    @property
    def state(self) -> StateT:
        """What the registry's lifespan yielded (``@registry.lifespan``): the resources
        handlers share, opened once per runtime."""
        if self._state is NO_STATE:
            raise InvalidStateError(
                f"job {self._job.name!r}: ctx.state is the value of the registry's lifespan, "
                "and this registry has none; declare one with @registry.lifespan"
            )
        return cast(StateT, self._state)

    @property
    def job_id(self) -> int:
        """This job's id."""
        return self._job.id

    @property
    def name(self) -> str:
        """The job's registered name."""
        return self._job.name

    @property
    def queue(self) -> str:
        """The queue the job was claimed from."""
        return self._job.queue

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, ..."""
        return self._job.attempt

    @property
    def max_attempts(self) -> int:
        """How many attempts the job gets in all (from the enqueue, its ``Retry`` or its
        queue's policy)."""
        return self._job.max_attempts

    @property
    def is_retry(self) -> bool:
        """Whether this attempt follows a failed one (``attempt > 1``)."""
        return self._job.attempt > 1

    async def progress(self, pct: float, message: str | None = None) -> None:
        """Record progress (0-100) and an optional message, visible through ``get``. Counts
        as a heartbeat for the job's ``heartbeat_timeout``.

        Best effort: while the database is unreachable the update is dropped with a
        warning (the next one replaces it) rather than failing the attempt.
        Cancellation: cancelling the caller may still let the write land.
        """
        if not 0 <= pct <= 100:
            raise InvalidArgumentError(f"progress must be between 0 and 100, got {pct}")
        self._running.beat(self._job.id, self._job.lease)
        op = ops.Progress(self._job.id, self._job.lease, float(pct), message)
        try:
            await self._storage.call(op)
        except DatabaseUnavailableError as exc:
            self.log.warning("progress %.0f%% not recorded: %s", pct, exc)

    async def heartbeat(self) -> None:
        """Renew this attempt's lease now (the runtime also does so periodically). If the
        job was cancelled elsewhere or its lease was lost, the handler is cancelled. Also
        restarts the job's ``heartbeat_timeout`` window.

        While the database is unreachable this only warns: the runtime's own heartbeat
        keeps retrying, and a blip must not fail the attempt.
        """
        self._running.beat(self._job.id, self._job.lease)
        leases = ((self._job.id, self._job.lease),)
        until = self._clock.now() + self._lease_seconds
        try:
            renewal: RenewResult = await self._storage.call(ops.Renew(self._owner, leases, until))
        except DatabaseUnavailableError as exc:
            self.log.warning("lease not renewed: %s", exc)
            return
        self._running.renewed(leases, until, renewal)

    async def acquire(self, name: str, *, key: object = None) -> None:
        """Take a token from rate limit ``name``'s bucket, the one claims take from across
        every process (``key``: the bucket of that key, as a ``RateLimit(key=...)`` job's
        payload would pick), waiting until it holds one.

        ``name`` must be declared by a job of the registry or a queue of the runtime.
        Cancellation: cancelling the caller while it waits takes nothing; cancelled while
        storage is answering, the token may be taken all the same (one fewer call).
        """
        limit = self._rate_limit(name)
        bucket = name if key is None else f"{name}:{key}"
        while True:
            wait_until = await self._storage.call(ops.TakeToken(bucket, limit))
            if wait_until is None:
                return
            # Another process may take that token first: then ask again.
            await trio.sleep_until(self._clock.deadline(wait_until))

    @asynccontextmanager
    async def limit(self, name: str, *, key: object = None) -> AsyncIterator[None]:
        """``async with ctx.limit("stripe"):`` runs its body once :meth:`acquire` took a
        token (a token is spent on entry; leaving gives nothing back)."""
        await self.acquire(name, key=key)
        yield

    async def drain(self, name: str, retry_after: Duration, *, key: object = None) -> None:
        """Empty rate limit ``name``'s bucket for ``retry_after`` (seconds or a timedelta;
        the upstream answered 429): no process takes a token from it (no ``acquire``, no
        claim of a job limited by it) before then; then it refills at its rate."""
        limit = self._rate_limit(name)
        delay = seconds(retry_after, "retry_after", error=InvalidArgumentError, positive=True)
        bucket = name if key is None else f"{name}:{key}"
        until = self._clock.now() + delay
        await self._storage.call(ops.DrainBucket(bucket, limit, until))

    def _rate_limit(self, name: str) -> RateLimit:
        limit = self._rate_limits.get(name)
        if limit is None:
            declared = ", ".join(sorted(self._rate_limits)) or "none"
            raise ConfigurationError(
                f"job {self._job.name!r}: no rate limit {name!r} is declared "
                f"(declared: {declared}); declare it with rate_limit=trioforge.RateLimit(...)"
            )
        return limit

    @overload
    async def enqueue(
        self, job: JobDefinition[None, _R], payload: None = None, **options: Any
    ) -> Job[_R]: ...
    @overload
    async def enqueue(self, job: JobDefinition[_P, _R], payload: _P, **options: Any) -> Job[_R]: ...
    @overload
    async def enqueue(self, job: str, payload: Any = None, **options: Any) -> Job[Any]: ...
    async def enqueue(self, job: JobRef, payload: Any = None, **options: Any) -> Job[Any]:
        """Enqueue a follow-up job; same arguments (and typing) as ``Client.enqueue``."""
        return await self._client.enqueue(job, payload, **options)


class CronContext(JobContext[StateT]):
    """Passed to cron handlers: a :class:`JobContext` plus the tick being run."""

    def __init__(self, job: ClaimedJob, *, scheduled_at: dt.datetime, **services: Any) -> None:
        super().__init__(job, **services)
        #: The tick this run is for, aware, in the schedule's time zone.
        self.scheduled_at = scheduled_at
        #: Names this run: the schedule and its tick.
        self.run_id = f"{job.name}@{scheduled_at.isoformat()}"
        self.log = logging.LoggerAdapter(_log, job_fields(job) | {"run_id": self.run_id})
