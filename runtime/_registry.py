"""The registry: which jobs an application defines, and how each one runs."""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, cast, overload

import attrs
import cattrs

from trioforge._codec import NO_PAYLOAD, Codec, as_codec
from trioforge._core.cron import CronSchedule
from trioforge._core.durations import Duration, optional_seconds
from trioforge._core.errors import ConfigurationError, InvalidStateError, UnknownJobError
from trioforge._core.flow import ConcurrencyLimit, JobLimits, RateLimit
from trioforge._core.outcomes import AttemptOutcome
from trioforge._core.retry import Retry
from trioforge._core.states import PriorityLike, parse_priority
from trioforge._core.text import check_storable
from trioforge._lifespan import NO_STATE, Lifespan, StateT, as_lifespan, entered
from trioforge._policy import Queue, Retention, job_retention

if TYPE_CHECKING:
    from trioforge._context import CronContext, JobContext
    from trioforge._workflow import WorkflowContext

__all__ = [
    "AfterHook",
    "AttemptEnd",
    "BeforeHook",
    "CronDecorator",
    "CronSpec",
    "CronTick",
    "EndHook",
    "JobDecorator",
    "JobDefinition",
    "Registry",
    "WorkflowDecorator",
    "WorkflowDefinition",
    "WorkflowSpec",
    "check_capabilities",
]

Handler = Callable[..., Awaitable[Any]]
#: A definition's payload type (None for a handler that takes only the context).
P = TypeVar("P")
#: A definition's result type: what its handler returns.
R_co = TypeVar("R_co", covariant=True)
_P = TypeVar("_P")
_R = TypeVar("_R")
BeforeHook = Callable[["JobContext"], Awaitable[None]]


@attrs.frozen
class AttemptEnd:
    """How one attempt of a job ended: what ``after_perform`` hooks receive."""

    #: The context the handler ran with (job id, name, attempt, log, ...).
    ctx: JobContext
    #: The decoded payload the handler was given (None for a job that takes none).
    payload: Any
    outcome: AttemptOutcome
    #: What the attempt raised: the handler's exception, JobTimeoutError for a timeout,
    #: None when it completed or was stopped (cancelled, released, lost).
    error: BaseException | None


#: ``async def hook(end: AttemptEnd)``: sees the end of every attempt.
EndHook = Callable[[AttemptEnd], Awaitable[None]]
#: ``async def hook(ctx, error)``, the older form: attempts that completed, failed, timed
#: out or were discarded (``error`` None on success); not stopped ones.
LegacyAfterHook = Callable[["JobContext", BaseException | None], Awaitable[None]]
AfterHook = EndHook | LegacyAfterHook
_AfterHookT = TypeVar("_AfterHookT", bound=AfterHook)

#: The outcomes a two-argument after hook is called for (what it always saw, plus timeouts).
_LEGACY_OUTCOMES = frozenset(
    {
        AttemptOutcome.COMPLETED,
        AttemptOutcome.FAILED,
        AttemptOutcome.TIMED_OUT,
        AttemptOutcome.DISCARDED,
    }
)


def _end_hook(hook: AfterHook) -> EndHook:
    """``hook`` as a one-argument hook, whichever form it was written in."""
    params = len(inspect.signature(hook).parameters)
    if params == 1:
        return cast(EndHook, hook)
    if params != 2:
        raise ConfigurationError(
            f"after_perform hook {hook!r} must take (end: AttemptEnd) or (ctx, error), "
            f"not {params} parameters"
        )
    legacy = cast(LegacyAfterHook, hook)

    async def call(end: AttemptEnd) -> None:
        if end.outcome in _LEGACY_OUTCOMES:
            await legacy(end.ctx, end.error)

    return call


@attrs.frozen
class CronTick:
    """The payload of a cron job: the tick it runs for, in epoch seconds."""

    scheduled_at: float


