"""``open_runtime`` and ``open_client``: the composition root, wiring the actors together
under one nursery (the registry as the workers see it is :mod:`trioforge._registry_jobs`)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager, nullcontext
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

from trioforge._client import DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_PAYLOAD_BYTES, Client
from trioforge._config import resolve_database, resolve_listen_url
from trioforge._context import JobContext
from trioforge._core.clock import Clock, WallClock
from trioforge._core.durations import Duration, optional_seconds, seconds
from trioforge._core.errors import (
    ConfigurationError,
    InvalidArgumentError,
    InvalidStateError,
    unwrapped,
)
from trioforge._core.flow import RateLimit
from trioforge._core.text import check_storable
from trioforge._lifespan import NO_STATE
from trioforge._policy import (
    Queue,
    QueueLike,
    Retention,
    check_rate_limits,
    queue_policies,
    queue_sizes,
)
from trioforge._registry import Registry, check_capabilities
from trioforge._registry_jobs import RegistryJobs
from trioforge._unserved import warn_unregistered
from trioforge.actors import (
    Finished,
    LiveFeed,
    QueueConfig,
    QueueSupervisor,
    RunningJobs,
    StepStarts,
    StopReason,
    StorageHandle,
    heartbeat,
    listener,
    live_feed,
    open_live_feed,
    open_storage_channel,
    reaper,
    storage_actor,
)
from trioforge.actors.cron import CronJob, cron_scheduler
from trioforge.actors.leases import Nudge
from trioforge.actors.outcome_writer import HeldQueues
from trioforge.actors.relay import Relay
from trioforge.actors.storage_actor import log_failure
from trioforge.actors.sweeper import SweepPlan, sweeper
from trioforge.storage import (
    Backend,
    ClaimedJob,
    Notice,
    ProcessDetails,
    SlotsFreedNotice,
    WakeNotice,
    backend_for_url,
    opened,
    ops,
)

if TYPE_CHECKING:
    from trioforge.metrics import Metrics
    from trioforge.otel import Tracing

__all__ = ["Runtime", "RuntimeStatistics", "open_client", "open_runtime"]

log = logging.getLogger("trioforge.runtime")

#: Concurrency of each registry queue when ``queues`` is not given.
DEFAULT_CONCURRENCY = 10
#: How long finished jobs are kept unless a queue's policy says otherwise.
DEFAULT_RETENTION = Retention()
#: For how many heartbeat intervals a beat lets enqueues address wake-ups to this process
#: alone: more than one, so a late beat does not send every wake-up to all processes.
WAKE_BEATS = 2.5
#: How long a stopping runtime waits for the wake-ups its pools passed on to be sent.
RELAY_FINISH_SECONDS = 2.0


def _sweep_plans(policies: Mapping[str, Queue], default: Retention) -> tuple[SweepPlan, ...]:
    """The queues with a retention of their own, then every other queue by the default."""
    if not isinstance(default, Retention):
        raise ConfigurationError(f"retention must be a trioforge.Retention, got {default!r}")
    own = {name: p.retention for name, p in policies.items() if p.retention is not None}
    plans = [SweepPlan(name, (), r.ages()) for name, r in sorted(own.items()) if r.ages()]
    if default.ages():
        plans.append(SweepPlan(None, tuple(sorted(own)), default.ages()))
    return tuple(plans)


@attrs.frozen
class RuntimeStatistics:
    """This process's side of a runtime at one moment (see ``Runtime.statistics``)."""

    owner: str
    queues: Mapping[str, int]
    running_jobs: int
    #: Per queue, the workers holding a job (``busy / queues[q]`` is its utilisation).
    busy: Mapping[str, int] = attrs.field(factory=dict)


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
        busy = {name: supervisor.busy for name, supervisor in self._supervisors.items()}
        return RuntimeStatistics(self.owner, sizes, running, busy)


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _backend(database: str | Backend | None, listen_url: str | None = None) -> Backend:
    if database is None or isinstance(database, str):
        url = resolve_database(database)
        return backend_for_url(url, listen_url=resolve_listen_url(listen_url))
    if listen_url is not None:
        raise ConfigurationError(
            "listen_url goes with a database URL; give it to PostgresBackend(listen_url=...)"
        )
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
async def _live(
    backend: Backend, storage: StorageHandle, poll_interval: float
) -> AsyncIterator[LiveFeed]:
    """The process's live feed, running for the block (inside the storage actor's)."""
    feed, receive = open_live_feed()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(live_feed, backend, storage, feed, receive, poll_interval=poll_interval)
        )
        try:
            yield feed
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_client(
    database: str | Backend | None = None,
    *,
    registry: Registry | None = None,
    clock: Clock | None = None,
    migrate: bool = True,
    poll_interval: Duration = 1.0,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
    queues: Mapping[str, QueueLike] | None = None,
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
    listen_url: str | None = None,
) -> AsyncIterator[Client]:
    """Enqueue, inspect and cancel jobs without running any (web processes, scripts).

    ``database`` is a URL or a backend; None reads the configuration (docs/configuration.md).
    ``registry`` is needed only to enqueue jobs by name. Enqueues refuse payloads over
    ``max_payload_bytes`` of JSON and idempotency keys over ``max_key_bytes`` of UTF-8.
    ``queues`` gives the queues' policies (as on ``open_runtime``; no workers run): a
    queue's ``retry`` sets ``max_attempts`` of the jobs enqueued here that inherit it.
    ``poll_interval`` is how often watched jobs are re-read while storage's change
    notices are unavailable. ``metrics`` counts this client's enqueues.
    ``tracing`` (a :class:`trioforge.otel.Tracing`) traces them and stores each job's
    trace context (see docs/observability.md). ``listen_url``: PostgreSQL's LISTEN
    connection when ``database`` goes through PgBouncer (see docs/pgbouncer.md).
    """
    policies = queue_policies(queues)
    clock = clock or WallClock()
    poll = seconds(poll_interval, "poll_interval", positive=True)
    backend = _backend(database, listen_url)
    async with (
        unwrapped(),
        _storage(backend, clock, migrate) as storage,
        _live(backend, storage, poll) as feed,
    ):
        yield Client(
            storage,
            clock,
            registry=registry,
            finished=Finished(feed),
            feed=feed,
            max_payload_bytes=max_payload_bytes,
            max_key_bytes=max_key_bytes,
            policies=policies,
            metrics=metrics,
            tracing=tracing,
        )


