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
a failed step's next attempt) raises ``Suspend`` out of the handler: the attempt ends as a
``Suspended`` outcome, the row waits as ``scheduled`` until the wake time and no worker slot
is held. Signals and children ending make the row due at once.

When a run fails for good (a step out of attempts, ``Discard`` from the handler or a step's
function, its deadline, its worker lost on its last attempt) or is cancelled, the
``compensate`` functions of its completed steps run, newest first, each a durable, retried
step; a ``compensating`` entry marks where going forward stopped. A resumed
run past that entry replays its handler only to learn the compensations (the code up to
the entry is deterministic), then carries on undoing.

Three modules: this one is the user's side (:class:`WorkflowContext`, its durable calls);
:mod:`trioforge._workflow_replay` holds the run's record as an attempt replays it (sequence
numbers, the determinism check, fenced writes, a step run and recorded); and
:mod:`trioforge._workflow_driver` is the actor-facing side (:class:`WorkflowAttempt`: load
the record, replay, suspend or undo).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, TypeVarTuple, overload

import attrs

from trioforge._context import JobContext
from trioforge._core.durations import optional_seconds
from trioforge._core.errors import ChildFailed, InvalidArgumentError, InvalidStateError
from trioforge._core.retry import Retry
from trioforge._core.states import JobState
from trioforge._core.text import check_storable
from trioforge._lifespan import StateT
from trioforge._workflow_replay import Compensation, Replay, StopReplay, Suspend, return_type
from trioforge.storage import NEVER, ClaimedJob, StepKind, StepRecord, StepStatus

if TYPE_CHECKING:
    import datetime as dt

    from trioforge._client import JobRef
    from trioforge._registry import JobDefinition

__all__ = ["DEFAULT_STEP_RETRY", "ChildHandle", "WorkflowContext"]

_T = TypeVar("_T")
_P = TypeVar("_P")
_R = TypeVar("_R")
_R_co = TypeVar("_R_co", covariant=True)
_Args = TypeVarTuple("_Args")

#: A step's retry policy unless it names one.
DEFAULT_STEP_RETRY = Retry(max_attempts=3)