@attrs.frozen
class CronSpec:
    """When a cron job fires and what happens to ticks it could not fire on time."""

    schedule: CronSchedule
    catch_up: int
    overlap: Literal["allow", "skip"]


@attrs.frozen
class WorkflowSpec:
    """What makes a job definition a workflow: its name and version, its run deadline."""

    name: str
    version: int
    #: Seconds from the run's start until it is given up and undone (None: no limit).
    timeout: float | None


#: A workflow's default retry policy for errors raised by its own code outside steps (a
#: step has its own). Attempts are counted only by such errors and by lost workers, never
#: by suspensions, so the default is generous.
WORKFLOW_RETRY = Retry(max_attempts=10)


def workflow_job_name(name: str, version: int) -> str:
    """The job name a workflow version's runs are stored under: claims pick versions."""
    return f"{name}@v{version}"


@attrs.frozen
class JobDefinition(Generic[P, R_co]):
    """A named job: its handler, payload type and defaults. Calling it calls the handler.

    Typed from its handler: ``async def h(ctx, payload: P) -> R`` declares a
    ``JobDefinition[P, R]`` (``P`` is None for a handler without a payload), so a type
    checker holds ``enqueue(h, payload)`` to ``P`` and ``await job.result()`` gives ``R``.
    """

    name: str
    handler: Handler
    payload_type: Any
    queue: str
    priority: int
    retry: Retry
    timeout: float | None
    #: Seconds an attempt may go without ``ctx.heartbeat()``/``ctx.progress()`` before it
    #: fails as timed out (None: no such limit).
    heartbeat_timeout: float | None = None
    #: Set for jobs declared with ``registry.cron``: they are enqueued by the scheduler.
    cron: CronSpec | None = None
    #: Set for workflows (``registry.workflow``): runs that replay, suspend and resume.
    workflow: WorkflowSpec | None = None
    #: The settings left unset at declaration ("retry", "timeout"): the queue's policy
    #: gives them (see :class:`~trioforge.Queue`), else the defaults above.
    inherits: frozenset[str] = frozenset()
    #: Whether the web app's ``POST /api/jobs/{name}`` may enqueue it (anyone who reaches
    #: the app can: declare only what a browser may start).
    public: bool = False
    #: Capabilities a process must have to run it (``open_runtime(capabilities=...)``).
    requires: frozenset[str] = frozenset()
    rate_limit: RateLimit | None = None
    concurrency: ConcurrencyLimit | None = None
    #: Derives the idempotency key from the payload when an enqueue gives none.
    idempotency_key: Callable[[Any], object] | None = None
    #: Seconds a key keeps blocking after the job holding it finished.
    unique_for: float | None = None
    #: Its own retention once finished, as stored (see ``job_retention``); None: its
    #: queue's.
    retain: str | None = None
    #: What the handler returns, from its return annotation (Any: none; None: ``-> None``).
    #: Results are encoded (and decoded) by it.
    result_type: Any = Any
    #: The registry's codec: payloads, results, step results and signals go through it.
    codec: Codec = attrs.field(factory=lambda: as_codec(None))

    @property
    def limits(self) -> JobLimits | None:
        """What a claim must respect for this job (None: nothing)."""
        if self.rate_limit is None and self.concurrency is None:
            return None
        return JobLimits(self.rate_limit, self.concurrency)

    def retry_in(self, policy: Queue | None) -> Retry:
        """The retry policy in a queue with ``policy``."""
        if "retry" in self.inherits and policy is not None and policy.retry is not None:
            return policy.retry
        return self.retry

    def timeout_in(self, policy: Queue | None) -> float | None:
        """The timeout in seconds in a queue with ``policy`` (None: no timeout)."""
        if "timeout" in self.inherits and policy is not None and policy.timeout is not None:
            return policy.timeout
        return self.timeout

    def __call__(self, ctx: JobContext, *args: Any) -> Awaitable[R_co]:
        return self.handler(ctx, *args)

    @property
    def takes_payload(self) -> bool:
        """Whether the handler takes a payload (False for ``async def h(ctx)``)."""
        return self.payload_type is not NO_PAYLOAD