@attrs.frozen
class _Settings:
    """``open_runtime``'s arguments, checked, with their defaults filled in."""

    #: Worker count per queue.
    queues: Mapping[str, int]
    #: Every queue's policy (defaults for its jobs).
    policies: Mapping[str, Queue]
    clock: Clock
    owner: str
    lease_seconds: float
    heartbeat_interval: float
    poll_interval: float
    rescue_interval: float
    shutdown_grace: float
    max_payload_bytes: int
    max_key_bytes: int
    capabilities: frozenset[str]
    #: What the sweeper deletes, if this process wins its lease.
    sweep_plans: tuple[SweepPlan, ...]
    sweep_interval: float

    @classmethod
    def checked(
        cls,
        registry: Registry,
        *,
        queues: Mapping[str, QueueLike] | None,
        clock: Clock | None,
        owner: str | None,
        lease_seconds: Duration,
        heartbeat_interval: Duration,
        poll_interval: Duration,
        rescue_interval: Duration | None,
        shutdown_grace: Duration,
        max_payload_bytes: int,
        max_key_bytes: int,
        capabilities: Iterable[str],
        retention: Retention,
        sweep_interval: Duration,
    ) -> _Settings:
        if queues is None:
            queues = {name: DEFAULT_CONCURRENCY for name in sorted(registry.queues())}
        policies = queue_policies(queues)
        check_rate_limits(policies, (d.rate_limit for d in registry if d.rate_limit is not None))
        if owner is not None:
            check_storable(owner, "owner", ConfigurationError)
        lease = seconds(lease_seconds, "lease_seconds", positive=True)
        beat = seconds(heartbeat_interval, "heartbeat_interval", positive=True)
        if not beat < lease:
            raise ConfigurationError(
                f"heartbeat_interval ({beat}s) must be shorter than lease_seconds ({lease}s)"
            )
        rescue = optional_seconds(rescue_interval, "rescue_interval", positive=True)
        return cls(
            queues=queue_sizes(policies),
            policies=policies,
            clock=clock or WallClock(),
            owner=owner or _default_owner(),
            lease_seconds=lease,
            heartbeat_interval=beat,
            poll_interval=seconds(poll_interval, "poll_interval", positive=True),
            rescue_interval=rescue or beat,
            shutdown_grace=seconds(shutdown_grace, "shutdown_grace"),
            max_payload_bytes=max_payload_bytes,
            max_key_bytes=max_key_bytes,
            capabilities=check_capabilities(capabilities, "capabilities"),
            sweep_plans=_sweep_plans(policies, retention),
            sweep_interval=seconds(sweep_interval, "sweep_interval", positive=True),
        )


