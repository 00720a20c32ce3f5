"""``open_runtime`` and ``open_client``: wiring the actors together under one nursery."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from trioforge._client import DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_PAYLOAD_BYTES, Client
from trioforge._clock import Clock, WallClock
from trioforge._config import resolve_database
from trioforge._context import CronContext, JobContext
from trioforge._errors import (
    ConfigurationError,
    InvalidArgumentError,
    InvalidStateError,
    unwrapped,
)
from trioforge._payloads import decode, encode_result
from trioforge._registry import AttemptEnd, CronTick, Registry
from trioforge._rules import AttemptOutcome, Retry
from trioforge.actors import (
    Finished,
    QueueConfig,
    QueueSupervisor,
    RunningJobs,
    StopReason,
    StorageHandle,
    heartbeat,
    listener,
    open_storage_channel,
    reaper,
    storage_actor,
)
from trioforge.actors.cron import CronJob, cron_scheduler
from trioforge.storage import (
    Backend,
    ClaimedJob,
    Notice,
    WakeNotice,
    backend_for_url,
    opened,
    ops,
)

__all__ = ["Runtime", "RuntimeStatistics", "open_client", "open_runtime"]

log = logging.getLogger("trioforge.runtime")

#: Concurrency of each registry queue when ``queues`` is not given.
DEFAULT_CONCURRENCY = 10


@attrs.frozen
class RuntimeStatistics:
    """This process's side of a runtime at one moment (see ``Runtime.statistics``)."""

    owner: str
    queues: Mapping[str, int]
    running_jobs: int


class _RegistryJobs:
    """Adapts a Registry to what workers need (the actors' ``JobTable``)."""

    def __init__(self, registry: Registry, make_context: Any) -> None:
        self._registry = registry
        self._make_context = make_context

    def names(self) -> frozenset[str]:
        return self._registry.names()

    def policy(self, name: str) -> tuple[Retry, float | None]:
        definition = self._registry.get(name)
        return definition.retry, definition.timeout

    def attempt(self, job: ClaimedJob) -> _Attempt:
        return _Attempt(self._registry, self._make_context, job)


class _Attempt:
    """One attempt: before hooks and the handler, then (told how it ended) after hooks."""

    def __init__(self, registry: Registry, make_context: Any, job: ClaimedJob) -> None:
        self._registry = registry
        self._make_context = make_context
        self._job = job
        self._started: tuple[JobContext, Any] | None = None  # context and payload

    async def run(self) -> str | None:
        job = self._job
        definition = self._registry.get(job.name)
        payload: Any = None
        args: tuple[Any, ...] = ()
        if definition.cron is not None:
            tick: CronTick = decode(job.name, CronTick, job.payload)
            zone = definition.cron.schedule.zone
            at = dt.datetime.fromtimestamp(tick.scheduled_at, zone)
            ctx: JobContext = self._make_context(job, CronContext, scheduled_at=at)
        else:
            ctx = self._make_context(job, JobContext)
            if definition.takes_payload:
                payload = decode(job.name, definition.payload_type, job.payload)
                args = (payload,)
        self._started = (ctx, payload)
        for hook in self._registry.before_hooks:
            await hook(ctx)
        value = await definition.handler(ctx, *args)
        return encode_result(job.name, value)

    async def end(self, outcome: AttemptOutcome, error: BaseException | None) -> None:
        if self._started is None:  # its payload could not even be decoded
            return
        ctx, payload = self._started
        end = AttemptEnd(ctx, payload, outcome, error)
        for hook in self._registry.after_hooks:
            try:
                await hook(end)
            except Exception:
                ctx.log.exception("an after_perform hook failed")