@attrs.frozen
class WorkflowDefinition(JobDefinition[P, R_co]):
    """A workflow version (from ``@registry.workflow``): a :class:`JobDefinition` whose
    runs replay, suspend and resume. Enqueue it like a job; ``P`` and ``R`` likewise."""


class JobDecorator(Protocol[StateT]):
    """What ``@registry.job(...)`` applies to a handler: the handler's signature gives the
    definition's types (``JobDefinition[None, R]`` for ``async def h(ctx) -> R``). Its
    ``ctx`` is a ``JobContext[State]`` of the registry's ``State`` (or a bare one)."""

    @overload
    def __call__(
        self, handler: Callable[[JobContext[StateT], _P], Awaitable[_R]], /
    ) -> JobDefinition[_P, _R]: ...
    @overload
    def __call__(
        self, handler: Callable[[JobContext[StateT]], Awaitable[_R]], /
    ) -> JobDefinition[None, _R]: ...


class CronDecorator(Protocol[StateT]):
    """What ``@registry.cron(...)`` applies: ``async def h(ctx: CronContext) -> R``. Its
    runs are enqueued by the scheduler with the tick as payload."""

    def __call__(
        self, handler: Callable[[CronContext[StateT]], Awaitable[_R]], /
    ) -> JobDefinition[CronTick, _R]: ...


class WorkflowDecorator(Protocol[StateT]):
    """What ``@registry.workflow(...)`` applies, typed as :class:`JobDecorator`."""

    @overload
    def __call__(
        self, handler: Callable[[WorkflowContext[StateT], _P], Awaitable[_R]], /
    ) -> WorkflowDefinition[_P, _R]: ...
    @overload
    def __call__(
        self, handler: Callable[[WorkflowContext[StateT]], Awaitable[_R]], /
    ) -> WorkflowDefinition[None, _R]: ...


def check_capabilities(
    values: Iterable[str], what: str, error: type[ValueError] = ConfigurationError
) -> frozenset[str]:
    """A set of capability names, each a non-empty string."""
    if isinstance(values, str):
        raise error(f"{what} must be a set of names, not the string {values!r}")
    try:
        names = frozenset(values)
    except TypeError:
        raise error(f"{what} must be a set of names, got {values!r}") from None
    for value in names:
        if not isinstance(value, str) or not value:
            raise error(f"{what}: capability names are non-empty strings, got {value!r}")
        check_storable(value, f"{what}: capability name", error)
    return names


def _payload_type(handler: Handler, name: str) -> Any:
    params = list(inspect.signature(handler).parameters.values())
    if not params or len(params) > 2:
        raise ConfigurationError(
            f"handler of job {name!r} must take (ctx) or (ctx, payload), "
            f"not {len(params)} parameters"
        )
    if len(params) == 1:
        return NO_PAYLOAD
    try:
        hints = typing.get_type_hints(handler)
    except NameError as exc:
        raise ConfigurationError(
            f"cannot resolve the payload annotation of job {name!r} ({exc}); define the "
            "payload class at module level or pass payload=TheClass to registry.job()"
        ) from None
    return hints.get(params[1].name, Any)


def _result_type(handler: Handler, name: str) -> Any:
    """The handler's return annotation (``-> None`` gives NoneType; none given: Any)."""
    try:
        annotations = inspect.get_annotations(handler)
    except TypeError:  # not a plain function (a callable object): nothing declared
        return Any
    if "return" not in annotations:
        return Any
    try:
        return typing.get_type_hints(handler).get("return", Any)
    except NameError as exc:
        raise ConfigurationError(
            f"cannot resolve the return annotation of job {name!r} ({exc}); define the "
            "result class at module level"
        ) from None


