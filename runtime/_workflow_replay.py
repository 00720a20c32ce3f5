"""A workflow run's record as one attempt replays it: the durable calls' sequence numbers,
the check that the code makes the calls its record holds, the fenced writes of new entries,
and a step (or a compensation) run and recorded. See :mod:`trioforge._workflow` for the
theory of operation.

Both sides use it: the user's :class:`~trioforge.WorkflowContext` makes its durable calls
through it, and the driver (:mod:`trioforge._workflow_driver`) builds it from the loaded
record, replays the handler over it and reads what the replay learnt (the compensations,
the ``compensating`` marker).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import typing
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import TYPE_CHECKING, Any

import attrs
import trio

from trioforge._codec import Codec, encode_result
from trioforge._context import job_fields
from trioforge._core.errors import (
    DatabaseUnavailableError,
    Discard,
    JobTimeoutError,
    NonDeterminismError,
    PayloadError,
    StepFailed,
)
from trioforge._core.retry import Retry, discard_reason, failure_outcome
from trioforge._workflow_info import RUN_BY_FUNCTIONS
from trioforge.actors import RunningJobs, StepStarts, StorageHandle
from trioforge.actors.attempts import format_error
from trioforge.storage import (
    ClaimedJob,
    NewJob,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
    WorkflowRecord,
    ops,
)

if TYPE_CHECKING:
    from trioforge._core.clock import Clock
    from trioforge.otel import Tracing

__all__ = [
    "Compensation",
    "LeaseLost",
    "Replay",
    "StopReplay",
    "Suspend",
    "discarded_reason",
    "return_type",
]

#: Pauses between tries of a record write while the database is away.
_WRITE_RETRY_FIRST, _WRITE_RETRY_MAX = 0.05, 0.5


class Suspend(BaseException):
    """Unwinds the handler so the run waits until ``run_at``. A BaseException: an
    application's ``except Exception`` must not swallow it."""

    def __init__(self, run_at: float, why: str) -> None:
        super().__init__(run_at)
        self.run_at = run_at
        #: What the run waits for (its log line says it).
        self.why = why


class StopReplay(BaseException):
    """Ends a replay that only collects compensations, at the first unfinished entry."""


class LeaseLost(BaseException):
    """The run's lease went to another worker: this attempt must stop writing."""


