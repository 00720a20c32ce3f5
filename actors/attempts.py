"""The attempt protocol and its decision: what the application hands a worker (a
``JobTable`` and its ``Attempt``s) and what an attempt's end records (``decide_outcome``).

Pure: nothing here waits or writes. The worker that runs an attempt is in
:mod:`trioforge.actors.queue`; the writer that records the decided outcome is in
:mod:`trioforge.actors.outcome_writer`.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Mapping
from typing import Protocol

import attrs

from trioforge._core.flow import JobLimits
from trioforge._core.outcomes import AttemptOutcome
from trioforge._core.retry import Retry, discard_reason, failure_outcome
from trioforge._core.states import Cancelled as CancelledEvent
from trioforge._core.states import Discarded as DiscardedEvent
from trioforge._core.states import Failed, Succeeded
from trioforge._core.states import Released as ReleasedEvent
from trioforge.actors.events import headline
from trioforge.actors.running import StopReason
from trioforge.storage import ClaimedJob, Outcome
from trioforge.storage._records import OutcomeEvent

__all__ = [
    "MAX_ERROR_CHARS",
    "Attempt",
    "Ended",
    "JobTable",
    "decide_outcome",
    "format_error",
    "unstartable_outcome",
]

#: Longest traceback text kept per failed attempt.
MAX_ERROR_CHARS = 8000

_SUCCEEDED = Succeeded()  # immutable and without fields: one serves every attempt
_DEAD = Failed(retry_at=None)


@attrs.frozen
class Ended:
    """An attempt that decided its own outcome (a workflow run suspending, undone, or
    failing for good): what to record, fenced by the lease like any outcome."""

    event: OutcomeEvent
    result: str | None = None
    error: str | None = None
    #: What a suspended run waits for (``sleep``, ``signal 'paid'``...), for its log line.
    why: str | None = None


class Attempt(Protocol):
    """One attempt of a job, as the application runs it."""

    def start(self) -> Awaitable[object]:
        """Get the attempt ready (decode its payload, make its context) and return what runs
        it: the handler's own coroutine when nothing goes before it, so that the worker
        awaits the handler with no frame between them (a wide pool holds one per running
        job). Raises what getting ready raised (a payload that cannot be decoded)."""
        ...

    def result(self, value: object) -> str | Ended | None:
        """What ``value``, returned by what :meth:`start` returned, records: the JSON text
        of the handler's result, or how the attempt ended when it decided that itself."""
        ...

    def cancelled(self) -> Ended | None:
        """What to record when a cancel request stopped the attempt (None: cancelled)."""
        ...

    @property
    def watched(self) -> bool:
        """Whether ``end`` has anyone to tell (no after hooks: the worker skips it)."""
        ...

    async def end(self, outcome: AttemptOutcome, error: BaseException | None) -> None:
        """Tell the application how the attempt ended (nothing if ``start`` was never called)."""
        ...


class JobTable(Protocol):
    """What workers need from the application's registry. When :meth:`policy`,
    :meth:`heartbeat_timeout` or :meth:`attempt` raises for a job (its stored settings are
    invalid), the job goes dead without an attempt (:func:`unstartable_outcome`)."""

    def names(self) -> frozenset[str]: ...

    def limits(self) -> Mapping[str, JobLimits]:
        """The rate and concurrency limits of the jobs that have any, by job name."""
        ...

    def policy(self, job: ClaimedJob) -> tuple[Retry, float | None]:
        """The job's retry policy and timeout in seconds (None: no timeout), in its queue
        (the attempt count comes from ``job.max_attempts``, set at enqueue)."""
        ...

    def heartbeat_timeout(self, job: ClaimedJob) -> float | None:
        """Seconds the handler may go without ``ctx.heartbeat``/``ctx.progress`` before the
        attempt fails as timed out (None: no such limit)."""
        ...

    def attempt(self, job: ClaimedJob) -> Attempt:
        """A new, not yet started attempt of ``job``."""
        ...


def format_error(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= MAX_ERROR_CHARS else "..." + text[-MAX_ERROR_CHARS:]


def decide_outcome(
    job: ClaimedJob,
    retry: Retry,
    *,
    reason: StopReason | None,
    error: BaseException | None,
    result: str | Ended | None,
    now: float,
    u: float = 0.0,
    on_cancel: Ended | None = None,
) -> Outcome | None:
    """Turn how an attempt ended into the fenced outcome to write (None: write nothing)."""
    if reason is StopReason.LOST:
        return None
    if reason is StopReason.USER:
        if on_cancel is not None:
            return Outcome(job.id, job.lease, on_cancel.event, on_cancel.result, on_cancel.error)
        return Outcome(job.id, job.lease, CancelledEvent(), error="cancelled by request")
    if reason is StopReason.SHUTDOWN:
        return Outcome(job.id, job.lease, ReleasedEvent())
    if isinstance(result, Ended):
        return Outcome(job.id, job.lease, result.event, result.result, result.error)
    if error is None:
        return Outcome(job.id, job.lease, _SUCCEEDED, result=result)
    reason_text = discard_reason(error)  # a Discard, or a group holding one
    if reason_text is not None:
        return Outcome(job.id, job.lease, DiscardedEvent(), error=reason_text)
    if retry.max_attempts != job.max_attempts:  # fixed at enqueue, maybe overridden there
        retry = attrs.evolve(retry, max_attempts=job.max_attempts)
    event = failure_outcome(retry, job.attempt, error, now, u)
    return Outcome(job.id, job.lease, event, error=format_error(error))


def unstartable_outcome(job: ClaimedJob, error: Exception) -> Outcome:
    """What an attempt that could not even begin records (``JobTable.policy`` or
    ``attempt`` raised): dead, attempts left or not, since the same stored job would fail
    the same way on every retry, and one line that says why."""
    text = f"attempt {job.attempt} could not begin, so it is not retried: {headline(error)}"
    return Outcome(job.id, job.lease, _DEAD, error=text)
