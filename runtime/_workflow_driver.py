"""The workflow driver: one attempt of a run, as the queue's worker runs it (the actors'
``Attempt``). It loads the run's record, builds the :class:`~trioforge._workflow_replay.Replay`
the handler's context makes its calls through, and turns how the handler ended into the
run's outcome: done, suspended until a wake time, retried, or undone by its compensations
(see :mod:`trioforge._workflow` for the theory of operation).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from trioforge._codec import NO_PAYLOAD, decode_payload, encode_result
from trioforge._core.errors import (
    ChildFailed,
    DatabaseUnavailableError,
    NonDeterminismError,
    StepFailed,
    WorkflowTimeoutError,
)
from trioforge._core.retry import discard_reason, failure_outcome
from trioforge._core.states import Cancelled, Compensated, Discarded, Failed, Released, Suspended
from trioforge._workflow import WorkflowContext
from trioforge._workflow_replay import Compensation, LeaseLost, Replay, StopReplay, Suspend
from trioforge.actors import Ended, RunningJobs, StepStarts, StorageHandle, events
from trioforge.actors.attempts import format_error
from trioforge.storage import ClaimedJob, StepKind, StepRecord, StepStatus, WorkflowRecord, ops
from trioforge.storage._records import OutcomeEvent

if TYPE_CHECKING:
    from trioforge._core.clock import Clock
    from trioforge._registry import JobDefinition
    from trioforge.otel import Tracing

__all__ = ["WorkflowAttempt"]

log = logging.getLogger("trioforge.workflow")


def _suspension(exc: BaseException) -> Suspend | None:
    """The earliest suspension ``exc`` (or a group of them, from the application's nursery)
    carries."""
    if isinstance(exc, Suspend):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found, _ = exc.split(Suspend)
        if found is not None:
            inner = [s for s in map(_suspension, found.exceptions) if s is not None]
            return min(inner, key=lambda s: s.run_at, default=None)
    return None


def _holds(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` is, or (a group) holds anywhere, an exception of ``kind``."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(kind)[0] is not None
    return isinstance(exc, kind)


class WorkflowAttempt:
    """One attempt of a workflow run: load the record, replay, go on, suspend or undo."""

    def __init__(
        self,
        definition: JobDefinition[Any, Any],
        job: ClaimedJob,
        make_context: Callable[[ClaimedJob, Replay], WorkflowContext],
        *,
        storage: StorageHandle,
        running: RunningJobs,
        starts: StepStarts,
        clock: Clock,
        tracing: Tracing | None = None,
        before: Callable[[WorkflowContext], Awaitable[None]] | None = None,
    ) -> None:
        assert definition.workflow is not None
        self._definition = definition
        self._spec = definition.workflow
        self._job = job
        self._make_context = make_context
        self._storage = storage
        self._running = running
        self._starts = starts
        self._clock = clock
        self._tracing = tracing
        self._now = clock.now
        self._deadline = clock.deadline
        self._replay: Replay | None = None
        self._before = before
        #: The handler's context, once the record is loaded (for the after hooks).
        self.context: WorkflowContext | None = None

    @property
    def watched(self) -> bool:
        return False

    async def end(self, outcome: object, error: BaseException | None) -> None:
        del outcome, error

    def cancelled(self) -> Ended | None:
        """Cancelled while it ran (or before it started): unless it surely has nothing to
        undo, come back at once to undo it. The cancel request stays on the row until the
        undoing starts, so the next attempt knows."""
        replay = self._replay
        if replay is None or replay.marker() is not None or replay.undoable():
            return Ended(Suspended(self._now()))
        return None

    async def run(self) -> str | Ended | None:
        job = self._job
        op = ops.LoadWorkflow(job.id, job.lease)
        try:
            record: WorkflowRecord | None = await self._storage.call(op)
        except DatabaseUnavailableError as exc:
            log.warning("run %d: record not loaded (%s); handed back", job.id, exc)
            return Ended(Released())
        if record is None:
            return Ended(Released())  # the lease is gone: the write is fenced out anyway
        replay = Replay(
            job, record, version=self._spec.version, codec=self._definition.codec,
            storage=self._storage, running=self._running, starts=self._starts,
            clock=self._clock, tracing=self._tracing,
        )  # fmt: skip
        ctx = self._make_context(job, replay)
        self._replay, self.context = replay, ctx
        if replay.resumed:
            events.log_event(events.resumed(job, replay.recorded))
        try:
            return await self._go(ctx, replay, record)
        except BaseException as exc:
            if _holds(exc, LeaseLost):
                return Ended(Released())
            suspend = _suspension(exc)
            if suspend is None:
                raise
            run_at = self._capped(replay, record.created_at, suspend.run_at)
            return Ended(Suspended(run_at), why=suspend.why)

    def _capped(self, replay: Replay, created_at: float, run_at: float) -> float:
        """A suspended run wakes by its deadline at the latest (to be undone then), unless
        it is being undone already."""
        timeout = self._spec.timeout
        if timeout is None or replay.marker() is not None:
            return run_at
        return min(run_at, created_at + timeout)

    async def _go(
        self, ctx: WorkflowContext, replay: Replay, record: WorkflowRecord
    ) -> str | Ended | None:
        marker = replay.marker()
        job = self._job
        forward = marker is None and not record.cancel_requested
        forward = forward and job.attempt <= job.max_attempts
        try:
            if self._before is not None:
                await self._before(ctx)
        except Exception as exc:
            # A before hook that fails fails the attempt: going forward, as the handler's
            # error would (retried, or undone at the last); an undoing attempt is retried.
            ended = await self._failed(ctx, replay, exc, collect=True) if forward else None
            if ended is None:
                raise
            return ended
        if marker is not None:
            if record.cancel_requested:  # asked again while undoing: it is being done
                await replay.write(marker, clear_cancel=True)
            return await self._compensate(ctx, replay, marker, None)
        if record.cancel_requested:
            await self._collect(ctx, replay, stop_at=None)
            return await self._undo(ctx, replay, "cancelled", "cancelled by request", None)
        if job.attempt > job.max_attempts:  # lost on its last attempt: rescued to be undone
            lost = f"attempt {job.max_attempts} lost: its worker stopped heartbeating"
            await self._collect(ctx, replay, stop_at=None)
            return await self._undo(ctx, replay, "dead", f"{lost}; no attempts left", None)
        payload = self._payload()
        timeout = self._spec.timeout
        ends_at = math.inf if timeout is None else record.created_at + timeout
        late = WorkflowTimeoutError(
            f"workflow run {ctx.run_id} went past its timeout of {timeout}s"
        )
        if self._now() >= ends_at:  # woken at its deadline: undo it, go no further
            await self._collect(ctx, replay, stop_at=None)
            return await self._undo(ctx, replay, "dead", format_error(late), late)
        try:
            with trio.move_on_at(self._deadline(ends_at)) as scope:
                value = await self._definition.handler(ctx, *payload)
            if scope.cancelled_caught:
                raise late
            replay.check_replayed_all()
        except Exception as exc:
            ended = await self._failed(ctx, replay, exc)
            if ended is None:
                raise  # retried by the workflow's own policy, like any job
            return ended
        definition = self._definition
        return encode_result(
            definition.codec, f"job {definition.name!r}", definition.result_type, value
        )

    async def _failed(
        self, ctx: WorkflowContext, replay: Replay, exc: Exception, *, collect: bool = False
    ) -> Ended | None:
        """How the run ends when going forward raised ``exc``: failed for good, discarded
        or undone; None when the workflow's own retry policy retries it. ``collect``: the
        handler did not run, so learn the compensations before undoing."""
        if _holds(exc, NonDeterminismError):
            return Ended(Failed(None), error=format_error(exc))
        reason = discard_reason(exc)
        outcome, why = ("discarded", reason) if reason is not None else ("dead", format_error(exc))
        if reason is None and not _holds(exc, (StepFailed, ChildFailed, WorkflowTimeoutError)):
            retry = self._definition.retry
            if failure_outcome(retry, self._job.attempt, exc, 0.0).retry_at is not None:
                return None  # retried by the workflow's own policy, like any job
        if collect:
            await self._collect(ctx, replay, stop_at=None)
        return await self._undo(ctx, replay, outcome, why, exc)

    def payload(self) -> Any:
        """The run's decoded payload (None for a workflow that takes none)."""
        args = self._payload()
        return args[0] if args else None

    def _payload(self) -> tuple[Any, ...]:
        definition = self._definition
        if definition.payload_type is NO_PAYLOAD:
            return ()
        return (
            decode_payload(
                definition.codec, definition.name, definition.payload_type, self._job.payload
            ),
        )

    async def _collect(self, ctx: WorkflowContext, replay: Replay, stop_at: int | None) -> None:
        """Replay the handler only to learn the compensations of its completed steps."""
        with replay.collect(stop_at):
            try:
                await self._definition.handler(ctx, *self._payload())
            except BaseException as exc:
                if not (isinstance(exc, Exception) or _holds(exc, StopReplay)):
                    raise

    async def _undo(
        self,
        ctx: WorkflowContext,
        replay: Replay,
        outcome: str,
        reason: str,
        error: BaseException | None,
    ) -> Ended:
        """The run ends ``outcome`` (dead, discarded, cancelled): undo its completed steps
        first, if it has any to undo."""
        if not replay.compensations:
            ends: dict[str, OutcomeEvent] = {"cancelled": Cancelled(), "discarded": Discarded()}
            return Ended(ends.get(outcome, Failed(None)), error=reason)
        seq = replay.free_seq()
        why = json.dumps({"outcome": outcome, "reason": reason})
        marker = StepRecord(seq, StepKind.COMPENSATING, "compensating", StepStatus.COMPLETED, 1,
                            why, None, None, False, self._now(), self._now())  # fmt: skip
        await replay.write(marker, clear_cancel=True)
        if error is not None:
            replay.log.info("run %d is being undone: %s", replay.run_id, reason.splitlines()[-1])
        return await self._compensate(ctx, replay, marker, list(replay.compensations))

    async def _compensate(
        self,
        ctx: WorkflowContext,
        replay: Replay,
        marker: StepRecord,
        undos: list[Compensation] | None,
    ) -> Ended:
        if undos is None:
            await self._collect(ctx, replay, stop_at=marker.seq)
            undos = list(replay.compensations)
        reason = json.loads(marker.result or "{}").get("reason", "")
        done = {e.name: e for e in replay.entries.values() if e.kind is StepKind.COMPENSATION}
        for undo in reversed(undos):
            entry = done.get(undo.name)
            if entry is not None and entry.status is StepStatus.COMPLETED:
                continue
            seq = entry.seq if entry is not None else replay.free_seq()
            try:
                await replay.run_step(seq, StepKind.COMPENSATION, undo.name, undo.fn, undo.args,
                                    undo.retry, undo.timeout, entry, False)  # fmt: skip
            except StepFailed as exc:
                return Ended(
                    Failed(None),
                    error=f"compensation of step {undo.name!r} failed after {exc.attempts} "
                    f"attempt(s): {exc.error}\nthe run was being undone because: {reason}",
                )
        return Ended(Compensated(), error=reason)
