"""Database URLs, and callers' own connections, to backends."""

from __future__ import annotations

import sqlite3
import sys
import urllib.parse
from pathlib import Path

from trioforge._core.errors import ConfigurationError, InvalidArgumentError
from trioforge.storage._backend import Backend, CallerConnections

__all__ = ["backend_for_connection", "backend_for_url", "redact"]


def backend_for_url(url: str, *, listen_url: str | None = None) -> Backend:
    """``sqlite:///relative.db``, ``sqlite:////abs.db``, ``memory://``, ``postgresql://...``
    (``listen_url``: PostgreSQL's LISTEN connection, when ``url`` goes through a pooler)."""
    scheme, sep, rest = url.partition("://")
    if listen_url is not None and scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"listen_url is for PostgreSQL, but the database is {redact(url)!r}; "
            "unset it (TRIOFORGE_LISTEN_URL, --listen-url, listen_url in the settings)"
        )
    if not sep:
        raise ConfigurationError(
            f"database URL {url!r} has no scheme; use sqlite:///path.db, memory:// "
            "or postgresql://user@host:port/db"
        )
    if scheme == "memory":
        from trioforge.storage.memory import MemoryBackend

        return MemoryBackend()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigurationError(
                f"SQLite URL {url!r} needs a path: sqlite:///relative.db or sqlite:////abs.db"
            )
        if "?" in rest or "#" in rest:
            raise ConfigurationError(
                f"SQLite URL {url!r} has a query or fragment; trioforge takes no options in "
                "SQLite URLs (use sqlite:///path.db)"
            )
        from trioforge.storage.sqlite import SQLiteBackend

        return SQLiteBackend(Path(rest[1:]))
    if scheme in ("postgresql", "postgres"):
        _check_port(url)
        if listen_url is not None:
            _check_port(listen_url)
        from trioforge.storage.postgres import PostgresBackend

        return PostgresBackend(url, listen_url=listen_url)
    raise ConfigurationError(
        f"unknown database scheme {scheme!r} in {url!r}; use sqlite, memory or postgresql"
    )


def backend_for_connection(connection: object) -> type[CallerConnections]:
    """The backend whose ``enqueue_in`` takes ``connection``: a sqlite3
    connection (to the database file) or an asyncpg one, pooled or not."""
    if isinstance(connection, sqlite3.Connection):
        from trioforge.storage.sqlite import SQLiteBackend

        return SQLiteBackend
    if "asyncpg" in sys.modules:  # without the postgres extra there is no asyncpg connection
        import asyncpg
        import asyncpg.pool

        if isinstance(connection, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
            from trioforge.storage.postgres import PostgresBackend

            return PostgresBackend
    raise InvalidArgumentError(
        f"connection must be an asyncpg connection or a sqlite3 connection, got "
        f"{type(connection).__name__}"
    )


def _check_port(url: str) -> None:
    """A PostgreSQL URL parses and its port is a number from 1 to 65535 (asyncpg's own
    errors for a bad one are a long traceback or an OverflowError)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"database URL is malformed: {exc}") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigurationError(
            f"database URL {redact(url)!r} has a bad port; use a number from 1 to 65535 "
            "(postgresql://user@host:5432/db)"
        )


def redact(url: str) -> str:
    """The URL without its password, for messages and output."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
