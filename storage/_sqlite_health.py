"""Whether a SQLite file can be used: checked when it is opened, and in full on demand.

Opening checks what a worker needs before it says it is ready: the pages read back
(``PRAGMA quick_check``, given a time budget so a very large file does not hold up a
start; the runtime still stops on corruption found later) and a write goes through (one
rolled back). ``trioforge db status --check`` runs the full ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from trioforge._core.errors import DatabaseUnavailableError
from trioforge.storage._health import permanent_failure

__all__ = ["QUICK_CHECK_BUDGET", "check_usable", "integrity_problems"]

#: Seconds ``quick_check`` may take at open before it is left to ``db status --check``.
QUICK_CHECK_BUDGET = 1.0


def _unusable(path: Path, exc: sqlite3.Error) -> DatabaseUnavailableError:
    reason = permanent_failure(exc) or f"cannot be used ({exc})"
    if exc.sqlite_errorcode & 0xFF == 8:  # SQLITE_READONLY
        fix = (
            "give this process write access to the file and its directory (SQLite writes "
            f"{path.name}-wal and {path.name}-shm beside it)"
        )
    elif exc.sqlite_errorcode & 0xFF in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        fix = (
            f"restore it from a backup, or salvage its rows with `sqlite3 {path} .recover`; "
            "`trioforge db status --check` lists every problem"
        )
    else:
        fix = "check the file and its permissions"
    return DatabaseUnavailableError(f"SQLite database {str(path)!r} {reason}; {fix}")


def check_usable(db: sqlite3.Connection, path: Path) -> None:
    """Raise DatabaseUnavailableError naming the fix unless ``db`` reads and writes."""
    try:
        problems = _quick_check(db)
        if problems:
            raise DatabaseUnavailableError(
                f"SQLite database {str(path)!r} is corrupt ({problems[0]}); restore it from "
                f"a backup, or salvage its rows with `sqlite3 {path} .recover`; "
                "`trioforge db status --check` lists every problem"
            )
        db.execute("BEGIN IMMEDIATE")
        try:  # the same value, rolled back: a write that changes nothing
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            db.execute(f"PRAGMA user_version = {version}")
        finally:
            db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise _unusable(path, exc) from None


def _quick_check(db: sqlite3.Connection) -> list[str]:
    """``PRAGMA quick_check``'s problems (none: ok, or over the time budget)."""
    give_up = time.monotonic() + QUICK_CHECK_BUDGET
    db.set_progress_handler(lambda: time.monotonic() > give_up, 10_000)
    try:
        rows = db.execute("PRAGMA quick_check(20)").fetchall()
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode == 9:  # SQLITE_INTERRUPT: over budget
            return []
        raise
    finally:
        db.set_progress_handler(None, 0)
    return [] if rows == [("ok",)] else [str(row[0]) for row in rows]


def integrity_problems(path: Path) -> list[str]:
    """Every problem ``PRAGMA integrity_check`` finds (up to 100), read-only; empty: ok."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [f"cannot open it: {exc}"]
    try:
        rows = db.execute("PRAGMA integrity_check(100)").fetchall()
    except sqlite3.Error as exc:
        return [str(exc)]
    finally:
        db.close()
    return [] if rows == [("ok",)] else [str(row[0]) for row in rows]
