"""Which storage errors retrying cannot fix.

A worker retries a failed storage call for as long as the error may pass: the database is
restarting, locked by another process, out of disk space for a moment. Some errors say
the database itself cannot be used until someone acts (a corrupt file, a read-only file or
server, tables that are gone): retrying them only fills the log, so the runtime stops with
the error instead. Errors of one operation's data (a value the database refuses) are
neither: they fail that operation alone.

Pure: the driver's error codes only (SQLite's ``sqlite_errorcode``, PostgreSQL's SQLSTATE
as asyncpg exposes it), no driver imported.
"""

from __future__ import annotations

from trioforge._core.errors import SchemaError

__all__ = ["permanent_failure"]

#: SQLite primary result codes (the low byte of ``sqlite_errorcode``).
_SQLITE = {
    3: "access to the file is denied",  # SQLITE_PERM
    8: "it is read-only",  # SQLITE_READONLY (and its extended codes)
    11: "the file is corrupt",  # SQLITE_CORRUPT
    26: "the file is not a SQLite database",  # SQLITE_NOTADB
}
#: Generic SQLite errors (SQLITE_ERROR) that mean the schema changed under the process.
_SQLITE_SCHEMA_GONE = ("no such table", "no such column")
#: PostgreSQL SQLSTATEs.
_POSTGRES = {
    "XX001": "its data is corrupt",  # data_corrupted
    "XX002": "an index is corrupt",  # index_corrupted
    "25006": "it is read-only (a standby, or default_transaction_read_only)",
    "42501": "this user lacks a privilege on trioforge's tables",  # insufficient_privilege
    "42P01": "trioforge's tables are gone",  # undefined_table
    "42703": "trioforge's tables changed",  # undefined_column
    "3F000": "trioforge's schema is gone",  # invalid_schema_name
    "3D000": "the database is gone",  # invalid_catalog_name
}


def permanent_failure(exc: BaseException) -> str | None:
    """Why ``exc`` means the database cannot be used until someone fixes it, as a few
    words to follow "the database ..."; None if the error may pass or concerns one
    operation only."""
    if isinstance(exc, SchemaError):
        return f"has the wrong schema ({exc})"
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        reason = _SQLITE.get(code & 0xFF)
        if reason is None and code == 1 and str(exc).startswith(_SQLITE_SCHEMA_GONE):
            reason = "trioforge's tables changed or are gone"
        return None if reason is None else f"cannot be used: {reason} ({exc})"
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state in _POSTGRES:
        return f"cannot be used: {_POSTGRES[state]} ({exc})"
    return None
