"""The registry adapter: a :class:`~trioforge.Registry` as the queue workers see it (the
actors' ``JobTable``), and the attempts it makes of a claimed job (before hooks, decoding,
the handler, after hooks, metrics and tracing; a workflow run's attempt goes through the
same hooks and metrics around its driver)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

from trioforge._codec import decode_payload, encode_result
from trioforge._context import CronContext, JobContext
from trioforge._core.clock import Clock
from trioforge._core.durations import seconds
from trioforge._core.errors import InvalidArgumentError, PayloadError
from trioforge._core.flow import JobLimits
from trioforge._core.outcomes import AttemptOutcome
from trioforge._core.retry import Retry, failure_outcome
from trioforge._policy import Queue
from trioforge._registry import AttemptEnd, CronTick, JobDefinition, Registry
from trioforge._workflow import WorkflowContext
from trioforge._workflow_driver import WorkflowAttempt
from trioforge._workflow_replay import Replay
from trioforge.actors import Ended, RunningJobs, StepStarts, StorageHandle
from trioforge.storage import ClaimedJob

if TYPE_CHECKING:
    from trioforge.actors.attempts import Attempt
    from trioforge.metrics import Metrics
    from trioforge.otel import Tracing

__all__ = ["STORED_TIMEOUT_FIX", "RegistryJobs"]

#: The fix a refused stored timeout names: enqueue refuses such a value, so the row came
#: from elsewhere (a hand-written INSERT, an edited row, another program).
STORED_TIMEOUT_FIX = (
    " (enqueue refuses such a value, so this row was written by other means: enqueue the "
    "job again with timeout= a number of seconds > 0, or none)"
)


@attrs.frozen
class _Plan:
    definition: JobDefinition[Any, Any]
    retry: Retry
    timeout: float | None  # the job's own (set at enqueue) overrides it


class RegistryJobs:
    """Adapts a Registry to what workers need (the actors' ``JobTable``)."""

    def __init__(
        self,
        registry: Registry,
        make_context: Any,
        policies: Mapping[str, Queue],
        metrics: Metrics | None,
        clock: Clock,
        *,
        storage: StorageHandle,
        running: RunningJobs,
        starts: StepStarts,
        wake: Callable[[str, float], None],
        tracing: Tracing | None = None,
    ) -> None:
        self._registry = registry
        self._tracing = tracing
        self._make_context = make_context
        self._policies = policies
        self._metrics = metrics
        self._clock = clock
        self._storage = storage
        self._running = running
        self._starts = starts
        self._wake = wake
        self._plans: dict[tuple[str, str], _Plan] = {}

    def names(self) -> frozenset[str]:
        return self._registry.names()

    def limits(self) -> dict[str, JobLimits]:
        return {d.name: d.limits for d in self._registry if d.limits is not None}

    def _plan(self, job: ClaimedJob) -> _Plan:
        """The job's definition and its retry and timeout in its queue, worked out once per
        (name, queue): the registry is frozen and the policies fixed while the runtime runs."""
        plan = self._plans.get((job.name, job.queue))
        if plan is None:
            definition = self._registry.get(job.name)
            policy = self._policies.get(job.queue)
            if definition.workflow is not None:  # a run's deadline is its own (see _workflow)
                plan = _Plan(definition, definition.retry, None)
            else:
                plan = _Plan(definition, definition.retry_in(policy), definition.timeout_in(policy))
            self._plans[job.name, job.queue] = plan
        return plan

    def policy(self, job: ClaimedJob) -> tuple[Retry, float | None]:
        """Raises InvalidArgumentError for a stored timeout that is not a finite number of
        seconds > 0 (checked at enqueue, but a row may be written by other means): used, it
        would time the attempt out at once, never, or not start it at all (NaN)."""
        plan = self._plan(job)
        if job.timeout is None or plan.definition.workflow is not None:
            return plan.retry, plan.timeout
        what = f"job {job.id}'s stored timeout"
        try:
            timeout = seconds(job.timeout, what, error=InvalidArgumentError, positive=True)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{exc}{STORED_TIMEOUT_FIX}") from None
        return plan.retry, timeout

    def heartbeat_timeout(self, job: ClaimedJob) -> float | None:
        return self._plan(job).definition.heartbeat_timeout

    def attempt(self, job: ClaimedJob) -> Attempt:
        attempt = self._untraced(job)
        if self._tracing is None:
            return attempt
        return self._tracing.attempt(job, attempt)

    def _untraced(self, job: ClaimedJob) -> _Attempt | _WorkflowRun:
        definition = self._plan(job).definition
        if definition.workflow is not None:
            driver = WorkflowAttempt(
                definition, job, self._workflow_context, storage=self._storage,
                running=self._running, starts=self._starts, clock=self._clock,
                tracing=self._tracing,
                before=self._before_hooks if self._registry.before_hooks else None,
            )  # fmt: skip
            return _WorkflowRun(self._registry, driver, job, self._measure(job))
        if self._metrics is None:
            return _Attempt(self._registry, definition, self._make_context, job)
        measure = self._measure(job)
        assert measure is not None
        return _MeasuredAttempt(self._registry, definition, self._make_context, job, measure)

    def _measure(self, job: ClaimedJob) -> _Measure | None:
        if self._metrics is None:
            return None
        retry, _ = self.policy(job)
        return _Measure(self._metrics, self._clock, job, retry)

    async def _before_hooks(self, ctx: WorkflowContext) -> None:
        for hook in self._registry.before_hooks:
            await hook(ctx)

    def _workflow_context(self, job: ClaimedJob, replay: Replay) -> WorkflowContext:
        context: WorkflowContext = self._make_context(
            job, WorkflowContext, replay=replay, wake=self._wake
        )
        return context


class _Attempt:
    """One attempt: before hooks and the handler, then (told how it ended) after hooks.

    Slotted: one lives per running job, tens of thousands at once in a wide pool."""

    __slots__ = ("_ctx", "_definition", "_job", "_make_context", "_payload", "_registry")

    def __init__(
        self,
        registry: Registry,
        definition: JobDefinition[Any, Any],
        make_context: Any,
        job: ClaimedJob,
    ) -> None:
        self._registry = registry
        self._definition = definition
        self._make_context = make_context
        self._job = job
        self._ctx: JobContext | None = None  # once started: the handler's context
        self._payload: Any = None  # and its payload

    def cancelled(self) -> Ended | None:
        return None

    def start(self) -> Awaitable[Any]:
        job, definition = self._job, self._definition
        payload: Any = None
        args: tuple[Any, ...] = ()
        if definition.cron is not None:
            tick: CronTick = decode_payload(definition.codec, job.name, CronTick, job.payload)
            zone = definition.cron.schedule.zone
            at = dt.datetime.fromtimestamp(tick.scheduled_at, zone)
            ctx: JobContext = self._make_context(job, CronContext, scheduled_at=at)
        else:
            ctx = self._make_context(job, JobContext)
            if definition.takes_payload:
                payload = decode_payload(
                    definition.codec, job.name, definition.payload_type, job.payload
                )
                args = (payload,)
        self._ctx, self._payload = ctx, payload
        if self._registry.before_hooks:
            return self._hooks_then(ctx, args)
        return definition.handler(ctx, *args)  # awaited by the worker itself

    async def _hooks_then(self, ctx: JobContext, args: tuple[Any, ...]) -> Any:
        for hook in self._registry.before_hooks:
            await hook(ctx)
        return await self._definition.handler(ctx, *args)

    def result(self, value: object) -> str | None:
        definition = self._definition
        job = f"job {self._job.name!r}"
        return encode_result(definition.codec, job, definition.result_type, value)

    @property
    def watched(self) -> bool:
        return bool(self._registry.after_hooks)

    async def end(self, outcome: AttemptOutcome, error: BaseException | None) -> None:
        if self._ctx is None:  # its payload could not even be decoded
            return
        await _after_hooks(self._registry, AttemptEnd(self._ctx, self._payload, outcome, error))


async def _after_hooks(registry: Registry, end: AttemptEnd) -> None:
    for hook in registry.after_hooks:
        try:
            await hook(end)
        except Exception:
            end.ctx.log.exception("an after_perform hook failed")


class _Measure:
    """Tells the process's metrics when an attempt starts and how it ended."""

    def __init__(self, metrics: Metrics, clock: Clock, job: ClaimedJob, retry: Retry) -> None:
        self._metrics, self._clock, self._job, self._retry = metrics, clock, job, retry
        self._began: float | None = None

    def started(self) -> None:
        job = self._job
        self._began = trio.current_time()
        self._metrics.started(job.queue, job.name, self._clock.now() - job.run_at)

    def ended(self, outcome: AttemptOutcome, error: BaseException | None) -> None:
        if self._began is None:  # not started (cancelled between claim and start)
            return
        job = self._job
        will_retry = False
        if error is not None:  # its attempt count is the job's, fixed at enqueue
            retry = attrs.evolve(self._retry, max_attempts=job.max_attempts)
            will_retry = failure_outcome(retry, job.attempt, error, 0.0).retry_at is not None
        seconds = trio.current_time() - self._began
        self._metrics.ended(job.queue, job.name, outcome, will_retry=will_retry,
                            seconds=seconds)  # fmt: skip


class _MeasuredAttempt(_Attempt):
    """An attempt that also tells the process's metrics when it starts and how it ended."""

    __slots__ = ("_measure",)

    def __init__(
        self,
        registry: Registry,
        definition: JobDefinition[Any, Any],
        make_context: Any,
        job: ClaimedJob,
        measure: _Measure,
    ) -> None:
        super().__init__(registry, definition, make_context, job)
        self._measure = measure

    def start(self) -> Awaitable[Any]:
        self._measure.started()
        return super().start()

    @property
    def watched(self) -> bool:
        return True

    async def end(self, outcome: AttemptOutcome, error: BaseException | None) -> None:
        self._measure.ended(outcome, error)
        await super().end(outcome, error)


class _WorkflowRun:
    """One attempt of a workflow run, as a job's attempt goes: metrics, the driver (which
    runs the before hooks once the run's context exists), then the after hooks. A
    suspension is its own outcome (``AttemptOutcome.SUSPENDED``)."""

    def __init__(
        self,
        registry: Registry,
        driver: WorkflowAttempt,
        job: ClaimedJob,
        measure: _Measure | None,
    ) -> None:
        self._registry, self._driver, self._job, self._measure = registry, driver, job, measure

    def cancelled(self) -> Ended | None:
        return self._driver.cancelled()

    def start(self) -> Awaitable[str | Ended | None]:
        if self._measure is not None:
            self._measure.started()
        return self._driver.run()

    def result(self, value: object) -> str | Ended | None:
        return cast("str | Ended | None", value)  # what the driver's run returned

    @property
    def watched(self) -> bool:
        return self._measure is not None or bool(self._registry.after_hooks)

    async def end(self, outcome: AttemptOutcome, error: BaseException | None) -> None:
        if self._measure is not None:
            self._measure.ended(outcome, error)
        ctx = self._driver.context
        if ctx is None:  # its record was never loaded: the handler had no context
            return
        try:
            payload = self._driver.payload() if self._registry.after_hooks else None
        except PayloadError:  # the handler did not get it either: the hooks get None
            payload = None
        await _after_hooks(self._registry, AttemptEnd(ctx, payload, outcome, error))