class Registry(Generic[StateT]):
    """The jobs an application defines, by name, plus lifecycle hooks and a lifespan.

    A worker only claims jobs whose names its registry holds. Once a runtime has been
    opened with it, the registry is frozen: workers have read its jobs and hooks.

    ``converter``: how payloads, results and signals become JSON: a ``cattrs.Converter``
    carrying hooks for your own types (trioforge's strict hooks are added to a copy of
    it), or a :class:`~trioforge.Codec` of your own. Default: the strict codec described
    in docs/payloads.md.

    ``Registry[State]()`` types the value its :meth:`lifespan` yields, which handlers
    read as ``ctx.state`` (annotate them ``ctx: JobContext[State]``); a plain
    ``Registry()`` is ``Registry[Any]``.
    """

    def __init__(self, converter: cattrs.Converter | Codec | None = None) -> None:
        try:
            #: The codec every job of this registry uses, on every path.
            self.codec: Codec = as_codec(converter)
        except TypeError as exc:
            raise ConfigurationError(str(exc)) from None
        self._jobs: dict[str, JobDefinition[Any, Any]] = {}
        # workflow name -> its highest version
        self._latest: dict[str, JobDefinition[Any, Any]] = {}
        self._limits: dict[tuple[type, str], object] = {}  # limits shared by name
        self._frozen = False
        self.before_hooks: list[BeforeHook] = []
        #: Every after hook, in the one-argument form (see ``after_perform``).
        self.after_hooks: list[EndHook] = []
        self._lifespan: Lifespan | None = None
        self._lifespan_name = ""

    def rate_limits(self) -> dict[str, RateLimit]:
        """The rate limits its jobs declare, by name: the ones a handler may take a token
        from (``ctx.acquire``)."""
        return {
            name: limit for (_, name), limit in self._limits.items() if isinstance(limit, RateLimit)
        }

    def job(
        self,
        name: str,
        *,
        queue: str = "default",
        priority: PriorityLike = "normal",
        retry: Retry | None = None,
        timeout: Duration | None = None,
        payload: Any = None,
        public: bool = False,
        requires: Iterable[str] = (),
        rate_limit: RateLimit | None = None,
        concurrency: ConcurrencyLimit | None = None,
        idempotency_key: Callable[[Any], object] | None = None,
        unique_for: Duration | None = None,
        heartbeat_timeout: Duration | None = None,
        retain: Retention | Duration | None = None,
    ) -> JobDecorator[StateT]:
        """Declare ``async def handler(ctx, payload: P) -> R`` as job ``name``: a
        ``JobDefinition[P, R]``. ``timeout`` and ``unique_for``: seconds or a timedelta.

        ``payload`` overrides the type read from the handler's annotation. ``public=True``
        lets the web app's ``POST /api/jobs/{name}`` enqueue it (payload checked the same).
        ``requires``: only a process opened with all these capabilities claims it.
        ``rate_limit`` and ``concurrency`` hold its starts back across every process (jobs
        naming the same limit share it; it must then be declared with the same settings).
        ``idempotency_key`` (a function of the payload, as the handler sees it) gives each
        enqueue that names no key one; ``unique_for`` keeps a key blocking for that long
        after the job holding it finished (in any final state). ``heartbeat_timeout``
        fails an attempt (retryable, as a timeout) once the handler has gone that long
        without calling ``ctx.heartbeat()`` or ``ctx.progress()``: a hung job is caught long
        before its ``timeout``. ``retain`` keeps its finished jobs that long instead of
        their queue's retention: a ``Retention`` (per final state, ``None`` forever) or one
        duration for every final state.
        """
        self._check_open(f"job {name!r}")
        if not isinstance(name, str) or not name:
            raise ConfigurationError("a job name must be a non-empty string")
        check_storable(name, "job name", ConfigurationError)
        if name in self._jobs:
            raise ConfigurationError(f"job {name!r} is already defined in this registry")
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(f"job {name!r}: queue must be a non-empty string")
        check_storable(queue, f"job {name!r}: queue name", ConfigurationError)
        limit_seconds = optional_seconds(timeout, f"job {name!r}: timeout", positive=True)
        beat_seconds = optional_seconds(
            heartbeat_timeout, f"job {name!r}: heartbeat_timeout", positive=True
        )
        level = parse_priority(priority)
        needs = check_capabilities(requires, f"job {name!r}: requires")
        if idempotency_key is not None and not callable(idempotency_key):
            raise ConfigurationError(
                f"job {name!r}: idempotency_key must be a function of the payload"
            )
        unique = optional_seconds(unique_for, f"job {name!r}: unique_for")
        kept = job_retention(retain, f"job {name!r}: retain")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigurationError(f"job {name!r}: rate_limit must be a trioforge.RateLimit")
        if concurrency is not None and not isinstance(concurrency, ConcurrencyLimit):
            raise ConfigurationError(
                f"job {name!r}: concurrency must be a trioforge.ConcurrencyLimit"
            )
        for limit in (rate_limit, concurrency):
            if limit is not None:
                known = self._limits.setdefault((type(limit), limit.name), limit)
                if known != limit:
                    raise ConfigurationError(
                        f"job {name!r}: limit {limit.name!r} is already declared as {known!r}; "
                        "jobs sharing a limit must give it the same settings"
                    )

        def register(handler: Handler) -> JobDefinition[Any, Any]:
            self._check_open(f"job {name!r}")
            if not inspect.iscoroutinefunction(handler):
                raise ConfigurationError(
                    f"job {name!r}: the handler must be an `async def` function"
                )
            definition: JobDefinition[Any, Any] = JobDefinition(
                name=name,
                handler=handler,
                payload_type=payload if payload is not None else _payload_type(handler, name),
                queue=queue,
                priority=level,
                retry=retry if retry is not None else Retry(),
                timeout=limit_seconds,
                heartbeat_timeout=beat_seconds,
                inherits=frozenset(
                    field for field, value in (("retry", retry), ("timeout", timeout))
                    if value is None
                ),
                public=bool(public),
                requires=needs,
                rate_limit=rate_limit,
                concurrency=concurrency,
                idempotency_key=idempotency_key,
                unique_for=unique,
                retain=kept,
                result_type=_result_type(handler, name),
                codec=self.codec,
            )  # fmt: skip
            self._jobs[name] = definition
            return definition

        return cast(JobDecorator[StateT], register)

    def cron(
        self,
        expr: str,
        *,
        timezone: str = "UTC",
        catch_up: int = 0,
        overlap: Literal["allow", "skip"] = "allow",
        name: str | None = None,
        queue: str = "default",
        priority: PriorityLike = "normal",
        retry: Retry | None = None,
        timeout: Duration | None = None,
        retain: Retention | Duration | None = None,
    ) -> CronDecorator[StateT]:
        """Declare ``async def handler(ctx: CronContext)`` to run on a cron schedule.

        Each tick is enqueued once, across every replica, as a job named ``name`` (default
        ``cron:<function name>``): retries, timeouts, cancel and progress apply.
        ``catch_up=N`` replays at most the N most recent ticks missed while nothing ran
        (oldest first); 0 skips them. ``overlap="skip"`` records a tick as skipped while the
        previous run has not finished. ``retain`` keeps its finished runs that long
        instead of their queue's retention (as ``registry.job``'s). Daylight saving follows
        classic cron: see :class:`~trioforge.CronSchedule`. A bad expression or zone raises
        here.
        """
        self._check_open(f"cron schedule {expr!r}")
        schedule = CronSchedule(expr, timezone)
        job_retention(retain, f"cron schedule {expr!r}: retain")
        if isinstance(catch_up, bool) or not isinstance(catch_up, int) or catch_up < 0:
            raise ConfigurationError(f"catch_up must be an int >= 0, got {catch_up!r}")
        if overlap not in ("allow", "skip"):
            raise ConfigurationError(f"overlap must be 'allow' or 'skip', got {overlap!r}")
        spec = CronSpec(schedule, catch_up, overlap)

        def register(handler: Handler) -> JobDefinition[Any, Any]:
            job_name = name or f"cron:{handler.__name__}"
            definition: JobDefinition[Any, Any] = self.job(
                job_name,
                queue=queue,
                priority=priority,
                retry=retry,
                timeout=timeout,
                payload=CronTick,
                retain=retain,
            )(handler)
            definition = attrs.evolve(definition, cron=spec)
            self._jobs[job_name] = definition
            return definition

        return cast(CronDecorator[StateT], register)

    def workflow(
        self,
        name: str,
        *,
        version: int = 1,
        queue: str = "default",
        priority: PriorityLike = "normal",
        retry: Retry | None = None,
        timeout: Duration | None = None,
        payload: Any = None,
        public: bool = False,
        retain: Retention | Duration | None = None,
    ) -> WorkflowDecorator[StateT]:
        """Declare ``async def handler(ctx: WorkflowContext, payload: P) -> R`` as version
        ``version`` of workflow ``name`` (a ``WorkflowDefinition[P, R]``): a durable run
        of steps that survives restarts.

        Several versions may be registered side by side; new runs take the highest, and
        each run resumes only on the version it started with. ``timeout`` bounds the whole
        run, counted from its enqueue (then it is undone); ``retry`` applies to errors the handler
        raises outside its steps (default: 10 attempts). ``public=True`` lets the web app's
        ``POST /api/workflows/{name}`` start runs (checked like ``enqueue``). ``retain``
        keeps its finished runs (with their record and signals) that long instead of their
        queue's retention, as ``registry.job``'s. See docs/workflows.md.
        """
        self._check_open(f"workflow {name!r}")
        if not isinstance(name, str) or not name or "@" in name:
            raise ConfigurationError(
                f"a workflow name must be a non-empty string without '@', got {name!r}"
            )
        check_storable(name, "workflow name", ConfigurationError)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigurationError(f"workflow {name!r}: version must be an int >= 1")
        seconds = optional_seconds(timeout, f"workflow {name!r}: timeout", positive=True)
        job_retention(retain, f"workflow {name!r}: retain")
        spec = WorkflowSpec(name, version, seconds)
        job_name = workflow_job_name(name, version)

        def register(handler: Handler) -> WorkflowDefinition[Any, Any]:
            job = self.job(
                job_name,
                queue=queue,
                priority=priority,
                retry=retry if retry is not None else WORKFLOW_RETRY,
                payload=payload if payload is not None else _payload_type(handler, name),
                public=public,
                retain=retain,
            )(handler)
            fields = attrs.asdict(job, recurse=False) | {"workflow": spec}
            definition: WorkflowDefinition[Any, Any] = WorkflowDefinition(**fields)
            self._jobs[job_name] = definition
            latest = self._latest.get(name)
            if latest is None or latest.workflow is None or latest.workflow.version < version:
                self._latest[name] = definition
            return definition

        return cast(WorkflowDecorator[StateT], register)

    def latest(self, definition: JobDefinition[_P, _R]) -> JobDefinition[_P, _R]:
        """For a workflow, its highest version registered here (new runs take it; their
        payload and result types are the caller's to keep compatible across versions)."""
        if definition.workflow is None:
            return definition
        return self._latest.get(definition.workflow.name, definition)

    def schedules(self) -> list[JobDefinition[Any, Any]]:
        """The cron jobs, by name."""
        return sorted((d for d in self._jobs.values() if d.cron), key=lambda d: d.name)

    def before_perform(self, hook: BeforeHook) -> BeforeHook:
        """Run ``await hook(ctx)`` before every attempt; if it raises, the attempt fails."""
        self._check_open("before_perform hook")
        self.before_hooks.append(hook)
        return hook

    def after_perform(self, hook: _AfterHookT) -> _AfterHookT:
        """Run ``await hook(end)`` when any attempt ends, with an :class:`AttemptEnd`: its
        context, payload, outcome and error. It runs even when a cancel or timeout ended
        the attempt (shielded, for at most 10 seconds in all), before the outcome is
        recorded; an exception from it is logged and changes nothing.

        The older form ``await hook(ctx, error)`` still works and is called for attempts
        that completed (``error`` None), failed, timed out or were discarded.
        """
        self._check_open("after_perform hook")
        self.after_hooks.append(_end_hook(hook))
        return hook

    @overload
    def lifespan(
        self, fn: Callable[[], AsyncIterator[StateT]]
    ) -> Callable[[], AsyncIterator[StateT]]: ...
    @overload
    def lifespan(
        self, fn: Callable[[], AbstractAsyncContextManager[StateT]]
    ) -> Callable[[], AbstractAsyncContextManager[StateT]]: ...
    def lifespan(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Declare the resources this registry's handlers share: ``fn`` is an async
        generator function that sets them up, yields them once and closes them after
        (or a function returning an async context manager, such as one decorated with
        ``contextlib.asynccontextmanager``).

        Every runtime that runs jobs (``open_runtime``, ``trioforge worker``,
        ``trioforge.testing.open_test_runtime``) enters it once, after storage opens and
        before its pools start, and leaves it after they drained; handlers read the
        yielded value as ``ctx.state``. A client (``open_client``, ``queues={}``) does not
        run it. An error in it is raised as :class:`~trioforge.LifespanError`; closing is
        shielded from cancellation for at most 10 seconds.
        """
        self._check_open("lifespan")
        name = getattr(fn, "__qualname__", repr(fn))
        if self._lifespan is not None:
            raise ConfigurationError(
                f"lifespan {name}: this registry already has lifespan {self._lifespan_name}; "
                "open every resource in one (contextlib.AsyncExitStack combines several)"
            )
        self._lifespan = as_lifespan(fn)
        self._lifespan_name = name
        return fn

    def entered_lifespan(self) -> AbstractAsyncContextManager[Any]:
        """The lifespan opened (its value: ``ctx.state``), or NO_STATE without one."""
        if self._lifespan is None:
            return nullcontext(NO_STATE)
        return entered(self._lifespan, self._lifespan_name)

    @property
    def frozen(self) -> bool:
        """True once a runtime was opened with this registry: it takes no more jobs."""
        return self._frozen

    def freeze(self) -> None:
        """Refuse new jobs, cron schedules and hooks from now on (``open_runtime`` calls
        this: its workers read the registry once, so later additions would never run)."""
        self._frozen = True

    def _check_open(self, what: str) -> None:
        if self._frozen:
            raise InvalidStateError(
                f"cannot register {what}: this registry is frozen because a runtime was "
                "opened with it; register every job, cron schedule and hook before "
                "opening the runtime"
            )

    def get(self, name: str) -> JobDefinition[Any, Any]:
        """The job named ``name``; a workflow's plain name means its highest version."""
        try:
            return self._jobs.get(name) or self._latest[name]
        except KeyError:
            known = ", ".join(sorted(self._jobs)) or "none"
            raise UnknownJobError(
                f"no job named {name!r} in this registry (known: {known}); "
                "declare it with @registry.job(...)"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __iter__(self) -> Iterator[JobDefinition[Any, Any]]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def names(self) -> frozenset[str]:
        """Every job name declared (a workflow's as ``name@vN``)."""
        return frozenset(self._jobs)

    def queues(self) -> frozenset[str]:
        """Every queue a declared job names."""
        return frozenset(d.queue for d in self._jobs.values())
