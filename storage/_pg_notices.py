"""PostgreSQL notices (wake-ups, cancel requests, job changes), sent after the commit of
the writes they announce rather than inside it.

Why: a transaction that has called ``pg_notify`` takes one lock for the whole server at
commit and holds it until its commit record is flushed to disk, so every notifying write
of every process commits one at a time, each waiting for the previous one's flush. With
the notices inside the claims and outcomes, three worker processes drained no faster than
one, their backends waiting on that lock most of the time. A write's notices are therefore
collected while its batch runs (:func:`collecting`) and sent after its commit, for the
whole batch, in one statement of their own that writes nothing else and so need not wait
for a flush (:func:`send`).

Nothing is lost by the move: a notice is not durable either way. Listeners see it after
the write committed, as before, and one whose notice went missing (the connection lost
between the commit and the send) catches up at its next poll, as after a listener's
reconnect.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from trioforge._core.extras import needs_extra

with needs_extra("postgres", "PostgreSQL"):
    import asyncpg

__all__ = ["Notice", "collecting", "notify", "rolled_back", "send"]

#: A notice: its channel and its payload.
Notice = tuple[str, str]

#: The notices of the batch running in this asyncio task, if one is collecting them.
_collected: ContextVar[list[Notice] | None] = ContextVar("trioforge_notices", default=None)

#: Notices, in order, in one statement.
_NOTIFY = """
SELECT pg_notify(channel, payload)
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(channel, payload, ord) ORDER BY ord
"""

#: A batch's notices in a transaction of their own, which writes nothing durable: its
#: commit need not wait for the disk, so the server-wide lock is held for a moment only.
#: (Never for notices inside a caller's transaction: its commit must wait.)
_SEND = """
SELECT set_config('synchronous_commit', 'off', true), pg_notify(channel, payload)
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(channel, payload, ord) ORDER BY ord
"""


@contextmanager
def collecting() -> Iterator[list[Notice]]:
    """Collect the notices :func:`notify` is given in this context (the asyncio task of a
    batch) instead of sending them; the caller sends them with :func:`send` after the
    commit, and drops those of writes that rolled back."""
    notices: list[Notice] = []
    token = _collected.set(notices)
    try:
        yield notices
    finally:
        _collected.reset(token)


@contextmanager
def rolled_back() -> Iterator[None]:
    """Around a transaction: if it raises, its writes rolled back, so the notices collected
    meanwhile are dropped (the batch may run its ops again, one by one)."""
    collected = _collected.get()
    mark = 0 if collected is None else len(collected)
    try:
        yield
    except BaseException:
        if collected is not None:
            del collected[mark:]
        raise


async def notify(conn: asyncpg.Connection, channel: str, payloads: Iterable[str]) -> None:
    """Announce ``payloads`` on ``channel``: after the batch's commit when a batch is
    collecting (:func:`collecting`), else now on ``conn``, in whatever transaction it is in
    (delivered at its commit; a caller's own transaction, for ``enqueue_in``)."""
    collected = _collected.get()
    if collected is not None:
        collected.extend((channel, payload) for payload in payloads)
        return
    payloads = list(payloads)
    if payloads:
        await conn.execute(_NOTIFY, [channel] * len(payloads), payloads)


async def send(conn: asyncpg.Connection, notices: Sequence[Notice]) -> None:
    """Send ``notices`` on ``conn``, outside any transaction of the writes they announce."""
    if notices:
        await conn.execute(_SEND, [c for c, _ in notices], [p for _, p in notices])
