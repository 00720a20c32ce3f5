"""Database URLs to backends."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from trioforge._errors import ConfigurationError
from trioforge.storage._backend import Backend

__all__ = ["backend_for_url", "redact"]


def backend_for_url(url: str) -> Backend:
    """``sqlite:///relative.db``, ``sqlite:////abs.db``, ``memory://``, ``postgresql://...``."""
    scheme, sep, rest = url.partition("://")
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
        from trioforge.storage.sqlite import SQLiteBackend

        return SQLiteBackend(Path(rest[1:]))
    if scheme in ("postgresql", "postgres"):
        from trioforge.storage.postgres import PostgresBackend

        return PostgresBackend(url)
    raise ConfigurationError(
        f"unknown database scheme {scheme!r} in {url!r}; use sqlite, memory or postgresql"
    )


def redact(url: str) -> str:
    """The URL without its password, for messages and output."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