class _Parts:
    """Every part of one runtime, built before any runs (DESIGN's picture, section 3), and
    the callbacks that connect them: wake-ups from enqueues, notices and rescues reach the
    queue supervisors; cancels reach the running jobs."""

    def __init__(
        self,
        registry: Registry,
        settings: _Settings,
        backend: Backend,
        storage: StorageHandle,
        feed: LiveFeed,
        runtime_class: type[Runtime],
        metrics: Metrics | None,
        tracing: Tracing | None,
    ) -> None:
        self.settings, self.backend, self.storage = settings, backend, storage
        self.running, self.finished = RunningJobs(), Finished(feed)
        self.starts = StepStarts(storage)
        self.supervisors: dict[str, QueueSupervisor] = {}
        self.held = HeldQueues()
        self.relay = Relay(storage)
        self._listened = False  # the listener connected before (a reconnect is a catch-up)
        self.nudge = Nudge()
        #: The channel where notices reach this process alone, while the listener hears it.
        self.address: str | None = None
        #: What the registry's lifespan yielded: ``ctx.state``.
        self.state: Any = NO_STATE
        #: The rate limits a handler may take tokens from: its registry's and its queues'.
        self.rate_limits: dict[str, RateLimit] = {
            p.rate_limit.name: p.rate_limit
            for p in settings.policies.values()
            if p.rate_limit is not None
        } | registry.rate_limits()
        self.runtime = runtime_class(
            storage,
            settings.clock,
            registry=registry,
            finished=self.finished,
            feed=feed,
            running=self.running,
            wake=self.wake,
            max_payload_bytes=settings.max_payload_bytes,
            max_key_bytes=settings.max_key_bytes,
            policies=settings.policies,
            metrics=metrics,
            tracing=tracing,
            owner=settings.owner,
            supervisors=self.supervisors,
        )
        self.jobs = RegistryJobs(
            registry, self._context, settings.policies, metrics, settings.clock,
            storage=storage, running=self.running, starts=self.starts, wake=self.wake,
            tracing=tracing,
        )  # fmt: skip
        self.cron_jobs = [
            CronJob(
                name=d.name,
                schedule=d.cron.schedule,
                catch_up=d.cron.catch_up,
                skip_if_running=d.cron.overlap == "skip",
                queue=d.queue,
                priority=d.priority,
                max_attempts=d.retry_in(settings.policies.get(d.queue)).max_attempts,
                retain=d.retain,
            )
            for d in registry.schedules()
            if d.cron is not None
        ]

    def _context(self, job: ClaimedJob, kind: type[JobContext], **extra: Any) -> JobContext:
        return kind(
            job,
            **extra,
            client=self.runtime,
            storage=self.storage,
            running=self.running,
            clock=self.settings.clock,
            owner=self.settings.owner,
            lease_seconds=self.settings.lease_seconds,
            state=self.state,
            rate_limits=self.rate_limits,
        )

    def supervisor(self, name: str, size: int) -> QueueSupervisor:
        s = self.settings
        policy = s.policies.get(name)
        config = QueueConfig(
            name, size, s.owner, s.lease_seconds, s.poll_interval, s.capabilities,
            rate_limit=None if policy is None else policy.rate_limit,
        )  # fmt: skip
        supervisor = QueueSupervisor(
            config, self.jobs, self.storage, self.running, self.finished, s.clock,
            held=self.held, pass_on=self.relay.pass_on,
        )  # fmt: skip
        self.supervisors[name] = supervisor
        return supervisor

    def wake(self, queue: str, run_at: float) -> None:
        supervisor = self.supervisors.get(queue)
        if supervisor is not None:
            supervisor.wake(run_at)

    def describe(self) -> ProcessDetails:
        """This process as the heartbeat reports it (``trioforge workers list``)."""
        s = self.settings
        channel, until = self._wake_address()
        return ProcessDetails(
            host=socket.gethostname(),
            pid=os.getpid(),
            # The configured size until a pool runs (the first beat comes before the pools).
            pools=tuple(
                (name, self.supervisors[name].size if name in self.supervisors else size)
                for name, size in s.queues.items()
            ),
            capabilities=tuple(sorted(s.capabilities)),
            running=len(self.running),
            busy=tuple((name, supervisor.busy) for name, supervisor in self.supervisors.items()),
            wake_channel=channel,
            wake_until=until,
        )

    def _wake_address(self) -> tuple[str | None, float | None]:
        """Where and until when an enqueue may address its wake-up to this process alone:
        while the listener hears its own channel and the pools claim, for a few heartbeats
        (a process that died is addressed until then: its jobs wait for another's poll)."""
        fetching = any(supervisor.fetching for supervisor in self.supervisors.values())
        if self.address is None or not fetching:
            return None, None
        s = self.settings
        return self.address, s.clock.now() + WAKE_BEATS * s.heartbeat_interval

    def set_address(self, address: str | None) -> None:
        if address != self.address:
            self.address = address
            self.nudge.set()

    def readdress(self) -> None:
        """The pools started or stopped: say so at once rather than at the next beat
        (only where a listener has an address: elsewhere nothing changes)."""
        if self.address is not None:
            self.nudge.set()

    def wake_all(self) -> None:
        for queue in self.supervisors:
            self.wake(queue, self.settings.clock.now())

    def listening(self) -> None:
        """The listener is (re)connected: the fetchers claim what was enqueued while it was
        away; after a reconnect every other process is told as well, as the wake-ups
        addressed here meanwhile reached no one and this process may not take them all."""
        self.wake_all()
        if self._listened:
            for queue in self.supervisors:
                self.relay.pass_on(queue, self.settings.clock.now())
        self._listened = True

    def on_notice(self, notice: Notice) -> None:
        if isinstance(notice, WakeNotice):
            supervisor = self.supervisors.get(notice.queue)
            if not notice.owed:
                if supervisor is not None and not self.relay.echo(notice.queue, notice.run_at):
                    supervisor.wake(notice.run_at)
            elif supervisor is not None and supervisor.fetching:
                supervisor.wake(notice.run_at, notice.owed)
            else:  # addressed here, but this process claims no more: every other one hears
                self.relay.pass_on(notice.queue, notice.run_at)
        elif isinstance(notice, SlotsFreedNotice):
            self.held.written()  # queues a concurrency limit held back claim again
        else:
            self.running.cancel_running(notice.job_id)

    def stop_now(self) -> None:
        self.running.stop_all(StopReason.SHUTDOWN)
        for supervisor in self.supervisors.values():
            supervisor.stop_now()

    async def stop_after_grace(self) -> None:
        grace = self.settings.shutdown_grace
        await trio.sleep(grace)
        log.warning("shutdown grace of %.1fs over: releasing running jobs", grace)
        self.stop_now()


