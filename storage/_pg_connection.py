"""The PostgreSQL connection's own rules: the transaction-pooler option in the URL, the
pool's release hook, the connections kept between batches, and which driver errors mean a
lost connection or a refused value."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from trioforge._core.errors import ConfigurationError
from trioforge._core.extras import needs_extra

with needs_extra("postgres", "PostgreSQL"):
    import asyncpg

__all__ = ["Connections", "pooler_mode"]


def pooler_mode(url: str) -> tuple[str, bool, str | None]:
    """``url`` without trioforge's ``pooler`` option, whether it names a transaction pooler,
    and (then) the ``search_path`` taken out of it: a pooler refuses or drops it as a
    startup setting, so it is set in each transaction instead."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    pooler = [value for key, value in query if key == "pooler"]
    if not pooler:
        return url, False, None
    if pooler != ["transaction"]:
        raise ConfigurationError(
            f"pooler={pooler[-1]!r} in the database URL; the only value is "
            "pooler=transaction (PgBouncer's pool_mode = transaction; a session pooler "
            "needs no option)"
        )
    path = next((value for key, value in query if key == "search_path"), None)
    kept = [(key, value) for key, value in query if key not in ("pooler", "search_path")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(kept))), True, path


def _quoted(identifier: str) -> str:
    """``identifier`` as PostgreSQL quotes one (a parameter cannot stand for it)."""
    return '"{}"'.format(identifier.replace('"', '""'))


async def _probe(conn: asyncpg.Connection, *, channel: str, payload: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook: nothing to undo. Storage operations leave no session state
    (LISTEN has its own connection, leases are rows, the migration lock is per
    transaction) and asyncpg still rolls back an open transaction, so the default reset
    query, one more round trip per storage batch, is skipped."""
    del conn


class Connections:
    """The pool, with the connections of finished batches kept checked out for the next
    ones (asyncio side only).

    A pool's acquire and release cost more client CPU than the crossing into asyncio itself
    (the release runs in a task of its own), and storage batches follow each other all the
    time. A connection goes back to the pool instead when its batch was cancelled or raised,
    or when it is closed (also while kept) or still in a transaction: the pool's release
    rolls back, waits for a cancelled query, or drops a dead connection, so nothing is
    leaked and a pool of one stays usable. At most as many are kept as batches ran at once,
    and none while a caller waits on the pool (it would wait for a release that never came).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._kept: list[asyncpg.Connection] = []
        self._closing = False
        self._waiting = 0  # callers in the pool's acquire

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = None
        while self._kept and conn is None:
            kept = self._kept.pop()
            if kept.is_closed():  # the server dropped it meanwhile: the pool connects afresh
                await self.pool.release(kept)
            else:
                conn = kept
        if conn is None:
            self._waiting += 1
            try:
                conn = await self.pool.acquire()
            finally:
                self._waiting -= 1
        try:
            yield conn
        except BaseException:
            await self.pool.release(conn)
            raise
        if self._closing or self._waiting or conn.is_closed() or conn.is_in_transaction():
            await self.pool.release(conn)  # the pool's close waits for it
        else:
            self._kept.append(conn)

    async def close(self) -> None:
        """Every kept connection back to the pool, then the pool closed (after the batches
        still running, whose connections go back to the pool too)."""
        self._closing = True
        kept, self._kept = self._kept, []
        for conn in kept:
            await self.pool.release(conn)
        await self.pool.close()


#: Errors that mean the server went away or refused us (restarting, shut down, network),
#: not that an operation was wrong.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection is gone (so is every later op on it). asyncpg's
    interface and internal client errors on a connection we never share ("connection is
    closed"; "cannot switch to state", from the rollback of a transaction whose connection
    broke) are that too, but not interface errors that are also ValueErrors (bad
    arguments)."""
    if isinstance(exc, asyncpg.InternalClientError):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return not isinstance(exc, ValueError)
    return isinstance(exc, _CONNECTION_LOST)


def _bad_value(exc: BaseException) -> bool:
    """Whether ``exc`` refused one of the operation's values (text the server cannot
    encode, a number out of its column's range): trying again fails the same way."""
    if isinstance(exc, asyncpg.DataError | UnicodeError | OverflowError):
        return True
    # The driver's own DataError (an argument it cannot encode) is an InterfaceError that
    # is also a ValueError, as _lost describes.
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)
