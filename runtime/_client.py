"""The enqueue / inspect / operate half of the API, shared by clients and runtimes."""

from __future__ import annotations

import builtins
import datetime as dt
import json
import math
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

import attrs
import trio

from trioforge._codec import DEFAULT_CODEC, by_value, encode_payload
from trioforge._core import durations as _durations
from trioforge._core.clock import Clock
from trioforge._core.durations import Duration, optional_seconds, seconds
from trioforge._core.errors import (
    ConfigurationError,
    InvalidArgumentError,
    InvalidStateError,
    JobNotFoundError,
    PayloadError,
    TrioforgeError,
)
from trioforge._core.flow import ConcurrencyLimit, RateLimit
from trioforge._core.states import MAX_STORED_INT, JobState, PriorityLike, parse_priority
from trioforge._core.text import check_storable
from trioforge._job import Job
from trioforge._policy import Queue
from trioforge._registry import JobDefinition, Registry, check_capabilities
from trioforge._unserved import unserved as unserved_names
from trioforge._watch import JobWatch, RunWatch
from trioforge._workflow_info import StepInfo, WorkflowInfo, step_info, workflow_info
from trioforge.actors import Finished, LiveFeed, RunningJobs, StopReason, StorageHandle
from trioforge.storage import (
    AttemptRecord,
    CancelResult,
    CronState,
    Enqueued,
    JobInfo,
    NewJob,
    ProcessInfo,
    StepRecord,
    WorkflowRecord,
    ops,
)
from trioforge.storage._records import not_a_run

if TYPE_CHECKING:
    from trioforge.metrics import Metrics
    from trioforge.otel import Tracing

__all__ = [
    "DEFAULT_MAX_KEY_BYTES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "Client",
    "JobId",
    "JobRef",
    "Stats",
]

#: Largest payload accepted by default, as JSON text (it is stored in every job row).
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
#: Longest idempotency key accepted by default, in UTF-8 bytes (it is indexed).
DEFAULT_MAX_KEY_BYTES = 256

#: The span of times a job may be scheduled at, in epoch seconds: what a datetime can show
#: (years 1 to 9999), so every page and command can print it.
_RUN_AT_RANGE = (
    dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp(),
    dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp(),
)

#: A job given by its definition (from ``@registry.job``) or by name (needs a registry).
JobRef: TypeAlias = JobDefinition[Any, Any] | str
#: A stored job: its id, or the :class:`~trioforge.Job` handle ``enqueue`` returned.
JobId: TypeAlias = int | Job[Any]

_P = TypeVar("_P")
_R = TypeVar("_R")


@attrs.frozen
class Stats:
    """Job counts per queue and state, as stored."""

    by_queue: Mapping[str, Mapping[JobState, int]]

    def count(self, state: JobState | str, queue: str | None = None) -> int:
        state = JobState(state)
        queues = [queue] if queue is not None else list(self.by_queue)
        return sum(self.by_queue.get(q, {}).get(state, 0) for q in queues)


@attrs.frozen
class QueueInfo:
    """One queue as stored: whether its claims are paused, and its job counts by state."""

    name: str
    paused: bool
    counts: Mapping[JobState, int]
    #: Names of its pending jobs that no live process runs (see ``Client.unserved``).
    unserved: tuple[str, ...] = ()


def _as_handler_sees(definition: JobDefinition[Any, Any], text: str) -> Any:
    """The payload as the handler will see it (``text`` was just encoded from it)."""
    if not definition.takes_payload:
        return None
    what = f"payload of job {definition.name!r}"
    return definition.codec.decode(definition.payload_type, text, what)


def _derived_key(definition: JobDefinition[Any, Any], text: str) -> str | None:
    """The idempotency key the job's key function gives a payload (None: it gave none)."""
    assert definition.idempotency_key is not None
    payload = _as_handler_sees(definition, text)
    try:
        key = definition.idempotency_key(payload)
    except Exception as exc:
        raise PayloadError(
            f"job {definition.name!r}: its idempotency_key function failed on this payload "
            f"({type(exc).__name__}: {exc}); fix the payload or the function"
        ) from exc
    return None if key is None else str(key)


