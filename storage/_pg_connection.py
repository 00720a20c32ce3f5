"""The PostgreSQL connection's own rules: the transaction-pooler option in the URL, the
pool's release hook, and which driver errors mean a lost connection or a refused value."""

from __future__ import annotations

import urllib.parse

from trioforge._core.errors import ConfigurationError
from trioforge._core.extras import needs_extra

with needs_extra("postgres", "PostgreSQL"):
    import asyncpg

__all__ = ["pooler_mode"]


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
