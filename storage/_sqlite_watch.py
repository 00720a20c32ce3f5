"""Watching a SQLite file for commits by any connection, in any process.

SQLite pushes nothing to other processes, but ``PRAGMA data_version`` on a connection of
one's own moves whenever another connection committed: a read of the WAL index in shared
memory, no disk I/O and no lock. A thread reads it every ``interval`` seconds (four times
less often after a quiet quarter second) and, when it moved, runs a read-only query on the
same connection and reports what it found on trio's thread. Two watchers use this: the live
feed's change feed (``SQLiteBackend.changes``: "some jobs may have changed") and the
runtime's listener (``SQLiteBackend.listen``: jobs enqueued, cancels asked for, and the
wake-ups and freed concurrency slots other writes announce, by any process, as
:class:`NewWork` reads them).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from trioforge._core.errors import DatabaseUnavailableError
from trioforge.storage._records import CancelNotice, Notice, SlotsFreedNotice, WakeNotice
from trioforge.storage._sql_states import PENDING

__all__ = ["NewWork", "watching"]

T = TypeVar("T")

log = logging.getLogger("trioforge.storage")

#: After this many seconds without a commit, the file is read ``QUIET_FACTOR`` times less
#: often: each read costs a thread wake-up (tens of microseconds of CPU on a virtual
#: machine), and an idle worker should cost next to nothing.
BUSY_SECONDS = 0.25
QUIET_FACTOR = 4


@asynccontextmanager
async def watching(
    path: Path,
    *,
    busy_timeout: float,
    interval: float,
    reader: Callable[[sqlite3.Connection], Callable[[], Sequence[T]]],
    report: Callable[[T], None],
    ended: Callable[[], None],
) -> AsyncIterator[None]:
    """While inside, a thread watches ``path``: ``reader(db)`` runs first, on the watching
    connection (its reads are the baseline: nothing before them is reported), and returns
    the read run each time the data version moves; each item it returns is passed to
    ``report`` on trio's thread. An ``sqlite3.Error`` in the thread ends the watch and
    ``ended`` is called on trio's thread. After ``BUSY_SECONDS`` without a commit the file
    is read every ``QUIET_FACTOR * interval``. Leaving stops the thread within that.

    Raises DatabaseUnavailableError if the file cannot be opened for watching.
    """
    stop = threading.Event()
    token = trio.lowlevel.current_trio_token()

    def connect() -> tuple[sqlite3.Connection, int, Callable[[], Sequence[T]]]:
        db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA query_only = 1")
            version: int = db.execute("PRAGMA data_version").fetchone()[0]
            return db, version, reader(db)
        except BaseException:
            db.close()
            raise

    try:
        db, first, read = await trio.to_thread.run_sync(connect)
    except sqlite3.Error as exc:
        raise DatabaseUnavailableError(
            f"cannot watch SQLite database {str(path)!r} for changes: {exc}"
        ) from None

    def deliver(items: Sequence[T]) -> None:
        for item in items:
            report(item)

    ran = False  # a watch cancelled before its thread started closes the connection here

    def watch() -> None:
        nonlocal ran
        ran = True
        try:
            last, moved_at, wait = first, time.monotonic(), interval
            while not stop.wait(wait):
                version = db.execute("PRAGMA data_version").fetchone()[0]
                now = time.monotonic()
                if now - moved_at > BUSY_SECONDS:
                    wait = interval * QUIET_FACTOR
                if version != last:
                    last, moved_at, wait = version, now, interval
                    items = read()
                    if items:
                        trio.from_thread.run_sync(deliver, items, trio_token=token)
        except sqlite3.Error as exc:
            log.warning("watching SQLite database %r stopped: %s", str(path), exc)
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(ended, trio_token=token)
        except trio.RunFinishedError:
            pass
        finally:
            db.close()

    try:
        async with trio.open_nursery() as nursery:
            # A limiter of its own: the thread lives as long as the watch and must not hold
            # one of the default limiter's tokens, which the application's threads share.
            own = trio.CapacityLimiter(1)
            nursery.start_soon(
                partial(trio.to_thread.run_sync, watch, abandon_on_cancel=False, limiter=own)
            )
            try:
                yield
            finally:
                stop.set()  # the thread ends within one interval; the nursery waits for it
    finally:
        if not ran:  # the nursery is done: no thread can still be using it
            db.close()


class NewWork:
    """What other connections did since the last read: a wake-up per queue for jobs
    enqueued (ids above the highest seen; ids only grow, the table is AUTOINCREMENT), with
    the earliest run_at among those still pending; a cancel notice per running job whose
    cancel was asked for since; and what writes that add no job announced in
    ``trioforge_wakes`` (a wake-up per queue whose count moved, at the run_at written, or
    due already when several writes came between two reads; slots freed)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._last_id = 0
        self._cancels: frozenset[int] = frozenset()
        self._wakes_total = 0
        self._wakes: dict[tuple[str, str], int] = {}
        self._read(wakes=False)  # the baseline: what is there already is not reported

    def read(self) -> list[Notice]:
        return self._read(wakes=True)

    def _read(self, *, wakes: bool) -> list[Notice]:
        # One statement (one snapshot, one hand-over of the GIL) while nothing was enqueued:
        # the file changes at every batch of a drain.
        last_id, asked, wakes_total = self._db.execute(_SINCE).fetchone()
        notices: list[Notice] = []
        if last_id is not None and last_id > self._last_id:
            if wakes:  # rows inserted after that statement are found now and again next time
                found = self._db.execute(_WAKES, (self._last_id,))
                notices += [WakeNotice(queue, run_at) for queue, run_at in found]
            self._last_id = last_id
        if wakes_total != self._wakes_total:  # counts only grow: a change is a write
            notices += self._announced(report=wakes)
        cancels = frozenset(int(job_id) for job_id in asked.split(",")) if asked else frozenset()
        notices += [CancelNotice(job_id) for job_id in sorted(cancels - self._cancels)]
        self._cancels = cancels
        return notices

    def _announced(self, *, report: bool) -> list[Notice]:
        notices: list[Notice] = []
        total = 0
        for kind, queue, run_at, n in self._db.execute(_ANNOUNCED):
            total += n
            seen = self._wakes.get((kind, queue), 0)
            if n != seen and report:
                if kind == "f":
                    notices.append(SlotsFreedNotice())
                else:  # one write since the last read: its run_at; more: any may be due
                    notices.append(WakeNotice(queue, run_at if n == seen + 1 else 0.0))
            self._wakes[kind, queue] = n
        self._wakes_total = total
        return notices


#: The highest job id given so far, the running jobs whose cancel was asked for (through
#: their own index, usually empty), and how many wake-ups writes have announced.
_SINCE = (
    "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'trioforge_jobs'), "
    "(SELECT group_concat(id) FROM trioforge_jobs "
    "WHERE status = 'running' AND cancel_requested), "
    "(SELECT coalesce(sum(n), 0) FROM trioforge_wakes)"
)
#: The wake-ups writes announced, a row per kind and queue with its count.
_ANNOUNCED = "SELECT kind, queue, run_at, n FROM trioforge_wakes"
#: Per queue, the earliest run_at among the jobs inserted after an id, still pending: a
#: range of ids, never an index over the table (the unary ``+`` keeps the planner from
#: walking the (queue, run_at) index for the grouping, or the state index for the state).
_WAKES = (
    "SELECT queue, min(run_at) FROM trioforge_jobs "
    f"WHERE id > ? AND +status IN {PENDING} GROUP BY +queue"
)