async def _stop_when_broken(storage: StorageHandle) -> None:
    """Stop the worker with the error once storage fails in a way retrying cannot fix (a
    corrupt or read-only database): every loop would otherwise retry it forever."""
    await storage.broken.wait()
    assert storage.broken_by is not None
    raise storage.broken_by


async def _start_services(services: trio.Nursery, parts: _Parts) -> None:
    """The process-wide actors, in order: a watch on storage's health, heartbeat (registered
    before anything claims; then a warning for each job name waiting in its queues that it
    does not run), reaper, sweeper (retention: the queues', and jobs' own), workflow step
    starts, cron scheduler (if the registry has schedules), relay and listener (if the
    backend sends notices). A client-only runtime (no queues) runs none."""
    s, storage, clock = parts.settings, parts.storage, parts.settings.clock
    if not s.queues:
        return
    services.start_soon(_stop_when_broken, storage)
    await services.start(
        partial(
            heartbeat, storage, parts.running, clock, owner=s.owner, queues=tuple(s.queues),
            interval=s.heartbeat_interval, lease_seconds=s.lease_seconds,
            describe=parts.describe, names=tuple(sorted(parts.jobs.names())),
            nudge=parts.nudge,
        )
    )  # fmt: skip
    await warn_unregistered(storage, tuple(s.queues), parts.jobs.names())
    await services.start(
        partial(
            reaper, storage, clock, owner=s.owner, interval=s.rescue_interval,
            lease_seconds=s.lease_seconds, on_rescued=parts.wake_all,
        )
    )  # fmt: skip
    await services.start(  # also without plans: jobs may carry a retention of their own
        partial(sweeper, storage, clock, s.sweep_plans, owner=s.owner, interval=s.sweep_interval)
    )
    await services.start(parts.starts.run)
    if parts.cron_jobs:
        await services.start(
            partial(
                cron_scheduler, storage, clock, parts.cron_jobs, owner=s.owner,
                interval=s.rescue_interval, wake=parts.wake,
            )
        )  # fmt: skip
    if parts.backend.notifies:
        await services.start(parts.relay.run)
        await services.start(
            partial(
                listener, parts.backend, on_notice=parts.on_notice, on_connected=parts.listening,
                retry_interval=min(s.poll_interval, 1.0), on_address=parts.set_address,
            )
        )  # fmt: skip


