"""Durable workflows: runs that replay their handler against a durable record.

Theory of operation
-------------------
A workflow run is a job row; each attempt runs the handler from the top. Every durable call
(a step, a sleep, a signal wait, a child's start) takes the next sequence number and looks
at the run's record for it:

* recorded and finished: the recorded result is returned at once (a step's function does
  not run again), after checking that the code made the same kind of call with the same
  name (else :class:`~trioforge.NonDeterminismError`);
* not recorded: the call does its work and records it, one fenced write each, so the run's
  lease decides, as for any outcome, whose record counts.

A call that must wait (a sleep not yet over, a signal not yet sent, children not yet done,
a failed step's next attempt) raises ``_Suspend`` out of the handler: the attempt ends as a
``Suspended`` outcome, the row waits as ``scheduled`` until the wake time and no worker slot
is held. Signals and children ending make the row due at once.

When a run fails for good (a step out of attempts, ``Discard``, its deadline) or is
cancelled, the ``compensate`` functions of its completed steps run, newest first, each a
durable, retried step; a ``compensating`` entry marks where going forward stopped. A resumed
run past that entry replays its handler only to learn the compensations (the code up to
the entry is deterministic), then carries on undoing.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import typing
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Generic, TypeVar, TypeVarTuple, overload

import attrs
import trio

from trioforge._codec import DEFAULT_CODEC, NO_PAYLOAD, Codec, decode_payload, encode_result
from trioforge._context import JobContext, job_fields
from trioforge._core.durations import optional_seconds
from trioforge._core.errors import (
    ChildFailed,
    DatabaseUnavailableError,
    InvalidArgumentError,
    InvalidStateError,
    JobTimeoutError,
    NonDeterminismError,
    PayloadError,
    StepFailed,
    WorkflowTimeoutError,
)
from trioforge._core.retry import Retry, discard_reason, failure_outcome
from trioforge._core.states import (
    Cancelled,
    Compensated,
    Discarded,
    Failed,
    JobState,
    Released,
    Suspended,
)
from trioforge._core.text import check_storable
from trioforge._lifespan import StateT
from trioforge.actors import Ended, StorageHandle, events
from trioforge.actors.queue import format_error
from trioforge.storage import (
    NEVER,
    ClaimedJob,
    NewJob,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
    WorkflowRecord,
    ops,
)
from trioforge.storage._records import OutcomeEvent

if TYPE_CHECKING:
    import datetime as dt

    from trioforge._client import JobRef
    from trioforge._core.clock import Clock
    from trioforge._registry import JobDefinition

__all__ = ["ChildHandle", "WorkflowAttempt", "WorkflowContext", "DEFAULT_STEP_RETRY"]

log = logging.getLogger("trioforge.workflow")

_T = TypeVar("_T")
_P = TypeVar("_P")
_R = TypeVar("_R")
_R_co = TypeVar("_R_co", covariant=True)
_Args = TypeVarTuple("_Args")

#: A step's retry policy unless it names one.
DEFAULT_STEP_RETRY = Retry(max_attempts=3)
#: Pauses between tries of a record write while the database is away.
_WRITE_RETRY_FIRST, _WRITE_RETRY_MAX = 0.05, 0.5


class _Suspend(BaseException):
    """Unwinds the handler so the run waits until ``run_at``. A BaseException: an
    application's ``except Exception`` must not swallow it."""

    def __init__(self, run_at: float, why: str) -> None:
        super().__init__(run_at)
        self.run_at = run_at
        #: What the run waits for (its log line says it).
        self.why = why


class _StopReplay(BaseException):
    """Ends a replay that only collects compensations, at the first unfinished entry."""


class _LeaseLost(BaseException):
    """The run's lease went to another worker: this attempt must stop writing."""


def _suspension(exc: BaseException) -> _Suspend | None:
    """The earliest suspension ``exc`` (or a group of them, from the application's nursery)
    carries."""
    if isinstance(exc, _Suspend):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found, _ = exc.split(_Suspend)
        if found is not None:
            inner = [s for s in map(_suspension, found.exceptions) if s is not None]
            return min(inner, key=lambda s: s.run_at, default=None)
    return None


