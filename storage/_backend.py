"""The one small protocol every storage backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Protocol, TypeAlias, runtime_checkable

import attrs
import trio

from trioforge._core.errors import InvalidArgumentError, unwrapped
from trioforge.storage._ops import Enqueue, Op
from trioforge.storage._records import Enqueued, Notice, SchemaStatus

__all__ = [
    "AsyncioBackend",
    "AsyncioExecute",
    "Backend",
    "CallerConnections",
    "Changed",
    "Listening",
    "StartsBatches",
    "opened",
    "refused_value",
]

#: One item of :meth:`Backend.changes`: the job ids that changed, or None (unknown which).
Changed: TypeAlias = frozenset[int] | None

#: How a backend opened on plain asyncio runs a batch (as :meth:`Backend.execute`).
AsyncioExecute: TypeAlias = Callable[[Sequence[Op], float], Awaitable[list[object]]]


@attrs.frozen(eq=False)
class Listening:
    """A listener's dedicated connection, while it lasts (:meth:`Backend.listen`)."""

    #: Set when the connection drops.
    lost: trio.Event
    #: A channel only this listener hears, once a notice sent there came back through the
    #: server: an enqueue may address its wake-up to this process alone there
    #: (``ProcessDetails.wake_channel``). None if that notice never came (LISTEN through a
    #: transaction pooler hears nothing).
    address: str | None


class Backend(Protocol):
    """Persistence for jobs. Only the storage actor calls these: :meth:`execute` up to
    ``max_in_flight`` times at once, everything else one call at a time.

    ``now`` is the runtime clock's time in epoch seconds; backends never read a clock.
    """

    #: Whether several processes can share this backend's data (rescue, cross-process cancel).
    shared: bool

    #: How many :meth:`execute` batches may run at once (each on its own connection). The
    #: storage actor keeps per-job order across them; 1 for a single connection.
    max_in_flight: int

    #: Whether :meth:`listen` works: other processes' enqueues and cancels are pushed here.
    notifies: bool

    def listen(self, on_notice: Callable[[Notice], None]) -> AbstractAsyncContextManager[Listening]:
        """A dedicated connection receiving notices until it drops (``lost`` is then set):
        those every listening process hears, and those addressed to its ``address`` alone.
        ``on_notice`` is called with each notice as it arrives, synchronously on trio's
        thread (no task in between: a wake-up reaches its fetcher in one pass of the
        scheduler) but inside trio-asyncio's loop, where only trio's synchronous calls
        are safe (``send_nowait``, ``Event.set``, ``CancelScope.cancel``); it must not
        block, and an error it raises is logged.

        Only called when ``notifies`` is true, by the runtime's listener actor.
        """
        ...

    def changes(self) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Changed]]:
        """A feed of which jobs changed (status or progress), in any process, until it
        drops (the channel then ends): each item is a set of job ids, or None for "some
        jobs may have changed" (re-read every watched one). Opened by the live feed only
        while something is watched; may raise DatabaseUnavailableError.
        """
        ...

    def environment(self) -> AbstractAsyncContextManager[None]:
        """What must surround the whole time the backend is open (PostgreSQL: a
        trio-asyncio loop, unless the host app runs one); entered by :func:`opened`."""
        ...

    async def open(self, *, migrate: bool = True) -> None:
        """Connect; apply pending migrations if ``migrate``, else fail with SchemaError when
        the schema is not current. Raises DatabaseUnavailableError if unreachable."""

    async def aclose(self) -> None:
        """Release every resource; safe to call twice."""

    async def create_database(self) -> bool:
        """Create the database itself if it does not exist (before :meth:`open`); True if
        it was created."""
        ...

    async def drop(self) -> None:
        """Delete trioforge's tables and every job in them (the database stays)."""
        ...

    async def schema_status(self) -> SchemaStatus: ...

    async def migrate(self) -> SchemaStatus: ...

    async def execute(self, ops: Sequence[Op], now: float) -> list[object]:
        """Run ``ops`` as one batch; per op, its result or the exception it raised.

        Cancellation: the storage actor never cancels a batch; a cancelled caller of a
        backend that crosses into another event loop must still give back its connection.
        """
        ...


@runtime_checkable
class StartsBatches(Backend, Protocol):
    """A backend that can start a batch without a trio task waiting on it (PostgreSQL: an
    asyncio task on its loop). The storage actor, and a caller who finds it idle, start
    batches this way: no task of theirs is woken to start the batch, nor to hand its
    results over (each is two passes of trio's scheduler saved per storage call)."""

    def start_batch(
        self, ops: Sequence[Op], now: float, done: Callable[[list[object] | BaseException], None]
    ) -> bool:
        """Start ``ops`` as :meth:`execute` would run them and return True at once, or
        return False if it cannot now (no loop to start it on; then :meth:`execute` it).
        ``done`` is called once, on trio's thread, with what :meth:`execute` would have
        returned or raised. No caller's cancel reaches a started batch: it ends on its own
        (or with the loop's teardown at close, when ``done`` gets an error)."""
        ...


@runtime_checkable
class AsyncioBackend(Backend, Protocol):
    """A backend that plain asyncio code can open too (``trioforge.aio``): the three
    built-in ones are."""

    def on_asyncio(self, *, migrate: bool = True) -> AbstractAsyncContextManager[AsyncioExecute]:
        """The backend open for a caller on plain asyncio, without trio, and closed after
        the block; yields how to run a batch there, with the same SQL and results as
        :meth:`execute`."""
        ...


class CallerConnections(Protocol):
    """A backend class that stores jobs with a caller's own connection, inside the
    caller's transaction (``enqueue(..., connection=)``); ``storage.backend_for_connection``
    finds it from the connection."""

    #: Whether :meth:`enqueue_in` must be awaited on asyncio's loop (the caller's
    #: connection lives there: a trio caller crosses into it); else any loop will do.
    enqueue_in_asyncio: ClassVar[bool]

    @classmethod
    async def enqueue_in(cls, connection: Any, op: Enqueue, now: float) -> list[Enqueued]:
        """Store ``op``'s jobs with ``connection``, in whatever transaction it is in: a
        rollback leaves no job."""
        ...


def refused_value(exc: BaseException) -> InvalidArgumentError:
    """The error an operation gives when the database or its driver refused one of its
    values (``exc``): the same on every backend, so the runtime can tell an operation that
    fails on its own data (it fails alone, and trying again would fail the same way) from
    a database that is away."""
    error = InvalidArgumentError(
        f"the database cannot store a value of this operation ({type(exc).__name__}: "
        f"{exc}); nothing of it was stored. Text must hold no NUL character or lone "
        "surrogate, and numbers must fit their column"
    )
    error.__cause__ = exc
    return error


@asynccontextmanager
async def opened(backend: Backend, *, migrate: bool = True) -> AsyncIterator[Backend]:
    """The backend, open for the block and closed after it (closing is shielded from
    cancellation, and nested inside the backend's environment)."""
    async with unwrapped(), backend.environment():
        await backend.open(migrate=migrate)
        try:
            yield backend
        finally:
            with trio.CancelScope(shield=True):
                await backend.aclose()
