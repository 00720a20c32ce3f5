"""The storage actor: the only task that talks to the backend.

Requests arrive on a memory channel, each with a one-shot reply slot. The actor takes
whatever is waiting (up to ``max_batch``) and runs it as one backend batch: one transaction,
one thread hop or one asyncio crossing for many enqueues, claims and outcomes. Backends that
can (``max_in_flight`` > 1: PostgreSQL's pool) run several batches at once, as long as no
job's writes could be reordered.

A backend that starts batches without a trio task (:class:`~trioforge.storage.StartsBatches`:
PostgreSQL's asyncio tasks) has them started by the scheduler itself, and a caller of
:meth:`StorageHandle.call` that finds the actor idle starts its own request's batch at once,
under the same rules: an idle enqueue or claim reaches the database without waking the
actor's tasks, and its reply wakes only the caller.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from functools import partial
from typing import TypeVar, cast

import attrs
import trio

from trioforge._core.errors import DatabaseUnavailableError, TrioforgeError
from trioforge.storage import Backend, StartsBatches, ops
from trioforge.storage._health import permanent_failure

__all__ = ["StorageHandle", "StorageInbox", "log_failure", "open_storage_channel", "storage_actor"]

log = logging.getLogger("trioforge.storage")

T = TypeVar("T")


def log_failure(logger: logging.Logger, exc: Exception, message: str, *args: object) -> None:
    """Log a failed storage call: one line while the database is unavailable (expected
    during a restart, and retried) or unusable (the runtime stops with it), the whole
    traceback for anything else."""
    if isinstance(exc, DatabaseUnavailableError) or permanent_failure(exc):
        logger.warning(message + " (%s)", *args, exc)
    else:
        logger.error(message, *args, exc_info=exc)


@attrs.define(eq=False)
class _Request:
    op: ops.Op
    done: trio.Event = attrs.field(factory=trio.Event)
    result: object = None


@attrs.define(eq=False)
class StorageInbox:
    """The storage actor's end of the channel, and the scheduler it serves it with while it
    runs one (several batches at once), through which a caller that finds it idle starts
    a batch itself."""

    receive: trio.MemoryReceiveChannel[_Request]
    scheduler: _Scheduler | None = None
    #: Requests sent on the channel that the scheduler has not taken in yet (one handed
    #: straight to a waiting receiver is in no buffer): a caller starting its own batch
    #: would overtake them.
    unseen: int = 0


class StorageHandle:
    """The sending side of the storage actor, shared by every other actor and the API.

    It also notices when the database cannot be used any more (a corrupt or read-only
    file, tables gone: see :func:`~trioforge.storage._health.permanent_failure`): ``broken``
    is set and ``broken_by`` says why, so a worker can stop instead of retrying forever.
    """

    def __init__(self, send: trio.MemorySendChannel[_Request], inbox: StorageInbox) -> None:
        self._send = send
        self._inbox = inbox
        self._closed = False
        self.broken = trio.Event()
        self.broken_by: DatabaseUnavailableError | None = None

    def _check(self, exc: BaseException) -> None:
        reason = permanent_failure(exc)
        if reason is not None and self.broken_by is None:
            self.broken_by = DatabaseUnavailableError(
                f"the database {reason}; retrying cannot fix that: repair or restore it "
                "(`trioforge db status --check` reports what is wrong)"
            )
            self.broken_by.__cause__ = exc
            self.broken.set()

    async def call(self, op: ops.Op[T]) -> T:
        """Run ``op`` in the next batch and return its result (or raise its error).

        Cancellation: if the caller is cancelled while waiting, the operation may still
        run; callers whose outcome must not be lost use :meth:`call_shielded`.

        When the actor is idle (nothing queued, nothing in flight) and its backend starts
        batches without a task, the caller starts the batch itself, at once: a batch
        started that way runs to its end whatever happens to the caller, as the actor's do.
        """
        request = _Request(op)
        scheduler = self._inbox.scheduler
        # A caller already cancelled starts nothing (trio's rule: a call that raises
        # Cancelled did nothing); this does not yield otherwise, so "idle" stays true.
        await trio.lowlevel.checkpoint_if_cancelled()
        if (
            scheduler is not None
            and not self._closed
            and not self._inbox.unseen  # nothing sent before it is still on its way
            and scheduler.idle
        ):
            scheduler.submit(request)
        else:
            await self._submit(request)
        await request.done.wait()
        if isinstance(request.result, BaseException):
            self._check(request.result)
            raise request.result
        return cast(T, request.result)  # the backend ran op: its result is a T

    def call_nowait(self, op: ops.Op[T]) -> None:
        """Queue ``op`` for the next batch and return at once; its result or error is
        dropped. For writes whose loss costs only a late view (a step shown running): it is
        queued behind this process's earlier requests, so a later write of the same job
        lands after it. Does nothing once storage is closed."""
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(_Request(op))
            self._inbox.unseen += 1

    async def call_shielded(self, op: ops.Op[T], *, limit: float = 30.0) -> T | None:
        """Like :meth:`call`, shielded from cancellation (bounded by ``limit`` seconds), for
        writes that record an outcome. Returns None if the limit expired."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + limit):
            return await self.call(op)
        return None

    async def call_each_shielded(
        self, batch: Sequence[ops.Op[T]], *, limit: float = 30.0
    ) -> list[T | BaseException | None]:
        """Each op of ``batch`` as a request of its own, all sent before any reply is
        awaited (so they share a backend batch, where each succeeds or fails alone), shielded
        like :meth:`call_shielded`: per op, its result, the exception it raised, or None
        if the limit expired first."""
        requests = [_Request(op) for op in batch]
        with trio.CancelScope(shield=True, deadline=trio.current_time() + limit):
            for request in requests:
                await self._submit(request)
            for request in requests:
                await request.done.wait()
        return [cast(T | BaseException, r.result) if r.done.is_set() else None for r in requests]

    async def _submit(self, request: _Request) -> None:
        # What the channel's send does, with the request counted as unseen as it is sent.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._send.send_nowait(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise TrioforgeError(
                "the runtime's storage is closed; use it inside its block"
            ) from None
        self._inbox.unseen += 1
        await trio.lowlevel.cancel_shielded_checkpoint()

    def close(self) -> None:
        """No more requests; the actor finishes those queued, then returns."""
        self._closed = True
        self._send.close()


