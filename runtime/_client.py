"""The client: enqueue here, with reads and operator tools inherited (``_reads``,
``_operator``); shared by clients and runtimes."""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

from trioforge._core.clock import Clock
from trioforge._core.durations import Duration
from trioforge._core.errors import (
    ConfigurationError,
    InvalidArgumentError,
    InvalidStateError,
    TrioforgeError,
)
from trioforge._core.states import PriorityLike
from trioforge._job import Job
from trioforge._new_jobs import DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_PAYLOAD_BYTES, new_jobs
from trioforge._operator import ClientOperations
from trioforge._policy import Queue
from trioforge._reads import JobId, check_job_id
from trioforge._registry import JobDefinition, Registry
from trioforge.actors import Finished, LiveFeed, RunningJobs, StorageHandle
from trioforge.storage import Enqueued, NewJob, backend_for_connection, ops

if TYPE_CHECKING:
    from trioforge.metrics import Metrics
    from trioforge.otel import Tracing

__all__ = [
    "DEFAULT_MAX_KEY_BYTES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "Client",
    "JobId",
    "JobRef",
]

#: A job given by its definition (from ``@registry.job``) or by name (needs a registry).
JobRef: TypeAlias = JobDefinition[Any, Any] | str

_P = TypeVar("_P")
_R = TypeVar("_R")