async def _start_pools(pools: trio.Nursery, parts: _Parts) -> None:
    """One supervisor per queue, each running (fetcher and workers) before the next."""
    for name, size in parts.settings.queues.items():
        await pools.start(parts.supervisor(name, size).run)


async def _leave(storage: StorageHandle, owner: str) -> None:
    """Best effort: if storage is away, the process is forgotten once its heartbeat goes
    stale, and a failure here must not hide why the runtime is stopping."""
    try:
        await storage.call_shielded(ops.Leave(owner), limit=5.0)
    except Exception as exc:
        log_failure(log, exc, "could not deregister this process (%s)", owner)


@asynccontextmanager
async def open_runtime(
    registry: Registry,
    *,
    database: str | Backend | None = None,
    queues: Mapping[str, QueueLike] | None = None,
    clock: Clock | None = None,
    owner: str | None = None,
    lease_seconds: Duration = 30.0,
    heartbeat_interval: Duration = 2.0,
    poll_interval: Duration = 1.0,
    rescue_interval: Duration | None = None,
    shutdown_grace: Duration = 10.0,
    migrate: bool = True,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
    capabilities: Iterable[str] = (),
    retention: Retention = DEFAULT_RETENTION,
    sweep_interval: Duration = 60.0,
    listen_url: str | None = None,
    _runtime_class: type[Runtime] = Runtime,
) -> AsyncIterator[Runtime]:
    """Run workers for ``registry`` inside the caller's trio run.

    Returns once storage is open and migrated and every queue's actors are running.
    ``queues`` maps queue name to worker count or to a :class:`~trioforge.Queue` (a count
    plus defaults for its jobs: retry, timeout) (None: every queue of the registry, with
    10 workers each; ``{}``: no workers, a client only). A count of 0 is a standby pool:
    the process heartbeats and takes part in rescue, but claims nothing until
    :meth:`Runtime.resize` grows it.

    Leaving the block normally drains: no new claims, running jobs get ``shutdown_grace``
    seconds, then their scopes are cancelled and they are released for another worker
    (the attempt is not counted). Leaving by an exception or a cancellation stops running
    jobs at once and releases them the same way.

    Enqueues (``ctx.enqueue`` too) refuse payloads over ``max_payload_bytes`` of JSON and
    idempotency keys over ``max_key_bytes`` of UTF-8, storing nothing.

    ``metrics`` (a :class:`trioforge.metrics.Metrics`) counts this process's enqueues,
    starts and outcomes and times its attempts.

    ``tracing`` (a :class:`trioforge.otel.Tracing`, the ``otel`` extra) makes a span of
    each enqueue and each attempt, linked through the trace context stored with the job
    (see docs/observability.md). None (the default) costs nothing per job.

    ``retention`` says how long finished jobs are kept in queues whose ``Queue`` policy
    gives none (every queue on the database: the process holding the ``sweeper`` lease
    deletes older ones every ``sweep_interval`` seconds, in small batches; give every
    process the same policies).

    ``capabilities`` names what this process offers (``{"gpu", "ffmpeg"}``): its workers
    claim a job that ``requires`` capabilities only if it has them all.

    ``listen_url`` is where PostgreSQL's LISTEN connects when ``database`` goes through a
    transaction pooler (default: ``$TRIOFORGE_LISTEN_URL``, then ``listen_url`` in the
    settings, then the database URL; see docs/pgbouncer.md).
    """
    settings = _Settings.checked(
        registry, queues=queues, clock=clock, owner=owner, lease_seconds=lease_seconds,
        heartbeat_interval=heartbeat_interval, poll_interval=poll_interval,
        rescue_interval=rescue_interval, shutdown_grace=shutdown_grace,
        max_payload_bytes=max_payload_bytes, max_key_bytes=max_key_bytes,
        capabilities=capabilities, retention=retention, sweep_interval=sweep_interval,
    )  # fmt: skip
    registry.freeze()  # the fetchers read its job names once
    backend = _backend(database, listen_url)
    # Storage first and last: every other actor writes through it, until its very end.
    async with (
        unwrapped(),
        _storage(backend, settings.clock, migrate) as storage,
        _live(backend, storage, settings.poll_interval) as feed,
    ):
        parts = _Parts(registry, settings, backend, storage, feed, _runtime_class, metrics, tracing)
        # The lifespan wraps every actor: open before the first claim, closed after the
        # pools drained. A client (no queues) runs no jobs, so it does not run it.
        lifespan = registry.entered_lifespan() if settings.queues else nullcontext(NO_STATE)
        async with lifespan as parts.state, trio.open_nursery() as services:
            try:
                await _start_services(services, parts)
                async with trio.open_nursery() as pools:
                    await _start_pools(pools, parts)
                    parts.readdress()  # the pools claim: addressable from now
                    try:
                        yield parts.runtime
                    finally:
                        # Drain in reverse: no new claims; running jobs get the grace
                        # period (the pools nursery waits for them), then are released.
                        for supervisor in parts.supervisors.values():
                            supervisor.stop_fetching()
                        parts.readdress()  # no longer addressable
                        services.start_soon(parts.stop_after_grace)
            finally:
                # What the stopping pools passed on goes out before the relay stops with
                # the other services (its storage calls are not shielded).
                await parts.relay.finish(RELAY_FINISH_SECONDS)
                services.cancel_scope.cancel()
                if settings.queues:  # out of the registry, and leadership handed on at once
                    await _leave(storage, settings.owner)
