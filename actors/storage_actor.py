"""The storage actor: the only task that talks to the backend.

Requests arrive on a memory channel, each with a one-shot reply slot. The actor takes
whatever is waiting (up to ``max_batch``) and runs it as one backend batch: one transaction,
one thread hop or one asyncio crossing for many enqueues, claims and outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import trio

from trioforge._errors import TrioforgeError
from trioforge.storage import Backend, ops

__all__ = ["StorageHandle", "open_storage_channel", "storage_actor"]


@attrs.define(eq=False)
class _Request:
    op: ops.Op
    done: trio.Event = attrs.field(factory=trio.Event)
    result: object = None


class StorageHandle:
    """The sending side of the storage actor, shared by every other actor and the API."""

    def __init__(self, send: trio.MemorySendChannel[_Request]) -> None:
        self._send = send

    async def call(self, op: ops.Op) -> Any:
        """Run ``op`` in the next batch and return its result (or raise its error).

        Cancellation: if the caller is cancelled while waiting, the operation may still
        run; callers whose outcome must not be lost use :meth:`call_shielded`.
        """
        request = _Request(op)
        try:
            await self._send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise TrioforgeError(
                "the runtime's storage is closed; use it inside its block"
            ) from None
        await request.done.wait()
        if isinstance(request.result, BaseException):
            raise request.result
        return request.result

    async def call_shielded(self, op: ops.Op, *, limit: float = 30.0) -> Any:
        """Like :meth:`call`, shielded from cancellation (bounded by ``limit`` seconds), for
        writes that record an outcome. Returns None if the limit expired."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + limit):
            return await self.call(op)
        return None

    def close(self) -> None:
        """No more requests; the actor finishes those queued, then returns."""
        self._send.close()


async def storage_actor(
    backend: Backend,
    now: Callable[[], float],
    receive: trio.MemoryReceiveChannel[_Request],
    *,
    max_batch: int = 512,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve requests until the channel is closed.

    Shielded from cancellation on purpose: when the runtime is torn down, workers still
    write their final outcomes (shielded) through this actor; the runtime closes the
    channel after every other actor has stopped, and the actor drains and returns.
    """
    task_status.started()
    with trio.CancelScope(shield=True), receive:
        async for first in receive:
            batch = [first]
            while len(batch) < max_batch:
                try:
                    batch.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
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