class Client(ClientOperations):
    """Enqueue, inspect and operate on jobs. Obtained from ``open_client`` or
    ``open_runtime`` (a runtime is a client too); usable only inside that block.

    Every method is a blocking call into storage; cancelling one is safe (the storage
    operation may still complete, and nothing is half-applied).
    """

    def __init__(
        self,
        storage: StorageHandle,
        clock: Clock,
        *,
        registry: Registry | None,
        finished: Finished,
        feed: LiveFeed,
        running: RunningJobs | None = None,
        wake: Callable[[str, float], None] | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        policies: Mapping[str, Queue] | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        for name, limit in (
            ("max_payload_bytes", max_payload_bytes),
            ("max_key_bytes", max_key_bytes),
        ):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {limit!r}")
        self._max_payload_bytes = max_payload_bytes
        self._max_key_bytes = max_key_bytes
        self._storage = storage
        self._clock = clock
        self._registry = registry
        self._finished = finished
        self._feed = feed
        self._running = running
        self._wake = wake
        self._policies = dict(policies or {})
        self._metrics = metrics
        self._tracing = tracing

    @property
    def tracing(self) -> Tracing | None:
        """The :class:`trioforge.otel.Tracing` given to ``open_client`` / ``open_runtime``
        (None: not tracing)."""
        return self._tracing

    # --- enqueue ---------------------------------------------------------------------

    def _definition(self, job: JobRef) -> JobDefinition[Any, Any]:
        if isinstance(job, JobDefinition):
            # New runs of a workflow take its highest version registered here.
            return job if self._registry is None else self._registry.latest(job)
        if isinstance(job, str):
            if self._registry is None:
                raise TrioforgeError(
                    f"cannot enqueue job {job!r} by name without a registry; pass the job "
                    "definition itself, or open the client with registry=..."
                )
            return self._registry.get(job)
        raise InvalidArgumentError(f"expected a job definition or a job name, got {job!r}")

    def _new_jobs(
        self,
        definition: JobDefinition[Any, Any],
        payloads: Iterable[Any],
        *,
        delay: Duration | None,
        run_at: float | dt.datetime | None,
        priority: PriorityLike | None,
        queue: str | None,
        idempotency_keys: Sequence[str | None] | None,
        max_attempts: int | None = None,
        timeout: Duration | None = None,
        requires: Iterable[str] | None = None,
        unique_for: Duration | None = None,
    ) -> builtins.list[NewJob]:
        """:func:`~trioforge._new_jobs.new_jobs` with this client's clock, limits, queue
        policies and trace context (the enqueue span's, or a workflow attempt's)."""
        return new_jobs(
            definition, payloads, now=self._clock.now(), delay=delay, run_at=run_at,
            priority=priority, queue=queue, idempotency_keys=idempotency_keys,
            max_attempts=max_attempts, timeout=timeout, requires=requires,
            unique_for=unique_for, policies=self._policies,
            trace_context=None if self._tracing is None else self._tracing.trace_context(),
            max_payload_bytes=self._max_payload_bytes, max_key_bytes=self._max_key_bytes,
        )  # fmt: skip

    async def _enqueue_in(self, connection: object, op: ops.Enqueue) -> builtins.list[Enqueued]:
        """Run the storage layer's own enqueue on the caller's connection."""
        backend = backend_for_connection(connection)
        if backend.enqueue_in_asyncio:
            return await self._on_asyncio(backend.enqueue_in, connection, op, self._clock.now())
        return await backend.enqueue_in(connection, op, self._clock.now())

    async def _on_asyncio(
        self, fn: Callable[..., Awaitable[builtins.list[Enqueued]]], *args: Any
    ) -> builtins.list[Enqueued]:
        """Await an asyncio coroutine function (trio-asyncio's loop must be running)."""
        import trio_asyncio

        if trio_asyncio.current_loop.get() is None:
            raise InvalidStateError(
                "enqueue(connection=<asyncpg connection>) from trio needs the trio-asyncio "
                "loop that connection lives in; call it inside trio_asyncio.open_loop(), or "
                "use trioforge.aio.open_client from asyncio"
            )
        result: builtins.list[Enqueued] = await trio_asyncio.aio_as_trio(fn)(*args)
        return result

    async def _insert(
        self, jobs: builtins.list[NewJob], connection: object = None
    ) -> builtins.list[int]:
        if not jobs:
            return []
        if connection is not None:
            # The caller's transaction: the jobs exist once it commits (PostgreSQL sends
            # the wake-up notice then); nothing here to wake before that.
            stored = await self._enqueue_in(connection, ops.Enqueue(tuple(jobs)))
            return [e.id for e in stored]
        enqueued = await self._storage.call(ops.Enqueue(tuple(jobs)))
        if self._metrics is not None:
            for job, done in zip(jobs, enqueued, strict=True):
                if done.created:
                    self._metrics.enqueued(job.queue, job.name)
        if self._wake is not None:
            for queue, when in {
                j.queue: min(x.run_at for x in jobs if x.queue == j.queue) for j in jobs
            }.items():
                self._wake(queue, when)
        return [e.id for e in enqueued]

    async def _store(
        self,
        definition: JobDefinition[Any, _R],
        new_jobs: Callable[[], builtins.list[NewJob]],
        connection: object,
    ) -> builtins.list[Job[_R]]:
        """Check and store the jobs, inside an enqueue span when tracing (built in it, so
        they carry its context)."""
        if self._tracing is None:
            ids = await self._insert(new_jobs(), connection)
        else:
            with self._tracing.enqueue_span(definition.name) as span:
                jobs = new_jobs()
                ids = await self._insert(jobs, connection)
                self._tracing.enqueued(span, jobs, ids)
        return [Job(self, definition, job_id) for job_id in ids]

    @overload
    async def enqueue(
        self,
        job: JobDefinition[None, _R],
        payload: None = None,
        *,
        delay: Duration | None = None,
        run_at: float | dt.datetime | None = None,
        priority: PriorityLike | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109
        requires: Iterable[str] | None = None,
        unique_for: Duration | None = None,
        connection: object = None,
    ) -> Job[_R]: ...
    @overload
    async def enqueue(
        self,
        job: JobDefinition[_P, _R],
        payload: _P,
        *,
        delay: Duration | None = None,
        run_at: float | dt.datetime | None = None,
        priority: PriorityLike | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109
        requires: Iterable[str] | None = None,
        unique_for: Duration | None = None,
        connection: object = None,
    ) -> Job[_R]: ...
    @overload
    async def enqueue(
        self,
        job: str,
        payload: Any = None,
        *,
        delay: Duration | None = None,
        run_at: float | dt.datetime | None = None,
        priority: PriorityLike | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109
        requires: Iterable[str] | None = None,
        unique_for: Duration | None = None,
        connection: object = None,
    ) -> Job[Any]: ...
    async def enqueue(
        self,
        job: JobRef,
        payload: Any = None,
        *,
        delay: Duration | None = None,
        run_at: float | dt.datetime | None = None,
        priority: PriorityLike | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109 (the job's, not this call's)
        requires: Iterable[str] | None = None,
        unique_for: Duration | None = None,
        connection: object = None,
    ) -> Job[Any]:
        """Store one job and return its :class:`~trioforge.Job` handle (``.id``, ``await
        job.result()``). Typed by the definition: the payload must be its ``P``, the
        handle is a ``Job[R]``; a job named by a string is typed ``Any``.

        The payload is checked against the job's declared type first: a mismatch raises
        :class:`~trioforge.PayloadError` and stores nothing. With ``idempotency_key``, while
        an unfinished job holds the same key (or, with ``unique_for``, one finished that
        recently), its id is returned and nothing new is stored; a job declared with an
        ``idempotency_key`` function derives the key from the payload when none is given.

        ``connection``: the caller's asyncpg connection (or a sqlite3 connection to the
        same file), used in whatever transaction it is in: the job exists only if that
        transaction commits (PostgreSQL's wake-up notice goes out at commit; SQLite's
        workers find it at their next poll).
        ``max_attempts`` and ``timeout`` (seconds or a timedelta, as ``delay`` and
        ``unique_for``) override the job's (and its queue's) for this job only, as
        ``requires`` (capabilities the claiming process must have) overrides the job's.
        Cancelling the call is safe: the job is then stored or not, never half-stored.

        Args:
            job: The job's definition (from ``@registry.job``), or its registered name.
            payload: The payload, checked against the job's declared type; omitted for a
                job that takes none.
            delay: Run no sooner than this long from now (seconds or a timedelta).
            run_at: Run no sooner than this time: an aware datetime or a Unix timestamp.
            priority: ``"low"``, ``"normal"``, ``"high"`` or ``"critical"``; by default
                the job's.
            queue: The queue to put the job on, instead of its declared one.
            idempotency_key: While an unfinished job holds this key, that job is returned
                and nothing is stored.
            max_attempts: Attempts for this job only, instead of its ``Retry``'s.
            timeout: Each attempt's limit for this job only (the job's, not this call's).
            requires: Capabilities the claiming process must have, instead of the job's.
            unique_for: How long the key keeps blocking after its job finished.
            connection: The caller's asyncpg connection (or sqlite3 connection to the
                same file), whose transaction the job joins.

        Returns:
            The job's handle: a ``Job[R]`` for a definition, a ``Job[Any]`` for a name.

        Raises:
            PayloadError: The payload does not fit the job's type, or is over
                ``max_payload_bytes``. Nothing is stored.
            UnknownJobError: No job of that name is registered.
            InvalidArgumentError: An argument out of range (a key over ``max_key_bytes``,
                a negative delay, a number no column holds). Nothing is stored.
        """
        definition = self._definition(job)
        jobs = partial(
            self._new_jobs, definition, [payload], delay=delay, run_at=run_at,
            priority=priority, queue=queue, idempotency_keys=[idempotency_key],
            max_attempts=max_attempts, timeout=timeout, requires=requires,
            unique_for=unique_for,
        )  # fmt: skip
        return (await self._store(definition, jobs, connection))[0]

    @overload
    async def enqueue_many(
        self,
        job: JobDefinition[_P, _R],
        payloads: Iterable[_P],
        *,
        delay: Duration | None = None,
        run_at: float | dt.datetime | None = None,
        priority: PriorityLike | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109
        requires: Iterable[str] | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
        unique_for: Duration | None = None,
        connection: object = None,
    ) -> builtins.list[Job[_R]]: ...
    @overload
    async def enqueue_many(
        self,
        job: str,
        payloads: Iterable[Any],
        *,
        delay: Duration | None = None,
        run_at: float | dt.datetime | None = None,
        priority: PriorityLike | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109
        requires: Iterable[str] | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
        unique_for: Duration | None = None,
        connection: object = None,
    ) -> builtins.list[Job[Any]]: ...
    async def enqueue_many(
        self,
        job: JobRef,
        payloads: Iterable[Any],
        *,
        delay: Duration | None = None,
        run_at: float | dt.datetime | None = None,
        priority: PriorityLike | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109 (the job's, not this call's)
        requires: Iterable[str] | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
        unique_for: Duration | None = None,
        connection: object = None,
    ) -> builtins.list[Job[Any]]:
        """Store many jobs of one kind in one transaction; all or none are stored. Returns
        their handles, in order (each payload a ``P``, as for :meth:`enqueue`).

        ``idempotency_keys``: one per payload (None: that payload has none, or the job's
        key function gives it one); a payload whose key is held gets the holder's handle,
        so the handles returned may repeat."""
        definition = self._definition(job)
        jobs = partial(
            self._new_jobs, definition, payloads, delay=delay, run_at=run_at,
            priority=priority, queue=queue, idempotency_keys=idempotency_keys,
            max_attempts=max_attempts, timeout=timeout, requires=requires,
            unique_for=unique_for,
        )  # fmt: skip
        return await self._store(definition, jobs, connection)

    def job(self, definition: JobDefinition[Any, _R], job_id: int) -> Job[_R]:
        """The typed handle on stored job ``job_id`` of ``definition`` (say, from an id a
        web request carries); nothing is read until it is used, and ``result()`` checks
        that the job is one of ``definition``'s."""
        if not isinstance(definition, JobDefinition):
            raise InvalidArgumentError(
                f"client.job takes a job definition (from @registry.job), got {definition!r}"
            )
        return Job(self, definition, check_job_id(job_id))
