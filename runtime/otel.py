"""OpenTelemetry tracing (the ``otel`` extra: ``pip install 'trioforge[otel]'``).

``open_runtime(..., tracing=Tracing())`` / ``open_client(..., tracing=Tracing())`` turn it
on; nothing imports this module (or opentelemetry) otherwise. Then:

- an enqueue is a PRODUCER span, ``trioforge enqueue <job name>`` (one per call, however
  many jobs it stores), and its W3C trace context (``traceparent``/``tracestate``) is
  stored with each job; a workflow run's ``start_child`` stores the run attempt's context;
- every attempt is a CONSUMER span, ``trioforge run <job name>``, with a link to the
  stored context (retries link to the same one). Following OpenTelemetry's messaging
  conventions it starts a trace of its own (``propagation="link"``, the default), since an
  attempt may run long after, and more than once for, the request that enqueued it; with
  ``propagation="child"`` it is also a child of the stored context, in the enqueuer's trace;
- a workflow step that runs (not one replayed from the record) is a span inside its
  run's attempt span;
- the web app's ``POST /api/jobs/{name}`` (and ``/api/workflows/{name}``) enqueues inside
  the request's own trace context (``traceparent`` header), when its client traces.

Spans go to ``tracer_provider``, or to the global one (``opentelemetry.trace.
set_tracer_provider``, or the ``opentelemetry-instrument`` launcher) when it is None.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

from trioforge._core.errors import ConfigurationError
from trioforge._core.extras import needs_extra
from trioforge._core.outcomes import AttemptOutcome
from trioforge.actors.attempts import Attempt, Ended
from trioforge.storage import ClaimedJob, NewJob

with needs_extra("otel", "Tracing (trioforge.otel)"):
    from opentelemetry import trace
    from opentelemetry.context import Context, attach, detach
    from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["Tracing"]

log = logging.getLogger("trioforge.otel")

#: The attempt outcomes whose span's status is ERROR: the job's code failed (or gave up).
_ERRORS = frozenset(
    {AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT, AttemptOutcome.DISCARDED,
     AttemptOutcome.COMPENSATED}
)  # fmt: skip

_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """Where trioforge's spans go, and how an attempt's span relates to its enqueue."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        propagation: Literal["link", "child"] = "link",
    ) -> None:
        if propagation not in ("link", "child"):
            raise ConfigurationError(f"propagation must be 'link' or 'child', got {propagation!r}")
        self.propagation = propagation
        self._tracer = trace.get_tracer("trioforge", tracer_provider=tracer_provider)

    # --- the enqueue side ---------------------------------------------------------------

    def trace_context(self) -> str | None:
        """The current context as stored with a job (None outside any sampled span)."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return json.dumps(carrier, sort_keys=True) if carrier else None

    @contextmanager
    def incoming(self, headers: Mapping[str, str]) -> Iterator[None]:
        """The trace context of an incoming request (its W3C ``traceparent`` and
        ``tracestate`` headers, lower-case keys) current inside the block, so an enqueue
        there joins the caller's trace; headers without one change nothing."""
        token = attach(_PROPAGATOR.extract(headers))
        try:
            yield
        finally:
            detach(token)

    @contextmanager
    def enqueue_span(self, name: str) -> Iterator[Span]:
        """The PRODUCER span of one enqueue call of job ``name``, current while it runs."""
        attributes = {
            "messaging.system": "trioforge",
            "messaging.operation.type": "send",
            "trioforge.job.name": name,
        }
        with self._tracer.start_as_current_span(
            f"trioforge enqueue {name}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            yield span

    @staticmethod
    def enqueued(span: Span, jobs: Sequence[NewJob], ids: Sequence[int]) -> None:
        """Name what the enqueue stored on its span."""
        if not jobs or not span.is_recording():
            return
        span.set_attribute("messaging.destination.name", jobs[0].queue)
        if len(ids) == 1:
            span.set_attribute("trioforge.job.id", ids[0])
        else:
            span.set_attribute("messaging.batch.message_count", len(ids))

    # --- the worker side ----------------------------------------------------------------

    def attempt(self, job: ClaimedJob, inner: Attempt) -> Attempt:
        """``inner`` run inside the attempt's CONSUMER span, ended with its outcome."""
        return _TracedAttempt(self, job, inner)

    def _start_attempt(self, job: ClaimedJob) -> Span:
        stored = _stored_span(job)
        links = [Link(stored)] if stored is not None else []
        parent = Context()  # not the worker task's: that is whatever opened the runtime
        if stored is not None and self.propagation == "child":
            parent = trace.set_span_in_context(trace.NonRecordingSpan(stored), parent)
        return self._tracer.start_span(
            f"trioforge run {job.name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "trioforge",
                "messaging.operation.type": "process",
                "messaging.destination.name": job.queue,
                "trioforge.job.id": job.id,
                "trioforge.job.name": job.name,
                "trioforge.job.attempt": job.attempt,
            },
        )

    @contextmanager
    def step_span(self, run_name: str, step: str, attempt: int) -> Iterator[Span]:
        """A workflow step's span, inside the current (the run attempt's) span; a step that
        raises has status ERROR and the exception recorded."""
        with self._tracer.start_as_current_span(
            f"trioforge step {step}",
            attributes={"trioforge.job.name": run_name, "trioforge.step.name": step,
                        "trioforge.step.attempt": attempt},
        ) as span:  # fmt: skip
            yield span


