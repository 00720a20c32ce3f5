"""The storage actor: the only task that talks to the backend.

Requests arrive on a memory channel, each with a one-shot reply slot. The actor takes
whatever is waiting (up to ``max_batch``) and runs it as one backend batch: one transaction,
one thread hop or one asyncio crossing for many enqueues, claims and outcomes. Backends that
can (``max_in_flight`` > 1: PostgreSQL's pool) run several batches at once, as long as no
job's writes could be reordered.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import TypeVar, cast

import attrs
import trio

from trioforge._core.errors import DatabaseUnavailableError, TrioforgeError
from trioforge.storage import Backend, ops
from trioforge.storage._health import permanent_failure

__all__ = ["StorageHandle", "log_failure", "open_storage_channel", "storage_actor"]

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


class StorageHandle:
    """The sending side of the storage actor, shared by every other actor and the API.

    It also notices when the database cannot be used any more (a corrupt or read-only
    file, tables gone: see :func:`~trioforge.storage._health.permanent_failure`): ``broken``
    is set and ``broken_by`` says why, so a worker can stop instead of retrying forever.
    """

    def __init__(self, send: trio.MemorySendChannel[_Request]) -> None:
        self._send = send
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
        """
        request = _Request(op)
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
        try:
            await self._send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise TrioforgeError(
                "the runtime's storage is closed; use it inside its block"
            ) from None

    def close(self) -> None:
        """No more requests; the actor finishes those queued, then returns."""
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
    """

    def __init__(self, max_in_flight: int, max_batch: int) -> None:
        self._limit = max_in_flight
        self._max_batch = max_batch
        self._waiting: deque[_Request] = deque()
        self._in_flight: list[frozenset[int] | None] = []  # what each running batch writes
        self._claims_last = False
        self._closed = False
        self._changed = trio.Event()

    @property
    def finished(self) -> bool:
        return self._closed and not self._waiting and not self._in_flight

    async def changed(self) -> None:
        """Wait until a request arrives, a batch ends or the channel closes."""
        await self._changed.wait()
        self._changed = trio.Event()

    async def take_in(self, receive: trio.MemoryReceiveChannel[_Request]) -> None:
        async for first in receive:
            self._waiting.append(first)
            while True:  # everything already queued, so it can share a batch
                try:
                    self._waiting.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
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

    async def run(
        self,
        backend: Backend,
        now: Callable[[], float],
        batch: list[_Request],
        writes: frozenset[int] | None,
    ) -> None:
        try:
            await _run(backend, now, batch)
        finally:
            self._in_flight.remove(writes)
            self._changed.set()


async def storage_actor(
    backend: Backend,
    now: Callable[[], float],
    receive: trio.MemoryReceiveChannel[_Request],
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
    with trio.CancelScope(shield=True), receive:
        if backend.max_in_flight <= 1:
            await _serve_one_at_a_time(backend, now, receive, max_batch)
            return
        scheduler = _Scheduler(backend.max_in_flight, max_batch)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scheduler.take_in, receive)
            while not scheduler.finished:
                while (started := scheduler.next_batch()) is not None:
                    nursery.start_soon(scheduler.run, backend, now, *started)
                await scheduler.changed()


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


async def _run(backend: Backend, now: Callable[[], float], batch: list[_Request]) -> None:
    try:
        results = await backend.execute([r.op for r in batch], now())
    except Exception as exc:  # the whole batch failed (e.g. database unreachable)
        results = [exc] * len(batch)
    for request, result in zip(batch, results, strict=True):
        request.result = result
        request.done.set()


def open_storage_channel() -> tuple[StorageHandle, trio.MemoryReceiveChannel[_Request]]:
    send, receive = trio.open_memory_channel[_Request](math.inf)
    return StorageHandle(send), receive