@attrs.frozen
class ChildHandle(Generic[_R_co]):
    """A child job started by :meth:`WorkflowContext.start_child`; pass it to ``gather``,
    which returns its result (typed ``R`` for a child of a ``JobDefinition[P, R]``)."""

    job_id: int
    name: str
    #: What its result decodes to: the child handler's return annotation (Any: none).
    result_type: Any = Any


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
        replay: Replay,
        wake: Callable[[str, float], None],
        **services: Any,
    ) -> None:
        super().__init__(job, **services)
        self._replay = replay
        self._wake = wake
        self._codec = replay.codec
        #: The version of the workflow this run started on (and resumes on).
        self.version = replay.version
        self._step_names: set[str] = set()
        self.log = replay.log

    @property
    def run_id(self) -> int:
        """The run's id: its job id (cancel, progress, ``client.workflow``)."""
        return self.job_id

    @property
    def is_replaying(self) -> bool:
        """True while the handler goes through durable calls the run's record already held
        when this attempt began: their results come from the record, so code between them
        runs again (skip a log line or a metric there with ``if not ctx.is_replaying``).
        False from the first call past the record on, and for a run's first attempt; True
        throughout an attempt that only replays to undo the run."""
        return self._replay.replaying()

    @property
    def is_resumed(self) -> bool:
        """True when the run had recorded entries (steps, sleeps, waits, children) before
        this attempt began: it carries on a run that got somewhere, after a suspension, a
        retry or a lost worker. False for the run's first attempt, and for a retry of one
        that recorded nothing."""
        return self._replay.resumed

    @property
    def step_key(self) -> str:
        """A key for the step running now, the same on every attempt of it: hand it to an
        outside service as an idempotency key so a re-run step is not applied twice."""
        if self._replay.step_key is None:
            raise InvalidStateError("step_key is only defined while a step's function runs")
        return self._replay.step_key

    @property
    def step_attempt(self) -> int:
        """The attempt of the step running now: 1, then 2 for its first retry, ... (an
        attempt cut short by a crash, and so never recorded, keeps its number)."""
        if self._replay.step_attempt is None:
            raise InvalidStateError("step_attempt is only defined while a step's function runs")
        return self._replay.step_attempt

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
        seq, entry = self._replay.next(StepKind.STEP, name)
        undo = None if compensate is None else Compensation(name, compensate, args, policy, seconds)
        if entry is None or entry.status is not StepStatus.COMPLETED:
            await self._replay.run_step(
                seq, StepKind.STEP, name, fn, args, policy, seconds, entry, undo is not None
            )
            entry = self._replay.entries[seq]
        if undo is not None:
            self._replay.compensations.append(undo)
        what = f"result of {self.name} step {name!r}"
        return self._codec.decode(return_type(fn), entry.result or "null", what)

    def is_step_completed(self, name: str) -> bool:
        """Whether the run's record holds a completed step ``name`` (for code written the
        explicit way: it does not take a sequence number)."""
        return any(
            e.kind is StepKind.STEP and e.name == name and e.status is StepStatus.COMPLETED
            for e in self._replay.entries.values()
        )

    def step_result(self, name: str) -> Any:
        """The recorded JSON result of completed step ``name``; InvalidArgumentError (a
        ValueError) if the run has no such completed step."""
        for e in self._replay.entries.values():
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
        seq, entry = self._replay.next(StepKind.SLEEP, "sleep")
        if entry is not None and entry.status is StepStatus.COMPLETED:
            return
        now = self._clock.now()
        if entry is None:
            entry = StepRecord(seq, StepKind.SLEEP, "sleep", StepStatus.RUNNING, 1,
                               wake_at=wake_at, started_at=now)  # fmt: skip
            if wake_at > now:
                await self._replay.write(entry)
        assert entry.wake_at is not None
        if now < entry.wake_at:
            raise Suspend(entry.wake_at, "sleep")
        await self._replay.write(attrs.evolve(entry, status=StepStatus.COMPLETED, finished_at=now))

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
        seq, entry = self._replay.next(StepKind.SIGNAL, name)
        what = f"signal {name!r} of {self.name}"
        if entry is not None and entry.status is StepStatus.COMPLETED:
            return None if entry.result is None else self._codec.decode(type, entry.result, what)
        now = self._clock.now()
        signal = next((s for s in self._replay.signals if s.name == name), None)
        if signal is not None:
            self._replay.signals.remove(signal)
            await self._replay.write(
                StepRecord(seq, StepKind.SIGNAL, name, StepStatus.COMPLETED, 1, signal.payload,
                           started_at=entry.started_at if entry else now, finished_at=now),
                consume_signal=signal.id,
            )  # fmt: skip
            return self._codec.decode(type, signal.payload, what)
        if entry is None:
            deadline = None if seconds is None else now + seconds
            entry = StepRecord(seq, StepKind.SIGNAL, name, StepStatus.RUNNING, 1,
                               wake_at=deadline, started_at=now)  # fmt: skip
            await self._replay.write(entry)
        if entry.wake_at is not None and now >= entry.wake_at:
            await self._replay.write(
                attrs.evolve(entry, status=StepStatus.COMPLETED, finished_at=now)
            )
            return None
        raise Suspend(NEVER if entry.wake_at is None else entry.wake_at, f"signal {name!r}")

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
        seq, entry = self._replay.next(StepKind.CHILD, definition.name)
        result_type = definition.result_type
        if entry is not None:
            assert entry.result is not None
            return ChildHandle(int(json.loads(entry.result)), definition.name, result_type)
        [new] = self._client._new_jobs(definition, [payload], **_enqueue_options(options))
        new = attrs.evolve(new, parent_id=self.run_id)
        now = self._clock.now()
        written = await self._replay.write(
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
        records = [self._replay.children.get(c.job_id) for c in children]
        unfinished = [c for c, r in zip(children, records, strict=True) if r is None or
                      not r.status.is_terminal]  # fmt: skip
        if unfinished:
            if self._replay.collecting:
                raise StopReplay
            finished = self._client._finished
            for child in unfinished:
                finished.on_finish(child.job_id, self._wake_me)
            raise Suspend(NEVER, f"{len(unfinished)} child job(s)")
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