def _stored_span(job: ClaimedJob) -> trace.SpanContext | None:
    """The enqueuer's span context stored with ``job``, if there is a valid one (a
    malformed one is ignored: tracing never fails a job)."""
    if job.trace_context is None:
        return None
    stored = _parsed(job.trace_context)
    if stored is None:
        log.warning("job %d: stored trace context is not valid; ignored", job.id)
    return stored


@functools.lru_cache(maxsize=256)  # the jobs of one enqueue_many, a job's retries: one text
def _parsed(text: str) -> trace.SpanContext | None:
    try:
        carrier = json.loads(text)
    except ValueError:
        return None
    if not isinstance(carrier, dict):
        return None
    context = _PROPAGATOR.extract({str(k): str(v) for k, v in carrier.items()})
    stored = trace.get_current_span(context).get_span_context()
    return stored if stored.is_valid else None


class _TracedAttempt:
    """An attempt inside its span: the span starts as the attempt runs, is current while the
    handler and the after hooks run, and ends in ``end`` (which the worker calls however
    the attempt ended, cancelled or timed out too, shielded)."""

    def __init__(self, tracing: Tracing, job: ClaimedJob, inner: Attempt) -> None:
        self._tracing, self._job, self._inner = tracing, job, inner
        self._span: Span | None = None

    def cancelled(self) -> Ended | None:
        return self._inner.cancelled()

    @property
    def watched(self) -> bool:
        return True

    def start(self) -> Awaitable[object]:
        return self._run()

    async def _run(self) -> object:
        self._span = span = self._tracing._start_attempt(self._job)
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            return await self._inner.start()

    def result(self, value: object) -> str | Ended | None:
        return self._inner.result(value)

    async def end(self, outcome: AttemptOutcome, error: BaseException | None) -> None:
        span = self._span
        if span is None:  # it never started
            if self._inner.watched:
                await self._inner.end(outcome, error)
            return
        try:
            if self._inner.watched:
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    await self._inner.end(outcome, error)
        finally:
            span.set_attribute("trioforge.job.outcome", outcome.value)
            if outcome in _ERRORS:
                if error is not None:
                    span.record_exception(error)
                why = outcome.value if error is None else f"{type(error).__name__}: {error}"
                span.set_status(Status(StatusCode.ERROR, why))
            span.end()