_Batch = tuple[list[_Request], frozenset[int] | None]


class _Scheduler:
    """Which waiting requests go out next when several batches may run at once (PostgreSQL:
    one per pooled connection), decided synchronously.

    Claims go first, in a batch of their own, so a claim never waits behind the outcome
    write queued before it (a job's outcome is only ever reported after its claim
    returned); the batch after that takes the oldest requests, so nothing starves. With
    nothing in flight, everything waiting goes out together, in order. A batch starts
    beside others unless order could show: a request that writes a job an in-flight batch
    writes waits for it, with everything behind it; any other kind of write (cancel,
    retry, cron, leases, pause, rescue...) starts only when nothing is in flight, and
    nothing starts beside it.

    A batch starts through the backend's :meth:`~trioforge.storage.StartsBatches.start_batch`
    when it has one (in the actor's context, as if the actor's task had run it), else in
    a task of the actor's nursery.
    """

    def __init__(
        self,
        backend: Backend,
        now: Callable[[], float],
        max_batch: int,
        nursery: trio.Nursery,
    ) -> None:
        self._backend = backend
        self._starts = backend if isinstance(backend, StartsBatches) else None
        self._now = now
        self._nursery = nursery
        self._context = contextvars.copy_context()
        self._limit = backend.max_in_flight
        self._max_batch = max_batch
        self._waiting: deque[_Request] = deque()
        self._in_flight: list[frozenset[int] | None] = []  # what each running batch writes
        self._claims_last = False
        self._closed = False
        self._changed = trio.Event()

    @property
    def finished(self) -> bool:
        return self._closed and not self._waiting and not self._in_flight

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing runs: a request submitted now starts at once, alone."""
        return not self._waiting and not self._in_flight and self._starts is not None

    def submit(self, request: _Request) -> None:
        """``request`` from a caller, behind everything waiting, and every batch that may
        start now started (else the actor's loop starts it when it may)."""
        self._waiting.append(request)
        self.start_ready()
        if self._waiting:
            self._changed.set()

    def start_ready(self) -> None:
        """Start every batch the rules let start now."""
        while (started := self.next_batch()) is not None:
            self._launch(*started)

    def _launch(self, batch: list[_Request], writes: frozenset[int] | None) -> None:
        if self._starts is not None:
            ended = partial(self._ended, batch, writes)
            ops_ = [r.op for r in batch]
            try:
                if self._context.run(self._starts.start_batch, ops_, self._now(), ended):
                    return
            except Exception:  # a loop shutting down, say: the actor's own task runs it
                log.exception("storage: could not start a batch on the backend; running it here")
        self._nursery.start_soon(self.run, batch, writes)

    def _ended(
        self,
        batch: list[_Request],
        writes: frozenset[int] | None,
        results: list[object] | BaseException,
    ) -> None:
        """A started batch's end: its replies, then its place in flight freed."""
        try:
            _deliver(
                batch, [results] * len(batch) if isinstance(results, BaseException) else results
            )
        finally:  # its place in flight is freed whatever went wrong handing results over
            self._freed(writes)

    def _freed(self, writes: frozenset[int] | None) -> None:
        """A batch is no longer in flight: the actor looks again if that may let a waiting
        request start, or end its loop."""
        self._in_flight.remove(writes)
        if self._waiting or self._closed:
            self._changed.set()

    async def changed(self) -> None:
        """Wait until a request arrives, a batch ends or the channel closes."""
        await self._changed.wait()
        self._changed = trio.Event()

    async def take_in(self, inbox: StorageInbox) -> None:
        async for first in inbox.receive:
            self._waiting.append(first)
            del first  # waiting for the next request, hold none served (its op, its rows)
            while True:  # everything already queued, so it can share a batch
                try:
                    self._waiting.append(inbox.receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            inbox.unseen = 0  # the buffer is empty: every request sent so far is here
            self._changed.set()
        self._closed = True
        self._changed.set()

    def next_batch(self) -> _Batch | None:
        """The next batch to start, taken off the waiting list and counted in flight."""
        if not self._waiting or len(self._in_flight) >= self._limit or None in self._in_flight:
            return None
        if not self._claims_last and any(isinstance(r.op, ops.Claim) for r in self._waiting):
            claims = [r for r in self._waiting if isinstance(r.op, ops.Claim)][: self._max_batch]
            taken = {id(r) for r in claims}
            self._waiting = deque(r for r in self._waiting if id(r) not in taken)
            self._claims_last = True  # the next batch is the oldest requests: none starve
            return self._started(claims, frozenset())
        busy = frozenset[int]().union(*(w for w in self._in_flight if w is not None))
        batch: list[_Request] = []
        writes: frozenset[int] | None = frozenset()
        while self._waiting and len(batch) < self._max_batch:
            touched = self._waiting[0].op.writes()
            if self._in_flight and (touched is None or not busy.isdisjoint(touched)):
                break  # it waits for the batches in flight, and what is behind it too
            batch.append(self._waiting.popleft())
            writes = None if touched is None or writes is None else writes | touched
        if not batch:
            return None
        self._claims_last = False
        return self._started(batch, writes)

    def _started(self, batch: list[_Request], writes: frozenset[int] | None) -> _Batch:
        self._in_flight.append(writes)
        return batch, writes

    async def run(self, batch: list[_Request], writes: frozenset[int] | None) -> None:
        try:
            await _run(self._backend, self._now, batch)
        finally:
            self._freed(writes)


async def storage_actor(
    backend: Backend,
    now: Callable[[], float],
    inbox: StorageInbox,
    *,
    max_batch: int = 512,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve requests until the channel is closed, up to ``backend.max_in_flight``
    batches at once (:class:`_Scheduler` decides which may overlap).

    Shielded from cancellation on purpose: when the runtime is torn down, workers still
    write their final outcomes (shielded) through this actor; the runtime closes the
    channel after every other actor has stopped, and the actor drains and returns.
    """
    task_status.started()
    with trio.CancelScope(shield=True), inbox.receive as receive:
        if backend.max_in_flight <= 1:
            await _serve_one_at_a_time(backend, now, receive, max_batch)
            return
        async with trio.open_nursery() as nursery:
            scheduler = _Scheduler(backend, now, max_batch, nursery)
            nursery.start_soon(scheduler.take_in, inbox)
            inbox.scheduler = scheduler
            try:
                while not scheduler.finished:
                    scheduler.start_ready()
                    await scheduler.changed()
            finally:
                inbox.scheduler = None


async def _serve_one_at_a_time(
    backend: Backend,
    now: Callable[[], float],
    receive: trio.MemoryReceiveChannel[_Request],
    max_batch: int,
) -> None:
    """Everything waiting as one batch, in order, served inline: no task hops between a
    request and its batch (the classic batch of :class:`_Scheduler` with one in flight)."""
    async for first in receive:
        batch = [first]
        while len(batch) < max_batch:
            try:
                batch.append(receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        await _run(backend, now, batch)
        del first, batch  # waiting for the next request, hold none served (its op, its rows)


async def _run(backend: Backend, now: Callable[[], float], batch: list[_Request]) -> None:
    try:
        results = await backend.execute([r.op for r in batch], now())
    except Exception as exc:  # the whole batch failed (e.g. database unreachable)
        results = [exc] * len(batch)
    _deliver(batch, results)


def _deliver(batch: list[_Request], results: list[object]) -> None:
    for request, result in zip(batch, results, strict=True):
        request.result = result
        request.done.set()


def open_storage_channel() -> tuple[StorageHandle, StorageInbox]:
    send, receive = trio.open_memory_channel[_Request](math.inf)
    inbox = StorageInbox(receive)
    return StorageHandle(send, inbox), inbox