class Runtime(Client):
    """A client that also runs workers. Obtained from :func:`open_runtime`."""

    def __init__(
        self, *args: Any, owner: str, supervisors: Mapping[str, QueueSupervisor], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner
        self._supervisors = supervisors

    def resize(self, queue: str, workers: int) -> None:
        """Set how many workers serve ``queue`` in this process, while it runs.

        Growing takes jobs that are already due at once. Shrinking never interrupts a
        running job: the pool stops claiming until it is below the new size, and surplus
        workers leave as they come free. ``0`` stops claiming on the queue here.
        Not blocking (the change is decided at once; workers follow), hence not async.
        """
        supervisor = self._supervisors.get(queue)
        if supervisor is None:
            raise InvalidArgumentError(
                f"this runtime has no workers for queue {queue!r}; it serves"
                f" {sorted(self._supervisors)} (pass queues= to open_runtime)"
            )
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise InvalidArgumentError(f"workers must be an int >= 0, got {workers!r}")
        try:
            supervisor.resize(workers)
        except trio.ClosedResourceError:
            raise InvalidStateError(
                f"queue {queue!r} is shutting down; resize it while the runtime is open"
            ) from None

    def statistics(self) -> RuntimeStatistics:
        """A snapshot of this process's side: owner id, queue pools, jobs running here."""
        running = len(self._running) if self._running is not None else 0
        sizes = {name: supervisor.size for name, supervisor in self._supervisors.items()}
        return RuntimeStatistics(self.owner, sizes, running)


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _backend(database: str | Backend | None) -> Backend:
    if database is None or isinstance(database, str):
        return backend_for_url(resolve_database(database))
    return database


@asynccontextmanager
async def _storage(backend: Backend, clock: Clock, migrate: bool) -> AsyncIterator[StorageHandle]:
    async with opened(backend, migrate=migrate):
        handle, receive = open_storage_channel()
        async with trio.open_nursery() as nursery:
            await nursery.start(storage_actor, backend, clock.now, receive)
            try:
                yield handle
            finally:
                handle.close()


@asynccontextmanager
async def open_client(
    database: str | Backend | None = None,
    *,
    registry: Registry | None = None,
    clock: Clock | None = None,
    migrate: bool = True,
    poll_interval: float = 1.0,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
) -> AsyncIterator[Client]:
    """Enqueue, inspect and cancel jobs without running any (web processes, scripts).

    ``database`` is a URL or a backend; None reads the configuration (see the README).
    ``registry`` is needed only to enqueue jobs by name. Enqueues refuse payloads over
    ``max_payload_bytes`` of JSON and idempotency keys over ``max_key_bytes`` of UTF-8.
    """
    clock = clock or WallClock()
    async with unwrapped(), _storage(_backend(database), clock, migrate) as storage:
        yield Client(
            storage,
            clock,
            registry=registry,
            finished=Finished(),
            poll_interval=poll_interval,
            max_payload_bytes=max_payload_bytes,
            max_key_bytes=max_key_bytes,
        )


@asynccontextmanager
async def open_runtime(
    registry: Registry,
    *,
    database: str | Backend | None = None,
    queues: Mapping[str, int] | None = None,
    clock: Clock | None = None,
    owner: str | None = None,
    lease_seconds: float = 30.0,
    heartbeat_interval: float = 2.0,
    poll_interval: float = 1.0,
    rescue_interval: float | None = None,
    shutdown_grace: float = 10.0,
    migrate: bool = True,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
    _runtime_class: type[Runtime] = Runtime,
) -> AsyncIterator[Runtime]:
    """Run workers for ``registry`` inside the caller's trio run.

    Returns once storage is open and migrated and every queue's actors are running.
    ``queues`` maps queue name to worker count (None: every queue of the registry, with
    10 workers each; ``{}``: no workers, a client only). A count of 0 is a standby pool:
    the process heartbeats and takes part in rescue, but claims nothing until
    :meth:`Runtime.resize` grows it.

    Leaving the block normally drains: no new claims, running jobs get ``shutdown_grace``
    seconds, then their scopes are cancelled and they are released for another worker
    (the attempt is not counted). Leaving by an exception or a cancellation stops running
    jobs at once and releases them the same way.

    Enqueues (``ctx.enqueue`` too) refuse payloads over ``max_payload_bytes`` of JSON and
    idempotency keys over ``max_key_bytes`` of UTF-8, storing nothing.
    """
    if queues is None:
        queues = {name: DEFAULT_CONCURRENCY for name in sorted(registry.queues())}
    for name, size in queues.items():
        if not isinstance(name, str) or not name or not isinstance(size, int) or size < 0:
            raise ConfigurationError(
                f"queues must map queue names to worker counts >= 0, got {name!r}: {size!r}"
            )
    if not 0 < heartbeat_interval < lease_seconds:
        raise ConfigurationError("heartbeat_interval must be > 0 and shorter than lease_seconds")
    clock = clock or WallClock()
    owner = owner or _default_owner()
    running, finished = RunningJobs(), Finished()
    registry.freeze()  # the fetchers read its job names once

    backend = _backend(database)
    async with unwrapped(), _storage(backend, clock, migrate) as storage:
        supervisors: dict[str, QueueSupervisor] = {}

        def wake(queue: str, run_at: float) -> None:
            supervisor = supervisors.get(queue)
            if supervisor is not None:
                supervisor.wake(run_at)

        def on_notice(notice: Notice) -> None:
            if isinstance(notice, WakeNotice):
                wake(notice.queue, notice.run_at)
            else:
                running.cancel_running(notice.job_id)

        def wake_all() -> None:
            for queue in supervisors:
                wake(queue, clock.now())

        rt = _runtime_class(
            storage,
            clock,
            registry=registry,
            finished=finished,
            running=running,
            wake=wake,
            poll_interval=poll_interval,
            max_payload_bytes=max_payload_bytes,
            max_key_bytes=max_key_bytes,
            owner=owner,
            supervisors=supervisors,
        )

        def make_context(job: ClaimedJob, kind: type[JobContext], **extra: Any) -> JobContext:
            return kind(
                job,
                **extra,
                client=rt,
                storage=storage,
                running=running,
                clock=clock,
                owner=owner,
                lease_seconds=lease_seconds,
            )

        jobs = _RegistryJobs(registry, make_context)

        def stop_now() -> None:
            running.stop_all(StopReason.SHUTDOWN)
            for supervisor in supervisors.values():
                supervisor.stop_now()

        async def stop_after_grace() -> None:
            await trio.sleep(shutdown_grace)
            log.warning("shutdown grace of %.1fs over: releasing running jobs", shutdown_grace)
            stop_now()

        async with trio.open_nursery() as services:
            try:
                if queues:
                    await services.start(
                        partial(
                            heartbeat,
                            storage,
                            running,
                            clock,
                            owner=owner,
                            queues=tuple(queues),
                            interval=heartbeat_interval,
                            lease_seconds=lease_seconds,
                        )
                    )
                    await services.start(
                        partial(
                            reaper,
                            storage,
                            clock,
                            owner=owner,
                            interval=rescue_interval or heartbeat_interval,
                            lease_seconds=lease_seconds,
                            on_rescued=wake_all,
                        )
                    )
                    cron_jobs = [
                        CronJob(
                            name=d.name,
                            schedule=d.cron.schedule,
                            catch_up=d.cron.catch_up,
                            skip_if_running=d.cron.overlap == "skip",
                            queue=d.queue,
                            priority=d.priority,
                            max_attempts=d.retry.max_attempts,
                        )
                        for d in registry.schedules()
                        if d.cron is not None
                    ]
                    if cron_jobs:
                        await services.start(
                            partial(
                                cron_scheduler,
                                storage,
                                clock,
                                cron_jobs,
                                owner=owner,
                                interval=rescue_interval or heartbeat_interval,
                                wake=wake,
                            )
                        )
                    if backend.notifies:
                        await services.start(
                            partial(
                                listener,
                                backend,
                                on_notice=on_notice,
                                on_connected=wake_all,
                                retry_interval=min(poll_interval, 1.0),
                            )
                        )
                async with trio.open_nursery() as pools:
                    for name, size in queues.items():
                        config = QueueConfig(name, size, owner, lease_seconds, poll_interval)
                        supervisor = QueueSupervisor(
                            config, jobs, storage, running, finished, clock
                        )
                        supervisors[name] = supervisor
                        await pools.start(supervisor.run)
                    try:
                        yield rt
                    finally:
                        for supervisor in supervisors.values():
                            supervisor.stop_fetching()
                        services.start_soon(stop_after_grace)
            finally:
                services.cancel_scope.cancel()
                if queues:  # out of the registry, and leadership handed on at once
                    await storage.call_shielded(ops.Leave(owner), limit=5.0)