@attrs.frozen
class Compensation:
    """A completed step's undo, learnt from the handler (functions are never stored)."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    retry: Retry
    timeout: float | None


#: Each step function's result type, worked out once: ``get_type_hints`` per step call was a
#: twentieth of a workflow's CPU. Weak keys, so functions made per run (closures) go with it.
_RETURN_TYPES: weakref.WeakKeyDictionary[Callable[..., Any], Any] = weakref.WeakKeyDictionary()


def return_type(fn: Callable[..., Any]) -> Any:
    """What a step's results are encoded and decoded by: ``fn``'s return annotation
    (what it awaits to, for ``-> Awaitable[T]``), Any when it has none."""
    fn = getattr(fn, "__func__", fn)  # a bound method is made anew at each access
    try:
        return _RETURN_TYPES[fn]
    except (KeyError, TypeError):  # not seen yet, or not weakly referable (then not kept)
        pass
    found = _return_type(fn)
    with suppress(TypeError):
        _RETURN_TYPES[fn] = found
    return found


def _return_type(fn: Callable[..., Any]) -> Any:
    try:
        hint = typing.get_type_hints(fn).get("return", Any)
    except (NameError, TypeError):  # unresolvable, or not a plain function (a partial)
        return Any
    if typing.get_origin(hint) in (Awaitable, Coroutine):
        return typing.get_args(hint)[-1] if typing.get_args(hint) else Any
    return hint


def _cut_short(entry: StepRecord) -> bool:
    """Whether ``entry`` is a step (or an undo) shown running whose attempt never ended:
    its worker stopped, or the run was released, while its function ran. It runs again
    with the same attempt number."""
    return entry.status is StepStatus.RUNNING and entry.kind in RUN_BY_FUNCTIONS


def discarded_reason(entry: StepRecord) -> str | None:
    """The reason a failed step raised :class:`~trioforge.Discard` with, None if it failed
    otherwise. Its failed entry keeps the reason as its result (``{"discarded": reason}``),
    so a replay of the entry discards the run again rather than failing it."""
    if entry.status is not StepStatus.FAILED or entry.result is None:
        return None
    value = json.loads(entry.result)
    return value.get("discarded") if isinstance(value, dict) else None


class Replay:
    """The record of run ``job`` as this attempt replays it, and its writes (fenced by the
    run's lease)."""

    def __init__(
        self,
        job: ClaimedJob,
        record: WorkflowRecord,
        *,
        version: int,
        codec: Codec,
        storage: StorageHandle,
        running: RunningJobs,
        starts: StepStarts,
        clock: Clock,
        tracing: Tracing | None,
    ) -> None:
        self._job = job
        self._storage = storage
        self._running = running
        self._starts = starts
        self._clock = clock
        self._tracing = tracing
        #: The version of the workflow this run started on (and resumes on).
        self.version = version
        #: The registry's codec: step results, signal payloads and child results.
        self.codec = codec
        self.entries = {e.seq: e for e in record.steps}
        #: Signals sent and not yet taken by a wait (each is delivered to one wait).
        self.signals = list(record.signals)
        self.children = {c.id: c for c in record.children}
        #: The undos of the completed steps the handler went through, in order.
        self.compensations: list[Compensation] = []
        #: Whether the handler runs only to learn the compensations (see :meth:`collect`).
        self.collecting = False
        #: The step running now: its key and attempt (None between steps).
        self.step_key: str | None = None
        self.step_attempt: int | None = None
        self.log = logging.LoggerAdapter(
            logging.getLogger("trioforge.job"), job_fields(job) | {"run_id": job.id}
        )
        self._seq = 0
        self._stop_at: int | None = None  # while collecting: where the forward run stopped
        # What the record held when this attempt began: a step only shown running, its
        # attempt cut short, is no entry yet (it runs again, not replayed).
        held = [e.seq for e in record.steps if not _cut_short(e)]
        #: How many entries the record held when this attempt began.
        self.recorded = len(held)
        self._recorded_end = max(held, default=-1) + 1  # past the loaded entries

    @property
    def resumed(self) -> bool:
        """Whether the record held entries when this attempt began."""
        return self.recorded > 0

    @property
    def run_id(self) -> int:
        return self._job.id

    def next(self, kind: StepKind, name: str) -> tuple[int, StepRecord | None]:
        """The next durable call's sequence number and its entry, if recorded (checked to
        be the same kind of call with the same name)."""
        seq = self._seq
        if self._stop_at is not None and seq >= self._stop_at:
            raise StopReplay
        self._seq += 1
        entry = self.entries.get(seq)
        if entry is not None and (entry.kind is not kind or entry.name != name):
            raise NonDeterminismError(
                f"workflow run {self.run_id}: durable call #{seq} is {kind} {name!r}, but the "
                f"run's record has {entry.kind} {entry.name!r} there. The code changed under "
                f"a running version: register changed code as a new version (version="
                f"{self.version + 1}) and keep version {self.version} for its runs"
            )
        if self.collecting and (entry is None or entry.status is not StepStatus.COMPLETED):
            raise StopReplay
        return seq, entry

    def replaying(self) -> bool:
        """Whether the handler is still going through what the record held when this
        attempt began (or replays only to learn its compensations)."""
        return self.collecting or self._seq < self._recorded_end

    def free_seq(self) -> int:
        """A sequence number past every recorded entry (for the driver's own entries)."""
        return max(self.entries, default=-1) + 1

    def marker(self) -> StepRecord | None:
        """The ``compensating`` entry: where going forward stopped (None: not undoing)."""
        return next((e for e in self.entries.values() if e.kind is StepKind.COMPENSATING), None)

    def undoable(self) -> bool:
        """Whether the run has a completed step with an undo, recorded or just run (the
        replay may not have reached the recorded ones yet)."""
        return bool(self.compensations) or any(
            e.compensable and e.status is StepStatus.COMPLETED for e in self.entries.values()
        )

    def check_replayed_all(self) -> None:
        """A handler that returns must have made every call its record holds."""
        leftover = [e for s, e in self.entries.items() if s >= self._seq]
        if leftover:
            raise NonDeterminismError(
                f"workflow run {self.run_id} returned after {self._seq} durable calls, but its "
                f"record holds {len(leftover)} more (first: {leftover[0].kind} "
                f"{leftover[0].name!r}); register changed code as a new version"
            )

    @contextmanager
    def collect(self, stop_at: int | None) -> Iterator[None]:
        """While the handler runs inside, it only learns compensations: it stops
        (:class:`StopReplay`) at the first unfinished entry, or at ``stop_at``."""
        self.collecting, self._stop_at = True, stop_at
        try:
            yield
        finally:
            self.collecting, self._stop_at = False, None

    async def write(
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
                    raise LeaseLost from exc
                self.log.warning("step %r not recorded yet (%s); retrying", entry.name, exc)
                await trio.sleep(wait)
                wait = min(wait * 2, _WRITE_RETRY_MAX)
        if not written.applied:
            raise LeaseLost
        if written.child_id is not None:
            entry = attrs.evolve(entry, result=json.dumps(written.child_id))
        self.entries[entry.seq] = entry
        return written

    async def run_step(
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
        """Run a step (or a compensation) durably; the JSON text of its result.

        A step function that raises :class:`~trioforge.Discard` (or a group holding one)
        gets no further attempt: the failure is recorded with its reason and the Discard
        goes on up, so the run is discarded (and undone) as a job's Discard discards it. A
        compensation that raises it fails at once (StepFailed), with no further attempts."""
        if entry is not None and entry.status is StepStatus.FAILED:
            reason = discarded_reason(entry)
            if reason is not None:
                raise Discard(reason)
            if entry.wake_at is None:
                raise StepFailed(name, entry.attempt, entry.error)
            if self._clock.now() < entry.wake_at:
                raise Suspend(entry.wake_at, f"step {name!r} retry")
        attempt = 1 if entry is None else entry.attempt
        if entry is not None and not _cut_short(entry):  # cut short: the same attempt again
            attempt += 1
        started = self._clock.now()

        def start() -> ops.RecordStep:
            running = StepRecord(seq, kind, name, StepStatus.RUNNING, attempt,
                                 compensable=compensable, started_at=started)  # fmt: skip
            return ops.RecordStep(self.run_id, self._job.lease, running)

        def entry_of(status: StepStatus, **outcome: Any) -> StepRecord:
            now = self._clock.now()
            return StepRecord(seq, kind, name, status, attempt, compensable=compensable,
                              started_at=started, finished_at=now, **outcome)  # fmt: skip

        self.step_key = f"{self.run_id}:{seq}:{name}"
        self.step_attempt = attempt
        job_name, tracing = self._job.name, self._tracing
        span = nullcontext() if tracing is None else tracing.step_span(job_name, name, attempt)
        shown = self._starts.running(self.run_id, seq, start)
        try:
            with span, trio.fail_after(math.inf if limit is None else limit), shown:
                value = fn(*args)
                if inspect.isawaitable(value):
                    value = await value
            what = f"{job_name} step {name!r}"
            text = encode_result(self.codec, what, return_type(fn), value) or "null"
        except trio.TooSlowError:
            error: BaseException = JobTimeoutError(f"step {name!r} ran past {limit}s")
            retry_at = failure_outcome(retry, attempt, error, self._clock.now()).retry_at
        except PayloadError as exc:  # a result that is not JSON: no retry would help
            error, retry_at = exc, None
        except Exception as exc:
            reason = discard_reason(exc)
            if reason is not None and kind is StepKind.STEP:
                discarded = entry_of(StepStatus.FAILED, result=json.dumps({"discarded": reason}),
                                     error=format_error(exc))  # fmt: skip
                await self.write(discarded)
                raise
            error = exc
            retry_at = None  # a compensation that discards itself: failed, no retries
            if reason is None:
                retry_at = failure_outcome(retry, attempt, error, self._clock.now()).retry_at
        else:
            await self.write(entry_of(StepStatus.COMPLETED, result=text))
            return text
        finally:
            self.step_key = self.step_attempt = None
        await self.write(entry_of(StepStatus.FAILED, error=format_error(error), wake_at=retry_at))
        if retry_at is None:
            raise StepFailed(name, attempt, str(error) or type(error).__name__) from error
        raise Suspend(retry_at, f"step {name!r} retry")