def _holds(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` is, or (a group) holds anywhere, an exception of ``kind``."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(kind)[0] is not None
    return isinstance(exc, kind)


@attrs.frozen
class ChildHandle(Generic[_R_co]):
    """A child job started by :meth:`WorkflowContext.start_child`; pass it to ``gather``,
    which returns its result (typed ``R`` for a child of a ``JobDefinition[P, R]``)."""

    job_id: int
    name: str
    #: What its result decodes to: the child handler's return annotation (Any: none).
    result_type: Any = Any


@attrs.frozen
class _Compensation:
    """A completed step's undo, learnt from the handler (functions are never stored)."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    retry: Retry
    timeout: float | None


def _return_type(fn: Callable[..., Any]) -> Any:
    """What a step's results are encoded and decoded by: ``fn``'s return annotation
    (what it awaits to, for ``-> Awaitable[T]``), Any when it has none."""
    try:
        hint = typing.get_type_hints(fn).get("return", Any)
    except (NameError, TypeError):  # unresolvable, or not a plain function (a partial)
        return Any
    if typing.get_origin(hint) in (Awaitable, Coroutine):
        return typing.get_args(hint)[-1] if typing.get_args(hint) else Any
    return hint


def _seconds(value: float | dt.timedelta | None, what: str) -> float | None:
    return optional_seconds(value, what, error=InvalidArgumentError)


class WorkflowContext(JobContext[StateT]):
    """Passed to workflow handlers: a :class:`JobContext` plus the durable calls.

    The code between durable calls must be deterministic: every resume runs the handler
    from the top, and the record answers the calls already made. Read the time, random
    numbers or outside state inside a step, whose result is recorded.
    """

    def __init__(
        self,
        job: ClaimedJob,
        *,
        record: WorkflowRecord,
        version: int,
        wake: Callable[[str, float], None],
        codec: Codec = DEFAULT_CODEC,
        **services: Any,
    ) -> None:
        super().__init__(job, **services)
        self._wake = wake
        #: The registry's codec: step results, signal payloads and child results.
        self._codec = codec
        #: The version of the workflow this run started on (and resumes on).
        self.version = version
        self._entries = {e.seq: e for e in record.steps}
        self._signals = list(record.signals)
        self._children = {c.id: c for c in record.children}
        self._seq = 0
        self._stop_at: int | None = None  # while collecting: where the forward run stopped
        self._collecting = False
        self._compensations: list[_Compensation] = []
        self._step_names: set[str] = set()
        self._step_key: str | None = None
        self._step_attempt: int | None = None
        self.log = logging.LoggerAdapter(
            logging.getLogger("trioforge.job"), job_fields(job) | {"run_id": job.id}
        )

    @property
    def run_id(self) -> int:
        """The run's id: its job id (cancel, progress, ``client.workflow``)."""
        return self.job_id

    @property
    def step_key(self) -> str:
        """A key for the step running now, the same on every attempt of it: hand it to an
        outside service as an idempotency key so a re-run step is not applied twice."""
        if self._step_key is None:
            raise InvalidStateError("step_key is only defined while a step's function runs")
        return self._step_key

    @property
    def step_attempt(self) -> int:
        """The attempt of the step running now: 1, then 2 for its first retry, ... (an
        attempt cut short by a crash, and so never recorded, keeps its number)."""
        if self._step_attempt is None:
            raise InvalidStateError("step_attempt is only defined while a step's function runs")
        return self._step_attempt

    # --- the record ------------------------------------------------------------------

    def _next(self, kind: StepKind, name: str) -> tuple[int, StepRecord | None]:
        seq = self._seq
        if self._stop_at is not None and seq >= self._stop_at:
            raise _StopReplay
        self._seq += 1
        entry = self._entries.get(seq)
        if entry is not None and (entry.kind is not kind or entry.name != name):
            raise NonDeterminismError(
                f"workflow run {self.run_id}: durable call #{seq} is {kind} {name!r}, but the "
                f"run's record has {entry.kind} {entry.name!r} there. The code changed under "
                f"a running version: register changed code as a new version (version="
                f"{self.version + 1}) and keep version {self.version} for its runs"
            )
        if self._collecting and (entry is None or entry.status is not StepStatus.COMPLETED):
            raise _StopReplay
        return seq, entry

    def _free_seq(self) -> int:
        return max(self._entries, default=-1) + 1

    async def _write(
        self,
        entry: StepRecord,
        *,
        consume_signal: int | None = None,
        child: NewJob | None = None,
        clear_cancel: bool = False,
    ) -> StepWrite:
        """Record ``entry``, retrying while the database is away and the lease holds."""
        op = ops.RecordStep(
            self.run_id, self._job.lease, entry, consume_signal, child, clear_cancel
        )
        wait = _WRITE_RETRY_FIRST
        while True:
            try:
                written: StepWrite = await self._storage.call(op)
                break
            except DatabaseUnavailableError as exc:
                expiry = self._running.expiry(self.run_id, self._job.lease)
                if expiry is None or expiry <= self._clock.now():
                    raise _LeaseLost from exc
                self.log.warning("step %r not recorded yet (%s); retrying", entry.name, exc)
                await trio.sleep(wait)
                wait = min(wait * 2, _WRITE_RETRY_MAX)
        if not written.applied:
            raise _LeaseLost
        if written.child_id is not None:
            entry = attrs.evolve(entry, result=json.dumps(written.child_id))
        self._entries[entry.seq] = entry
        return written

    async def _run_step(
        self,
        seq: int,
        kind: StepKind,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        retry: Retry,
        limit: float | None,
        entry: StepRecord | None,
        compensable: bool,
    ) -> str:
        """Run a step (or a compensation) durably; the JSON text of its result."""
        if entry is not None and entry.status is StepStatus.FAILED:
            if entry.wake_at is None:
                raise StepFailed(name, entry.attempt, entry.error)
            if self._clock.now() < entry.wake_at:
                raise _Suspend(entry.wake_at, f"step {name!r} retry")
        attempt = (entry.attempt if entry is not None else 0) + 1
        started = self._clock.now()

        def entry_of(status: StepStatus, **outcome: Any) -> StepRecord:
            now = self._clock.now()
            return StepRecord(seq, kind, name, status, attempt, compensable=compensable,
                              started_at=started, finished_at=now, **outcome)  # fmt: skip

        self._step_key = f"{self.run_id}:{seq}:{name}"
        self._step_attempt = attempt
        tracing = self._client._tracing
        span = nullcontext() if tracing is None else tracing.step_span(self.name, name, attempt)
        try:
            with span, trio.fail_after(math.inf if limit is None else limit):
                value = fn(*args)
                if inspect.isawaitable(value):
                    value = await value
            what = f"{self.name} step {name!r}"
            text = encode_result(self._codec, what, _return_type(fn), value) or "null"
        except trio.TooSlowError:
            error: BaseException = JobTimeoutError(f"step {name!r} ran past {limit}s")
            retry_at = failure_outcome(retry, attempt, error, self._clock.now()).retry_at
        except PayloadError as exc:  # a result that is not JSON: no retry would help
            error, retry_at = exc, None
        except Exception as exc:
            error = exc
            retry_at = failure_outcome(retry, attempt, error, self._clock.now()).retry_at
        else:
            await self._write(entry_of(StepStatus.COMPLETED, result=text))
            return text
        finally:
            self._step_key = self._step_attempt = None
        await self._write(entry_of(StepStatus.FAILED, error=format_error(error), wake_at=retry_at))
        if retry_at is None:
            raise StepFailed(name, attempt, str(error) or type(error).__name__) from error
        raise _Suspend(retry_at, f"step {name!r} retry")

    # --- the durable calls -------------------------------------------------------------

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[[*_Args], Awaitable[_T]],
        *args: *_Args,
        retry: Retry | None = None,
        timeout: float | dt.timedelta | None = None,  # noqa: ASYNC109
        compensate: Callable[[*_Args], object] | None = None,
    ) -> _T: ...
    @overload
    async def step(
        self,
        name: str,
        fn: Callable[[*_Args], _T],
        *args: *_Args,
        retry: Retry | None = None,
        timeout: float | dt.timedelta | None = None,  # noqa: ASYNC109
        compensate: Callable[[*_Args], object] | None = None,
    ) -> _T: ...
    async def step(
        self,
        name: str,
        fn: Callable[[*_Args], Any],
        *args: *_Args,
        retry: Retry | None = None,
        timeout: float | dt.timedelta | None = None,  # noqa: ASYNC109 (per attempt, recorded)
        compensate: Callable[[*_Args], object] | None = None,
    ) -> Any:
        """Run ``fn(*args)`` (sync or async) once per successful completion and record its
        JSON result; on resume return the recorded result without running it. Results
        come back decoded from JSON, the first time too (to ``fn``'s return annotation),
        so every attempt of the run sees the same value. Typed from ``fn``: ``args`` must
        fit its parameters, and the step returns what ``fn`` returns (awaited).

        A failing step is retried by ``retry`` (default 3 attempts) with its backoff spent
        suspended, holding no worker slot; out of attempts it raises
        :class:`~trioforge.StepFailed`. A crash between ``fn`` returning and the record
        runs it again (at least once): use :attr:`step_key` for outside idempotency.
        ``compensate(*args)`` undoes the step if the run later fails or is cancelled.
        ``fn`` runs in the trio thread: a blocking sync function blocks the runtime, so
        make it async (``trio.to_thread.run_sync``) if it waits on I/O.

        Cancellation: cancelling the run cancels ``fn``; nothing is recorded for it.
        """
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError("a step name must be a non-empty string")
        check_storable(name, "step name", InvalidArgumentError)
        if name in self._step_names:
            raise InvalidArgumentError(
                f"step name {name!r} is used twice in this run; give each step its own "
                f"name (in a loop: f'{name}-{{i}}')"
            )
        self._step_names.add(name)
        policy = retry or DEFAULT_STEP_RETRY
        seconds = _seconds(timeout, "a step's timeout")
        seq, entry = self._next(StepKind.STEP, name)
        undo = (
            None if compensate is None else _Compensation(name, compensate, args, policy, seconds)
        )
        if entry is None or entry.status is not StepStatus.COMPLETED:
            await self._run_step(
                seq, StepKind.STEP, name, fn, args, policy, seconds, entry, undo is not None
            )
            entry = self._entries[seq]
        if undo is not None:
            self._compensations.append(undo)
        what = f"result of {self.name} step {name!r}"
        return self._codec.decode(_return_type(fn), entry.result or "null", what)

    def is_step_completed(self, name: str) -> bool:
        """Whether the run's record holds a completed step ``name`` (for code written the
        explicit way: it does not take a sequence number)."""
        return any(
            e.kind is StepKind.STEP and e.name == name and e.status is StepStatus.COMPLETED
            for e in self._entries.values()
        )

    def step_result(self, name: str) -> Any:
        """The recorded JSON result of completed step ``name``; InvalidArgumentError (a
        ValueError) if the run has no such completed step."""
        for e in self._entries.values():
            if e.kind is StepKind.STEP and e.name == name and e.status is StepStatus.COMPLETED:
                return json.loads(e.result or "null")
        raise InvalidArgumentError(f"run {self.run_id} has no completed step {name!r}")

    async def sleep(self, delay: float | dt.timedelta) -> None:
        """Sleep durably for ``delay`` counted from the first time the run got here: the
        run holds no worker slot meanwhile, survives restarts, and never wakes early."""
        seconds = _seconds(delay, "a sleep")
        assert seconds is not None
        await self._sleep(self._clock.now() + seconds)

    async def sleep_until(self, when: dt.datetime) -> None:
        """Sleep durably until ``when`` (an aware datetime); see :meth:`sleep`."""
        if when.tzinfo is None:
            raise InvalidArgumentError("sleep_until needs an aware datetime (with tzinfo)")
        await self._sleep(when.timestamp())

    async def _sleep(self, wake_at: float) -> None:
        seq, entry = self._next(StepKind.SLEEP, "sleep")
        if entry is not None and entry.status is StepStatus.COMPLETED:
            return
        now = self._clock.now()
        if entry is None:
            entry = StepRecord(seq, StepKind.SLEEP, "sleep", StepStatus.RUNNING, 1,
                               wake_at=wake_at, started_at=now)  # fmt: skip
            if wake_at > now:
                await self._write(entry)
        assert entry.wake_at is not None
        if now < entry.wake_at:
            raise _Suspend(entry.wake_at, "sleep")
        await self._write(attrs.evolve(entry, status=StepStatus.COMPLETED, finished_at=now))

    @overload
    async def wait_for_signal(
        self,
        name: str,
        *,
        timeout: float | dt.timedelta | None = None,  # noqa: ASYNC109
        type: type[_T],
    ) -> _T | None: ...
    @overload
    async def wait_for_signal(
        self,
        name: str,
        *,
        timeout: float | dt.timedelta | None = None,  # noqa: ASYNC109
    ) -> Any: ...
    async def wait_for_signal(
        self,
        name: str,
        *,
        timeout: float | dt.timedelta | None = None,  # noqa: ASYNC109 (durable, recorded)
        type: Any = Any,
    ) -> Any:
        """Wait durably for signal ``name`` (sent with ``client.signal(run_id, name,
        payload)``) and return its payload, decoded to ``type`` if given (typed ``T |
        None``), else as JSON; None once
        ``timeout`` (counted from the first time the run got here) is over. A signal sent
        before the wait is kept for it; each signal is delivered to one wait. The run holds
        no worker slot while it waits."""
        check_storable(name, "signal name", InvalidArgumentError)
        seconds = _seconds(timeout, "a signal wait's timeout")
        seq, entry = self._next(StepKind.SIGNAL, name)
        what = f"signal {name!r} of {self.name}"
        if entry is not None and entry.status is StepStatus.COMPLETED:
            return None if entry.result is None else self._codec.decode(type, entry.result, what)
        now = self._clock.now()
        signal = next((s for s in self._signals if s.name == name), None)
        if signal is not None:
            self._signals.remove(signal)
            await self._write(
                StepRecord(seq, StepKind.SIGNAL, name, StepStatus.COMPLETED, 1, signal.payload,
                           started_at=entry.started_at if entry else now, finished_at=now),
                consume_signal=signal.id,
            )  # fmt: skip
            return self._codec.decode(type, signal.payload, what)
        if entry is None:
            deadline = None if seconds is None else now + seconds
            entry = StepRecord(seq, StepKind.SIGNAL, name, StepStatus.RUNNING, 1,
                               wake_at=deadline, started_at=now)  # fmt: skip
            await self._write(entry)
        if entry.wake_at is not None and now >= entry.wake_at:
            await self._write(attrs.evolve(entry, status=StepStatus.COMPLETED, finished_at=now))
            return None
        raise _Suspend(NEVER if entry.wake_at is None else entry.wake_at, f"signal {name!r}")

    @overload
    async def start_child(
        self, job: JobDefinition[None, _R], payload: None = None, **options: Any
    ) -> ChildHandle[_R]: ...
    @overload
    async def start_child(
        self, job: JobDefinition[_P, _R], payload: _P, **options: Any
    ) -> ChildHandle[_R]: ...
    @overload
    async def start_child(
        self, job: str, payload: Any = None, **options: Any
    ) -> ChildHandle[Any]: ...
    async def start_child(
        self, job: JobRef, payload: Any = None, **options: Any
    ) -> ChildHandle[Any]:
        """Enqueue ``job`` (a job or a workflow) as this run's child, once: the enqueue and
        its record are one write. ``options`` are ``enqueue``'s (delay, priority, queue,
        ...); the payload is typed as ``enqueue``'s. Cancelling the run cancels its
        unfinished children."""
        definition = self._client._definition(job)
        seq, entry = self._next(StepKind.CHILD, definition.name)
        result_type = definition.result_type
        if entry is not None:
            assert entry.result is not None
            return ChildHandle(int(json.loads(entry.result)), definition.name, result_type)
        [new] = self._client._new_jobs(definition, [payload], **_enqueue_options(options))
        new = attrs.evolve(new, parent_id=self.run_id)
        now = self._clock.now()
        written = await self._write(
            StepRecord(seq, StepKind.CHILD, definition.name, StepStatus.COMPLETED, 1,
                       started_at=now, finished_at=now),
            child=new,
        )  # fmt: skip
        assert written.child_id is not None
        self._wake(new.queue, new.run_at)
        return ChildHandle(written.child_id, definition.name, result_type)

    async def gather(self, *children: ChildHandle[_R]) -> list[_R]:
        """Wait durably until every child is finished and return their results, in order
        (typed as the children's result type: their common base if they differ).
        A child that ended dead, cancelled or compensated raises
        :class:`~trioforge.ChildFailed` (the first in order). The run holds no worker slot
        while it waits; a child's end wakes it."""
        records = [self._children.get(c.job_id) for c in children]
        unfinished = [c for c, r in zip(children, records, strict=True) if r is None or
                      not r.status.is_terminal]  # fmt: skip
        if unfinished:
            if self._collecting:
                raise _StopReplay
            finished = self._client._finished
            for child in unfinished:
                finished.on_finish(child.job_id, self._wake_me)
            raise _Suspend(NEVER, f"{len(unfinished)} child job(s)")
        results = []
        for child, record in zip(children, records, strict=True):
            assert record is not None
            self._client._finished.forget(child.job_id)
            if record.status is not JobState.COMPLETED:
                raise ChildFailed(child.job_id, record.status.value, record.error)
            what = f"result of child {child.job_id}"
            results.append(self._codec.decode(child.result_type, record.result or "null", what))
        return results

    def _wake_me(self) -> None:
        self._wake(self.queue, self._clock.now())


#: What ``start_child`` passes on to the enqueue (``enqueue``'s options, one key).
_CHILD_OPTIONS = frozenset(
    {"delay", "run_at", "priority", "queue", "idempotency_key", "max_attempts", "timeout",
     "requires", "unique_for"}
)  # fmt: skip


def _enqueue_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - _CHILD_OPTIONS
    if unknown:
        raise InvalidArgumentError(
            f"start_child got unknown options {sorted(unknown)}; use {sorted(_CHILD_OPTIONS)}"
        )
    out = {key: options.get(key) for key in ("delay", "run_at", "priority", "queue")}
    out["idempotency_keys"] = [options.get("idempotency_key")]
    out.update((k, v) for k, v in options.items() if k not in out and k != "idempotency_key")
    return out


class WorkflowAttempt:
    """One attempt of a workflow run: load the record, replay, go on, suspend or undo."""

    def __init__(
        self,
        definition: JobDefinition[Any, Any],
        job: ClaimedJob,
        make_context: Callable[[ClaimedJob, WorkflowRecord], WorkflowContext],
        *,
        storage: StorageHandle,
        clock: Clock,
    ) -> None:
        assert definition.workflow is not None
        self._definition = definition
        self._spec = definition.workflow
        self._job = job
        self._make_context = make_context
        self._storage = storage
        self._now = clock.now
        self._deadline = clock.deadline
        self._ctx: WorkflowContext | None = None

    @property
    def watched(self) -> bool:
        return False

    async def end(self, outcome: object, error: BaseException | None) -> None:
        del outcome, error

    def cancelled(self) -> Ended | None:
        """Cancelled while it ran (or before it started): unless it surely has nothing to
        undo, come back at once to undo it. The cancel request stays on the row until the
        undoing starts, so the next attempt knows."""
        ctx = self._ctx
        if ctx is None or _marker(ctx) is not None or _undoable(ctx):
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
        ctx = self._make_context(job, record)
        self._ctx = ctx
        if record.steps:
            events.log_event(events.resumed(job, len(record.steps)))
        try:
            return await self._go(ctx, record)
        except BaseException as exc:
            if _holds(exc, _LeaseLost):
                return Ended(Released())
            suspend = _suspension(exc)
            if suspend is None:
                raise
            run_at = self._capped(ctx, record.created_at, suspend.run_at)
            return Ended(Suspended(run_at), why=suspend.why)

    def _capped(self, ctx: WorkflowContext, created_at: float, run_at: float) -> float:
        """A suspended run wakes by its deadline at the latest (to be undone then), unless
        it is being undone already."""
        timeout = self._spec.timeout
        if timeout is None or _marker(ctx) is not None:
            return run_at
        return min(run_at, created_at + timeout)

    async def _go(self, ctx: WorkflowContext, record: WorkflowRecord) -> str | Ended | None:
        marker = _marker(ctx)
        if marker is not None:
            if record.cancel_requested:  # asked again while undoing: it is being done
                await ctx._write(marker, clear_cancel=True)
            return await self._compensate(ctx, marker, None)
        if record.cancel_requested:
            await self._collect(ctx, stop_at=None)
            return await self._undo(ctx, "cancelled", "cancelled by request", None)
        payload = self._payload()
        timeout = self._spec.timeout
        ends_at = math.inf if timeout is None else record.created_at + timeout
        late = WorkflowTimeoutError(
            f"workflow run {ctx.run_id} went past its timeout of {timeout}s"
        )
        if ctx._clock.now() >= ends_at:  # woken at its deadline: undo it, go no further
            await self._collect(ctx, stop_at=None)
            return await self._undo(ctx, "dead", format_error(late), late)
        try:
            with trio.move_on_at(self._deadline(ends_at)) as scope:
                value = await self._definition.handler(ctx, *payload)
            if scope.cancelled_caught:
                raise late
            _check_replayed_all(ctx)
        except Exception as exc:
            if _holds(exc, NonDeterminismError):
                return Ended(Failed(None), error=format_error(exc))
            reason = discard_reason(exc)
            if reason is not None:
                return await self._undo(ctx, "discarded", reason, exc)
            final = _holds(exc, (StepFailed, ChildFailed, WorkflowTimeoutError))
            retry = self._definition.retry
            if not final and failure_outcome(retry, self._job.attempt, exc, 0.0).retry_at is None:
                final = True
            if not final:
                raise  # retried by the workflow's own policy, like any job
            return await self._undo(ctx, "dead", format_error(exc), exc)
        definition = self._definition
        return encode_result(
            definition.codec, f"job {definition.name!r}", definition.result_type, value
        )

    def _payload(self) -> tuple[Any, ...]:
        definition = self._definition
        if definition.payload_type is NO_PAYLOAD:
            return ()
        return (
            decode_payload(
                definition.codec, definition.name, definition.payload_type, self._job.payload
            ),
        )

    async def _collect(self, ctx: WorkflowContext, stop_at: int | None) -> None:
        """Replay the handler only to learn the compensations of its completed steps."""
        ctx._collecting, ctx._stop_at = True, stop_at
        try:
            await self._definition.handler(ctx, *self._payload())
        except BaseException as exc:
            if not (isinstance(exc, Exception) or _holds(exc, _StopReplay)):
                raise
        finally:
            ctx._collecting, ctx._stop_at = False, None

    async def _undo(
        self, ctx: WorkflowContext, outcome: str, reason: str, error: BaseException | None
    ) -> Ended:
        """The run ends ``outcome`` (dead, discarded, cancelled): undo its completed steps
        first, if it has any to undo."""
        if not ctx._compensations:
            ends: dict[str, OutcomeEvent] = {"cancelled": Cancelled(), "discarded": Discarded()}
            return Ended(ends.get(outcome, Failed(None)), error=reason)
        seq = ctx._free_seq()
        why = json.dumps({"outcome": outcome, "reason": reason})
        marker = StepRecord(seq, StepKind.COMPENSATING, "compensating", StepStatus.COMPLETED, 1,
                            why, None, None, False, ctx._clock.now(), ctx._clock.now())  # fmt: skip
        await ctx._write(marker, clear_cancel=True)
        if error is not None:
            ctx.log.info("run %d is being undone: %s", ctx.run_id, reason.splitlines()[-1])
        return await self._compensate(ctx, marker, list(ctx._compensations))

    async def _compensate(
        self, ctx: WorkflowContext, marker: StepRecord, undos: list[_Compensation] | None
    ) -> Ended:
        if undos is None:
            await self._collect(ctx, stop_at=marker.seq)
            undos = list(ctx._compensations)
        reason = json.loads(marker.result or "{}").get("reason", "")
        done = {e.name: e for e in ctx._entries.values() if e.kind is StepKind.COMPENSATION}
        for undo in reversed(undos):
            entry = done.get(undo.name)
            if entry is not None and entry.status is StepStatus.COMPLETED:
                continue
            seq = entry.seq if entry is not None else ctx._free_seq()
            try:
                await ctx._run_step(seq, StepKind.COMPENSATION, undo.name, undo.fn, undo.args,
                                    undo.retry, undo.timeout, entry, False)  # fmt: skip
            except StepFailed as exc:
                return Ended(
                    Failed(None),
                    error=f"compensation of step {undo.name!r} failed after {exc.attempts} "
                    f"attempt(s): {exc.error}\nthe run was being undone because: {reason}",
                )
        return Ended(Compensated(), error=reason)


def _check_replayed_all(ctx: WorkflowContext) -> None:
    """A handler that returns must have made every call its record holds."""
    leftover = [e for s, e in ctx._entries.items() if s >= ctx._seq]
    if leftover:
        raise NonDeterminismError(
            f"workflow run {ctx.run_id} returned after {ctx._seq} durable calls, but its "
            f"record holds {len(leftover)} more (first: {leftover[0].kind} "
            f"{leftover[0].name!r}); register changed code as a new version"
        )


def _undoable(ctx: WorkflowContext) -> bool:
    """Whether the run has a completed step with an undo, recorded or just run (the
    replay may not have reached the recorded ones yet)."""
    return bool(ctx._compensations) or any(
        e.compensable and e.status is StepStatus.COMPLETED for e in ctx._entries.values()
    )


def _marker(ctx: WorkflowContext) -> StepRecord | None:
    return next((e for e in ctx._entries.values() if e.kind is StepKind.COMPENSATING), None)