def _limit_key(
    definition: JobDefinition[Any, Any], limit: RateLimit | ConcurrencyLimit | None, text: str
) -> str | None:
    """The rate bucket or concurrency count a job whose payload is ``text`` belongs to (a
    key function sees the payload as the handler will)."""
    if limit is None:
        return None
    if limit.key is None:
        return limit.name
    payload = _as_handler_sees(definition, text)
    try:
        key = limit.key_for(payload)
    except Exception as exc:
        raise PayloadError(
            f"job {definition.name!r}: the key function of limit {limit.name!r} failed on "
            f"this payload ({type(exc).__name__}: {exc}); fix the payload or the key"
        ) from exc
    return check_storable(key, f"job {definition.name!r}: limit key", PayloadError)


def _run_at(now: float, delay: Duration | None, run_at: float | dt.datetime | None) -> float:
    if delay is not None and run_at is not None:
        raise InvalidArgumentError("give either delay= or run_at=, not both")
    if delay is not None:
        return now + seconds(delay, "delay", error=InvalidArgumentError)
    if run_at is not None:
        if isinstance(run_at, dt.datetime):
            if run_at.tzinfo is None:
                raise InvalidArgumentError(
                    "run_at must be timezone-aware; attach a tzinfo (e.g. datetime.timezone.utc)"
                )
            return run_at.timestamp()
        if not math.isfinite(run_at):
            raise InvalidArgumentError(f"run_at must be finite, got {run_at!r}")
        return float(run_at)
    return now


