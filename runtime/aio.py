"""``trioforge.aio.open_client``: enqueue, inspect and cancel jobs from plain asyncio code
(FastAPI, Starlette, Django's async views), without trio.

It is the same :class:`~trioforge.Client` (the same payload checks, limits and keys) over
the same storage backends and their SQL, reached from asyncio directly: PostgreSQL through
asyncpg on the running loop, SQLite through a worker thread (one statement batch at a
time, as the trio side does). Only ``wait`` differs: it polls every ``poll_interval``
seconds, as no live feed runs here, and ``Job.watch`` is not available (``Job.result``
and the rest are). Workers still run on trio (``open_runtime`` or
``trioforge worker``).

``enqueue(..., connection=conn)`` stores jobs with the caller's own asyncpg connection
(or sqlite3 connection to the same file) inside the caller's transaction.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from trioforge._client import DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_PAYLOAD_BYTES, Client, JobId
from trioforge._config import resolve_database
from trioforge._core.clock import WallClock
from trioforge._core.durations import Duration, seconds
from trioforge._core.errors import ConfigurationError, TrioforgeError
from trioforge._policy import QueueLike, queue_policies
from trioforge._registry import Registry
from trioforge.actors import Finished, LiveFeed, StorageHandle
from trioforge.storage import (
    AsyncioBackend,
    AsyncioExecute,
    Backend,
    Enqueued,
    JobInfo,
    backend_for_url,
    ops,
)

if TYPE_CHECKING:
    from trioforge.otel import Tracing

__all__ = ["AsyncioClient", "open_client"]


class _AsyncioStorage(StorageHandle):
    """What a :class:`Client` calls storage through, answered on asyncio: each call is
    one batch of one operation, run by the backend's asyncio-side entry point."""

    def __init__(self, execute: AsyncioExecute, clock: WallClock) -> None:
        # No storage actor (it is a trio task): calls go straight to the backend.
        self._execute = execute
        self._clock = clock
        self._closed = False

    async def call(self, op: ops.Op) -> Any:
        if self._closed:
            raise TrioforgeError("the client is closed; use it inside its block")
        [result] = await self._execute([op], self._clock.now())
        if isinstance(result, BaseException):
            raise result
        return result

    async def call_shielded(self, op: ops.Op, *, limit: float = 30.0) -> Any:
        return await asyncio.shield(asyncio.wait_for(self.call(op), limit))

    def close(self) -> None:
        self._closed = True


class AsyncioClient(Client):
    """A :class:`~trioforge.Client` for asyncio code; from :func:`open_client`."""

    def __init__(self, *args: Any, poll_interval: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._poll_interval = poll_interval

    async def wait(self, job_id: JobId) -> JobInfo:
        """Block until the job is terminal and return it, checking every poll interval.
        No timeout of its own: wrap it in ``asyncio.timeout``. Cancellation is safe."""
        while True:
            info = await self.get(job_id)
            if info.is_terminal:
                return info
            await asyncio.sleep(self._poll_interval)

    async def _wait_within(self, job_id: int, limit: float | None) -> JobInfo | None:
        timeout = asyncio.timeout(limit)
        try:
            async with timeout:
                return await self.wait(job_id)
        except TimeoutError:
            if timeout.expired():
                return None
            raise

    def watch(self, job_id: JobId) -> Any:
        """Not available from asyncio (no live feed runs there): raises
        :class:`~trioforge.TrioforgeError`. Poll ``get``, or use ``wait``."""
        raise TrioforgeError(
            "watch() needs the trio live feed; from asyncio, poll get() or use wait()"
        )

    async def _on_asyncio(
        self, fn: Callable[..., Awaitable[builtins.list[Enqueued]]], *args: Any
    ) -> builtins.list[Enqueued]:
        return await fn(*args)  # already on asyncio: the caller's connection lives here


@asynccontextmanager
async def open_client(
    database: str | Backend | None = None,
    *,
    registry: Registry | None = None,
    migrate: bool = True,
    poll_interval: Duration = 0.2,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
    queues: Mapping[str, QueueLike] | None = None,
    tracing: Tracing | None = None,
) -> AsyncIterator[AsyncioClient]:
    """``async with trioforge.aio.open_client(database) as client:`` from asyncio: enqueue,
    get, list, wait, cancel, retry, discard and the bulk tools, with the same arguments
    and checks as :func:`trioforge.open_client` (``tracing`` too: enqueues inside the
    asyncio app's spans store their context). ``poll_interval``: how often ``wait``
    looks."""
    poll = seconds(poll_interval, "poll_interval", positive=True)
    policies = queue_policies(queues)
    if database is None or isinstance(database, str):
        backend = backend_for_url(resolve_database(database))
    else:
        backend = database
    clock = WallClock()
    if not isinstance(backend, AsyncioBackend):
        raise ConfigurationError(f"trioforge.aio cannot open {type(backend).__name__}")
    async with backend.on_asyncio(migrate=migrate) as execute:
        storage = _AsyncioStorage(execute, clock)
        # A feed nobody reads: this client's writes have no trio watchers to tell.
        send, _ = trio.open_memory_channel[Any](0)
        send.close()
        try:
            yield AsyncioClient(
                storage, clock, registry=registry, finished=Finished(), feed=LiveFeed(send),
                max_payload_bytes=max_payload_bytes, max_key_bytes=max_key_bytes,
                policies=policies, poll_interval=poll, tracing=tracing,
            )  # fmt: skip
        finally:
            storage.close()