class Client:
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
        if queue is not None:
            _check_queue(queue)
        if max_attempts is not None and (
            isinstance(max_attempts, bool)
            or not isinstance(max_attempts, int)
            or not 1 <= max_attempts <= MAX_STORED_INT
        ):
            raise InvalidArgumentError(
                f"max_attempts must be an int from 1 (no retries) to {MAX_STORED_INT}, got "
                f"{max_attempts!r}"
            )
        limit = optional_seconds(timeout, "timeout", error=InvalidArgumentError, positive=True)
        payloads = builtins.list(payloads)
        if idempotency_keys is not None and len(idempotency_keys) != len(payloads):
            raise InvalidArgumentError(
                f"got {len(idempotency_keys)} idempotency keys for {len(payloads)} payloads; "
                "give one per payload (None where a payload has none)"
            )
        if unique_for is None:
            unique = definition.unique_for
        else:
            unique = seconds(unique_for, "unique_for", error=InvalidArgumentError)
        needs = (
            definition.requires
            if requires is None
            else check_capabilities(requires, "requires", InvalidArgumentError)
        )
        when = _run_at(self._clock.now(), delay, run_at)
        if not _RUN_AT_RANGE[0] <= when <= _RUN_AT_RANGE[1]:
            raise InvalidArgumentError(
                f"the job would run at {when!r} (epoch seconds), outside the years 1 to 9999; "
                "give a delay or run_at within them"
            )
        try:
            level = definition.priority if priority is None else parse_priority(priority)
        except ConfigurationError as exc:
            raise InvalidArgumentError(str(exc)) from None
        queue = queue or definition.queue
        requires_sorted = tuple(sorted(needs))
        # The enqueue span's (or, from a workflow run, its attempt's): one per call.
        trace_context = None if self._tracing is None else self._tracing.trace_context()
        if max_attempts is None:
            max_attempts = definition.retry_in(self._policies.get(queue)).max_attempts
        jobs = []
        for i, payload in enumerate(payloads):
            text = self._encode(definition, payload)
            key = None if idempotency_keys is None else idempotency_keys[i]
            if key is None and definition.idempotency_key is not None:
                key = _derived_key(definition, text)
            self._check_key(key)
            jobs.append(
                NewJob(
                    name=definition.name,
                    queue=queue,
                    payload=text,
                    priority=level,
                    run_at=when,
                    max_attempts=max_attempts,
                    idempotency_key=key,
                    timeout=limit,
                    requires=requires_sorted,
                    rate_key=_limit_key(definition, definition.rate_limit, text),
                    concurrency_key=_limit_key(definition, definition.concurrency, text),
                    workflow=definition.workflow is not None,
                    unique_for=unique,
                    trace_context=trace_context,
                )
            )
        return jobs

    def _check_key(self, key: object) -> None:
        if key is None:
            return
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"idempotency_key must be a non-empty string, got {key!r}")
        check_storable(key, "idempotency_key", InvalidArgumentError)
        size = len(key.encode())
        if size > self._max_key_bytes:
            raise InvalidArgumentError(
                f"idempotency_key is {size} bytes of UTF-8, over the limit of "
                f"{self._max_key_bytes}; use a shorter key (a hash of it, say), or raise "
                "the limit with max_key_bytes= on open_runtime / open_client"
            )

    async def _enqueue_in(self, connection: object, op: ops.Enqueue) -> builtins.list[Enqueued]:
        """Run the storage layer's own enqueue on the caller's connection."""
        if isinstance(connection, sqlite3.Connection):
            from trioforge.storage.sqlite import SQLiteBackend

            return SQLiteBackend.enqueue_in(connection, op, self._clock.now())
        if _is_asyncpg(connection):
            from trioforge.storage.postgres import PostgresBackend

            return await self._on_asyncio(
                PostgresBackend.enqueue_in, connection, op, self._clock.now()
            )
        raise InvalidArgumentError(
            f"connection must be an asyncpg connection or a sqlite3 connection, got "
            f"{type(connection).__name__}"
        )

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

    def _encode(self, definition: JobDefinition[Any, Any], payload: Any) -> str:
        text = encode_payload(definition.codec, definition.name, definition.payload_type, payload)
        size = len(text.encode())
        if size > self._max_payload_bytes:
            raise PayloadError(
                f"payload for job {definition.name!r} is {size} bytes of JSON, over the limit "
                f"of {self._max_payload_bytes}; store large data elsewhere and pass a "
                "reference, or raise the limit with max_payload_bytes= on open_runtime / "
                "open_client"
            )
        return text

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
        enqueued: builtins.list[Enqueued] = await self._storage.call(ops.Enqueue(tuple(jobs)))
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
        return Job(self, definition, _check_job_id(job_id))

    async def _wait_within(self, job_id: int, limit: float | None) -> JobInfo | None:
        """The job once finished, or None when ``limit`` seconds passed first."""
        with trio.move_on_after(math.inf if limit is None else limit):
            return await self.wait(job_id)
        return None

    def _result_of(self, definition: JobDefinition[Any, _R], info: JobInfo) -> _R:
        """A completed job's result, decoded by its codec to its handler's return type
        (storage hands results over as JSON values: their text is decoded again)."""
        what = f"result of job {info.id} ({info.name})"
        text = json.dumps(info.result, allow_nan=False)
        value: _R = definition.codec.decode(definition.result_type, text, what)
        return value

    # --- inspect ----------------------------------------------------------------------

    async def get(self, job_id: JobId) -> JobInfo:
        """The job's current snapshot; raises JobNotFoundError for an unknown id."""
        job_id = _check_job_id(job_id)
        info: JobInfo | None = await self._storage.call(ops.Get(job_id))
        if info is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return info

    async def attempts(self, job_id: JobId) -> builtins.list[AttemptRecord]:
        """Every error the job's attempts left, oldest first (the current ``error`` last):
        each attempt's, not only the last. Raises JobNotFoundError for an unknown id."""
        job_id = _check_job_id(job_id)
        await self.get(job_id)
        found: builtins.list[AttemptRecord] = await self._storage.call(ops.Attempts(job_id))
        return found

    async def wait(self, job_id: JobId) -> JobInfo:
        """Block until the job is terminal (completed, dead or cancelled) and return it.

        Wakes within milliseconds of the outcome being recorded by any process (pushed by
        storage, see :meth:`watch`). No timeout of its own: wrap it in ``trio.fail_after``.
        Cancellation is safe and changes nothing.
        """
        async with self.watch(job_id) as updates:
            async for info in updates:
                if info.is_terminal:
                    return info
        raise AssertionError("a watch ends only after a terminal snapshot")  # pragma: no cover

    def watch(self, job_id: JobId) -> JobWatch:
        """``async for info in client.watch(job_id)``: the job's snapshot now, then at each
        change of status, attempt, progress or progress message, until it is terminal.

        Changes are pushed by storage (PostgreSQL NOTIFY on outcomes, progress and operator
        actions; SQLite's commit counter, read every few milliseconds; in-process on
        memory); only watched jobs are read, several watchers of one job share one read.
        """
        return JobWatch(self._feed, _check_job_id(job_id))

    def watch_workflow(self, run_id: JobId) -> RunWatch:
        """``async for view in client.watch_workflow(run_id)``: the run's
        :class:`WorkflowInfo` now, then whenever the run or its record changes (a step
        recorded, a sleep begun, a signal sent, an undo), until it is terminal. Pushed by
        storage like :meth:`watch`, and read at most every 0.1 s. Cancellation: waiting
        for the next view can be cancelled at any time; nothing is lost."""
        return RunWatch(self._feed, _check_job_id(run_id), self.workflow)

    async def workflow(self, run_id: JobId) -> WorkflowInfo:
        """A workflow run's status, version and record (each step's status, attempts,
        times, result or error); raises JobNotFoundError, or InvalidArgumentError for a
        job that is not a workflow run."""
        job = await self.get(run_id)
        record: WorkflowRecord | None = await self._storage.call(ops.ReadWorkflow(job.id))
        if record is None:
            raise JobNotFoundError(f"no job with id {run_id}")
        if not record.workflow:
            raise InvalidArgumentError(not_a_run(job.id, job.name))
        return workflow_info(job, record)

    async def signal(self, run_id: JobId, name: str, payload: Any = True) -> int:
        """Send signal ``name`` to workflow run ``run_id``: kept until a
        ``wait_for_signal(name)`` of the run takes it, and the run is woken. ``payload`` is
        any JSON value or attrs instance (not None: that is what a timed-out wait returns).
        Returns the signal's id. Raises JobNotFoundError, or InvalidStateError once the run
        finished. Cancellation: the signal may still be stored."""
        run_id = _check_job_id(run_id)
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError("a signal name must be a non-empty string")
        check_storable(name, "signal name", InvalidArgumentError)
        if payload is None:
            raise InvalidArgumentError(
                "a signal's payload cannot be None (a timed-out wait returns None); send "
                "True or a value"
            )
        codec = DEFAULT_CODEC if self._registry is None else self._registry.codec
        text = codec.encode(by_value(Any, payload), payload, f"payload of signal {name!r}")
        signal_id: int = await self._storage.call(ops.SendSignal(run_id, name, text))
        if self._wake is not None:  # a run waiting in this process is due now
            info = await self.get(run_id)
            self._wake(info.queue, info.run_at)
        return signal_id

    async def list(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> builtins.list[JobInfo]:
        """Jobs matching every filter given, newest first. ``before=id`` gives the page
        after the one whose last job is ``id`` (ids below it), so deep pages stay cheap."""
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
            raise InvalidArgumentError(f"before must be a job id (an int), got {before!r}")
        _check_filters(queue=queue, name=name)
        try:
            state = None if status is None else JobState(status)
        except ValueError:
            names = ", ".join(s.value for s in JobState)
            raise InvalidArgumentError(f"unknown status {status!r}; use one of {names}") from None
        result: builtins.list[JobInfo] = await self._storage.call(
            ops.ListJobs(state, queue, name, limit, before)
        )
        return result

    async def runs(
        self,
        *,
        status: JobState | str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> builtins.list[JobInfo]:
        """Workflow runs matching every filter given, newest first; ``name`` is a
        workflow's name and matches its runs of every version (their job names are
        ``name@vN``), or one version's job name (``name@v2``), found by index.
        ``before=id`` gives the page after the one whose last run is ``id``. See
        :meth:`workflow` for a run's record."""
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
            raise InvalidArgumentError(f"before must be a run id (an int), got {before!r}")
        _check_filters(name=name)
        state = None if status is None else _state(status)
        version = name if name is not None and "@" in name else None
        workflow = None if version is not None else name
        result: builtins.list[JobInfo] = await self._storage.call(
            ops.ListJobs(state, None, version, limit, before, runs_only=True, workflow=workflow)
        )
        return result

    async def current_steps(self, run_ids: Iterable[JobId]) -> dict[int, StepInfo]:
        """Each run's newest record entry (its current or last step), for the runs of
        ``run_ids`` that have one: one read for a whole page of runs."""
        ids = tuple(_check_job_id(i) for i in run_ids)
        if not ids:
            return {}
        found: dict[int, StepRecord] = await self._storage.call(ops.LatestSteps(ids))
        return {run_id: step_info(entry) for run_id, entry in found.items()}

    async def cron_states(self) -> dict[str, CronState]:
        """The durable state of every cron schedule (last tick handled, runs skipped)."""
        states: dict[str, CronState] = await self._storage.call(ops.CronStates())
        return states

    async def stats(self) -> Stats:
        """Job counts per queue and state, across every process using this database (kept
        as jobs change, so reading them costs the same at any number of jobs)."""
        counts: dict[str, dict[JobState, int]] = await self._storage.call(ops.Stats())
        return Stats(counts)

    async def throughput(self, seconds: Duration) -> Stats:
        """Per queue, the stored jobs that reached each terminal state in the last
        ``seconds``, counted in whole seconds (from the start of the second the window
        begins in) from counts kept per second, however many jobs the window holds."""
        window = _durations.seconds(seconds, "seconds", error=InvalidArgumentError)
        since = self._clock.now() - window
        counts: dict[str, dict[JobState, int]] = await self._storage.call(ops.Throughput(since))
        return Stats(counts)

    async def throughput_per_minute(
        self, minutes: int = 60
    ) -> dict[str, dict[JobState, dict[int, int]]]:
        """Per queue and terminal state, the jobs that finished in each of the last
        ``minutes`` clock minutes (this one included), keyed by the minute's first second
        (epoch, a multiple of 60); minutes with none are left out. Read from the same
        per-second counts as :meth:`throughput`: a chart's bars."""
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
            raise InvalidArgumentError(f"minutes must be an int >= 1, got {minutes!r}")
        now = math.floor(self._clock.now())
        since = now - now % 60 - (minutes - 1) * 60
        found: dict[str, dict[JobState, dict[int, int]]] = await self._storage.call(
            ops.ThroughputSeries(since, 60)
        )
        return found

    async def processes(self) -> builtins.list[ProcessInfo]:
        """The runtimes heartbeating on this database, oldest first."""
        found: builtins.list[ProcessInfo] = await self._storage.call(ops.Processes())
        return found

    # --- operate ----------------------------------------------------------------------

    async def cancel(self, job_id: JobId) -> bool:
        """Cancel a job. Pending: it never runs. Running here: its cancel scope fires before
        this call touches storage. Running in another process: that process stops it at its
        next heartbeat. Ends ``cancelled``, never retried. False if it had already finished.
        """
        job_id = _check_job_id(job_id)
        stopped_here = self._running is not None and self._running.stop(job_id, StopReason.USER)
        result: CancelResult = await self._storage.call(ops.Cancel(job_id))
        if result is CancelResult.CANCELLED:
            self._finished.notify(job_id)
        elif result is CancelResult.REQUESTED and self._running is not None:
            self._running.cancel_running(job_id)
            if self._wake is not None and not stopped_here:  # maybe a waiting workflow run,
                info = await self.get(job_id)  # due now to be undone
                self._wake(info.queue, info.run_at)
        # FINISHED after stopping it here: its worker recorded the cancel first.
        return stopped_here or result is not CancelResult.FINISHED

    async def retry(self, job_id: JobId) -> bool:
        """Make a dead or cancelled job available again with fresh attempts."""
        job_id = _check_job_id(job_id)
        done: bool = await self._storage.call(ops.RetryJob(job_id))
        if done and self._wake is not None:
            info = await self.get(job_id)
            self._wake(info.queue, info.run_at)
        return done

    async def retry_many(
        self,
        *,
        status: JobState | str = JobState.DEAD,
        queue: str | None = None,
        name: str | None = None,
        since: float | dt.datetime | None = None,
    ) -> builtins.list[int]:
        """Retry every dead (or cancelled) job matching all the filters given, with fresh
        attempts; ``since``: that finished at or after it. Jobs whose idempotency key an
        unfinished job holds are skipped. Returns the ids retried. Runs in pages of 1,000
        jobs, each its own transaction: cancelling it keeps the pages already done."""
        state = _state(status)
        if state not in (JobState.DEAD, JobState.CANCELLED):
            raise InvalidArgumentError(f"only dead or cancelled jobs are retried, not {status!r}")
        done = await self._bulk(
            lambda where: ops.RetryMany(state, where), queue=queue, name=name, since=since
        )
        if self._wake is not None and done:
            infos: dict[int, JobInfo] = await self._storage.call(ops.GetMany(tuple(done)))
            for queue_name in {info.queue for info in infos.values()}:
                self._wake(queue_name, self._clock.now())
        return done

    async def discard_many(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        since: float | dt.datetime | None = None,
        reason: str = "discarded by operator",
    ) -> builtins.list[int]:
        """Send every pending job (of ``status``: scheduled, available or retrying; None:
        all three) matching the filters to ``dead`` without running it; ``since``: enqueued
        at or after it. Returns the ids discarded; pages as :meth:`retry_many`."""
        state = None if status is None else _state(status)
        if state is not None and (state.is_terminal or state is JobState.RUNNING):
            raise InvalidArgumentError(f"only pending jobs are discarded, not {status!r}")
        done = await self._bulk(
            lambda where: ops.DiscardMany(state, where, reason), queue=queue, name=name,
            since=since,
        )  # fmt: skip
        for job_id in done:
            self._finished.notify(job_id)
        return done

    async def _bulk(
        self,
        op: Callable[[ops.JobFilter], ops.RetryMany | ops.DiscardMany],
        *,
        queue: str | None,
        name: str | None,
        since: float | dt.datetime | None,
    ) -> builtins.list[int]:
        _check_filters(queue=queue, name=name)
        when = None if since is None else _run_at(0.0, None, since)
        after: int | None = 0
        done: builtins.list[int] = []
        while after is not None:
            page: ops.BulkResult = await self._storage.call(
                op(ops.JobFilter(queue, name, when, after))
            )
            done.extend(page.ids)
            after = page.last_seen
        return done

    async def purge(
        self,
        *,
        status: JobState | str,
        older_than: Duration,
        queue: str | None = None,
        batch: int = 500,
    ) -> int:
        """Delete finished jobs of ``status`` (completed, dead or cancelled) that finished
        more than ``older_than`` ago, oldest first, ``batch`` per transaction; the number
        deleted. What the retention sweeper does, on demand."""
        state = _state(status)
        if not state.is_terminal:
            raise InvalidArgumentError(f"only finished jobs are purged, not {status!r}")
        _check_filters(queue=queue)
        age = seconds(older_than, "older_than", error=InvalidArgumentError)
        before, deleted = self._clock.now() - age, 0
        while True:
            ids: builtins.list[int] = await self._storage.call(
                ops.Purge((state,), before, batch, queue)
            )
            deleted += len(ids)
            if len(ids) < batch:
                return deleted

    async def pause(self, queue: str) -> bool:
        """Stop every process on this database from claiming jobs of ``queue``, until
        :meth:`resume`. Running jobs finish; enqueues are still stored. Durable across
        restarts. False if it was paused already."""
        _check_queue(queue)
        changed: bool = await self._storage.call(ops.PauseQueue(queue, paused=True))
        return changed

    async def resume(self, queue: str) -> bool:
        """Let ``queue``'s jobs be claimed again, here at once and elsewhere on the next
        wake-up (PostgreSQL notifies) or poll. False if it was not paused."""
        _check_queue(queue)
        changed: bool = await self._storage.call(ops.PauseQueue(queue, paused=False))
        if changed and self._wake is not None:
            self._wake(queue, self._clock.now())
        return changed

    async def queues(self) -> builtins.list[QueueInfo]:
        """Every queue that has jobs or is paused, by name."""
        counts: dict[str, dict[JobState, int]] = await self._storage.call(ops.Stats())
        paused: frozenset[str] = await self._storage.call(ops.PausedQueues())
        unserved = await self.unserved()
        return [
            QueueInfo(name, name in paused, counts.get(name, {}), unserved.get(name, ()))
            for name in sorted(set(counts) | paused | set(unserved))
        ]

    async def unserved(self) -> dict[str, tuple[str, ...]]:
        """Per queue, the names of its pending jobs that no live process runs there (no
        heartbeating worker of that queue has the name in its registry): they would wait
        forever. Each worker says which names it runs at every heartbeat; a process silent
        for over a minute does not count. Reads every pending job's name."""
        waiting: dict[str, frozenset[str]] = await self._storage.call(ops.WaitingNames())
        if not waiting:
            return {}
        processes = await self.processes()
        return unserved_names(waiting, processes, self._clock.now())

    async def discard(self, job_id: JobId, reason: str = "discarded by operator") -> bool:
        """Send a pending job to ``dead`` without running it. False if it is not pending."""
        job_id = _check_job_id(job_id)
        done: bool = await self._storage.call(ops.Discard(job_id, reason))
        if done:
            self._finished.notify(job_id)
        return done


#: Job ids are 64-bit signed integers in every backend.
_MAX_JOB_ID = 2**63 - 1


def _check_job_id(job_id: object) -> int:
    """The id ``job_id`` (an id or a :class:`Job`) gives, if it can name a stored job;
    out of range, no job has it."""
    if isinstance(job_id, Job):
        return job_id.id
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise InvalidArgumentError(f"a job id is an int, got {job_id!r}")
    if not 1 <= job_id <= _MAX_JOB_ID:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job_id


def _state(status: JobState | str) -> JobState:
    try:
        return JobState(status)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise InvalidArgumentError(f"unknown status {status!r}; use one of {names}") from None


def _check_filters(**filters: str | None) -> None:
    """Filters given as text match only what could be stored: refused like a name."""
    for what, text in filters.items():
        if isinstance(text, str):
            check_storable(text, f"{what} filter", InvalidArgumentError)


def _check_queue(queue: object) -> None:
    if not isinstance(queue, str) or not queue:
        raise InvalidArgumentError(f"queue must be a non-empty string, got {queue!r}")
    check_storable(queue, "queue", InvalidArgumentError)


def _is_asyncpg(connection: object) -> bool:
    """An asyncpg connection (pooled or not); without the postgres extra there is none."""
    if "asyncpg" not in sys.modules:
        return False
    import asyncpg
    import asyncpg.pool

    return isinstance(connection, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy)
