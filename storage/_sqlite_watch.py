"""Watching a SQLite file for commits by any connection, in any process.

SQLite pushes nothing to other processes, but ``PRAGMA data_version`` on a connection of
one's own moves whenever another connection committed: a read of the WAL index in shared
memory, no disk I/O and no lock. It is read after each write to the write-ahead log the
kernel tells of (Linux's inotify, through trio's event loop: an idle watch wakes once a
second), or elsewhere by a thread every ``interval`` seconds (four times less often after
a quiet quarter second); when it moved, a read-only query on the same connection finds
what is new, reported on trio's thread. Two watchers use this: the live
feed's change feed (``SQLiteBackend.changes``: "some jobs may have changed") and the
runtime's listener (``SQLiteBackend.listen``: jobs enqueued, cancels asked for, and the
wake-ups and freed concurrency slots other writes announce, by any process, as
:class:`NewWork` reads them).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from trioforge._core.errors import DatabaseUnavailableError
from trioforge.storage._records import CancelNotice, Notice, SlotsFreedNotice, WakeNotice
from trioforge.storage._sql_states import PENDING

if TYPE_CHECKING:
    from inotify_simple import INotify

__all__ = ["NewWork", "watching"]

T = TypeVar("T")

log = logging.getLogger("trioforge.storage")

#: Polling (no file events): after this many seconds without a commit, the file is read
#: ``QUIET_FACTOR`` times less often: each read costs a thread wake-up (tens of
#: microseconds of CPU on a virtual machine), and an idle worker should cost next to
#: nothing.
BUSY_SECONDS = 0.25
QUIET_FACTOR = 4
#: With file events: the pause after a look that found nothing new (most often the last
#: write of a commit just seen), so that a busy file costs at most a look per this long
#: beyond its commits.
FUTILE_PAUSE = 0.001
#: With file events: how long after the first write the kernel tells of the events are
#: read and the file looked at (a commit writes the log a few times: read after its last
#: write, they make one look, not a second that finds nothing new).
SETTLE = 0.0003
#: With file events, how often the version is read all the same (a write they could not
#: tell of, such as one on another machine's kernel, is seen within this).
EVENTLESS_SECONDS = 1.0


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
    """While inside, ``path`` is watched: ``reader(db)`` runs first, on the watching
    connection (its reads are the baseline: nothing before them is reported), and returns
    the read run each time the data version moves; each item it returns is passed to
    ``report`` on trio's thread. An ``sqlite3.Error`` ends the watch and ``ended`` is
    called on trio's thread.

    Where the kernel tells of writes to the file's write-ahead log (Linux's inotify), the
    version is read ``SETTLE`` after each (a read that finds nothing new pauses
    ``FUTILE_PAUSE``), once at the start, and otherwise every ``EVENTLESS_SECONDS``: an
    idle watch costs next to nothing, a busy file about a read per commit. Elsewhere a thread reads
    it every ``interval``, and every ``QUIET_FACTOR * interval`` after ``BUSY_SECONDS``
    without a commit. Leaving stops the watch within that.

    Raises DatabaseUnavailableError if the file cannot be opened for watching.
    """

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
    events = _log_events(path)  # after connect(): the log exists while a connection is open
    try:
        watch = _Watch(path, db, first, read, report, ended, events=events is not None)
    except BaseException:
        if events is not None:
            events.close()
        db.close()
        raise
    run = partial(watch.follow, events, interval) if events else partial(watch.poll, interval)
    try:
        async with trio.open_nursery() as nursery:
            # A limiter of its own: the thread lives as long as the watch and must not hold
            # one of the default limiter's tokens, which the application's threads share.
            own = trio.CapacityLimiter(1)
            nursery.start_soon(
                partial(trio.to_thread.run_sync, run, abandon_on_cancel=False, limiter=own)
            )
            try:
                yield
            finally:
                watch.leave()  # the thread ends within one interval; the nursery waits for it
    finally:
        watch.close()
        if events is not None:
            events.close()


def _log_events(path: Path) -> INotify | None:
    """The kernel's events for writes to the write-ahead log of ``path`` (every commit
    writes it), where it has them (Linux), else None. On Linux, having none is logged
    once per process (:func:`_polling_instead`): the watch then polls, which works but
    costs an idle process several times the CPU and adds milliseconds to every wake-up."""
    try:
        from inotify_simple import INotify, flags
    except ImportError:
        if sys.platform == "linux":  # a dependency on Linux: installed without it
            _polling_instead("package", "the inotify-simple package is not installed")
        return None
    try:
        events = INotify(nonblocking=True)
    except OSError as exc:
        _polling_instead(*_no_inotify(exc, "instances", None))
        return None
    try:
        events.add_watch(f"{path}-wal", flags.MODIFY)
    except OSError as exc:  # no watches left, or no log (the file is not in WAL mode)
        events.close()
        _polling_instead(*_no_inotify(exc, "watches", f"{path}-wal"))
        return None
    return events


#: The causes already logged by :func:`_polling_instead` (each once per process).
_LOGGED: set[object] = set()


def _no_inotify(exc: OSError, kind: str, watched: str | None) -> tuple[object, str]:
    """Why an inotify instance or watch (``kind``) could not be had (for ``watched``,
    None for an instance), and what fixes it; with the cause's key (kind and errno: one
    line per cause, whichever database file met it)."""
    key = (kind, exc.errno)
    if exc.errno in (errno.EMFILE, errno.ENOSPC):
        # EMFILE is also what a process out of file descriptors gets from inotify_init.
        fds = ", or this process's open-file limit (ulimit -n)" if exc.errno == errno.EMFILE else ""
        return key, (
            f"no inotify {kind} left ({exc.strerror}): raise the kernel's "
            f"fs.inotify.max_user_{kind} (sysctl; shared by every process of the user){fds}, "
            "or run fewer processes on this host"
        )
    if exc.errno == errno.ENOENT and watched is not None:
        return key, f"{watched!r} does not exist (the database is not in WAL mode)"
    return key, f"no inotify {kind[:-1]} ({exc.strerror or exc})"


def _polling_instead(key: object, text: str) -> None:
    """Log why the watch polls, once per cause and process: every SQLite file and every
    reconnect would otherwise repeat it."""
    if key in _LOGGED:
        return
    _LOGGED.add(key)
    log.warning(
        "SQLite's change watch gets no file events: %s. It polls the file instead (every "
        "change_poll_interval, 5 ms by default, %d times less often when quiet), which "
        "costs an idle process several times the CPU and each wake-up from another "
        "process a few milliseconds more",
        text, QUIET_FACTOR,
    )  # fmt: skip


class _Watch(Generic[T]):
    """One watch's connection and the version it last saw; :meth:`follow` and
    :meth:`poll` are the two ways it learns when to look again."""

    def __init__(
        self,
        path: Path,
        db: sqlite3.Connection,
        version: int,
        read: Callable[[], Sequence[T]],
        report: Callable[[T], None],
        ended: Callable[[], None],
        *,
        events: bool,
    ) -> None:
        self._path, self._db, self._version, self._read = path, db, version, read
        self._report, self._ended = report, ended
        self.stop = threading.Event()
        self.threaded = False  # its thread ran: it closes the connection itself
        self._token = trio.lowlevel.current_trio_token()
        # Wakes a thread waiting for file events when the watch is left.
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC) if events else -1

    def _look(self) -> tuple[bool, Sequence[T]]:
        """Whether the file changed since the last look, and what is new (in a thread: it
        reads the file)."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return False, ()
        self._version = version
        return True, self._read()

    def _deliver(self, items: Sequence[T]) -> None:
        for item in items:
            self._report(item)

    def follow(self, events: INotify, interval: float) -> None:
        """Look after each write the kernel tells of, and every ``EVENTLESS_SECONDS``
        regardless (in a thread of its own, for the watch's life: a look needs no trip
        through trio's thread pool). A look that finds nothing new (the event was of a
        commit already seen, or of no commit) waits ``FUTILE_PAUSE`` before the next.
        The log is never deleted while the watch's own connection is open."""
        waiting = select.poll()
        waiting.register(events.fileno(), select.POLLIN)
        waiting.register(self._wakeup, select.POLLIN)
        pause = 0.0  # before waiting for an event
        started = False

        def go_on() -> bool:
            nonlocal started
            if not started:  # a commit between the baseline and the watch made no event
                started = True
                return True
            if self.stop.wait(pause):
                return False
            if waiting.poll(EVENTLESS_SECONDS * 1000) and self.stop.wait(SETTLE):
                return False  # (a commit's writes end before the look: one event, one look)
            events.read(timeout=0)  # what they say does not matter: the look tells
            return not self.stop.is_set()

        def pace(moved: bool) -> None:
            nonlocal pause
            pause = 0.0 if moved else min(interval, FUTILE_PAUSE)

        self._run(go_on, pace)

    def poll(self, interval: float) -> None:
        """Look every ``interval``, every ``QUIET_FACTOR * interval`` after ``BUSY_SECONDS``
        without a change (in a thread of its own, for the watch's life)."""
        moved_at, wait = time.monotonic(), interval

        def pace(moved: bool) -> None:
            nonlocal moved_at, wait
            now = time.monotonic()
            if moved:
                moved_at, wait = now, interval
            elif now - moved_at > BUSY_SECONDS:
                wait = interval * QUIET_FACTOR

        self._run(lambda: not self.stop.wait(wait), pace)

    def _run(self, go_on: Callable[[], bool], pace: Callable[[bool], None]) -> None:
        """Look each time ``go_on()`` (which waits) says to, until it says not to; ``pace``
        hears whether each look found the file changed."""
        self.threaded = True
        token = self._token
        try:
            while go_on():
                moved, items = self._look()
                pace(moved)
                if items:
                    trio.from_thread.run_sync(self._deliver, items, trio_token=token)
        except (sqlite3.Error, OSError) as exc:
            log.warning("watching SQLite database %r stopped: %s", str(self._path), exc)
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._ended, trio_token=token)
        except trio.RunFinishedError:
            pass
        finally:
            self._db.close()

    def leave(self) -> None:
        """Stop the thread (it ends within one interval)."""
        self.stop.set()
        if self._wakeup >= 0:
            os.eventfd_write(self._wakeup, 1)

    def close(self) -> None:
        """Once no thread runs: close what the thread did not."""
        if not self.threaded:
            self._db.close()
        if self._wakeup >= 0:
            os.close(self._wakeup)


class NewWork:
    """What other connections did since the last read: a wake-up per queue for jobs
    enqueued (ids above the highest seen; ids only grow, the table is AUTOINCREMENT), with
    the earliest run_at among those still pending; a cancel notice per running job whose
    cancel was asked for since; and what writes that add no job announced in
    ``trioforge_wakes`` (a wake-up per queue whose count moved, at the run_at written, or
    due already when several writes came between two reads; slots freed)."""

    def __init__(self, db: sqlite3.Connection, address: str | None = None) -> None:
        self._db = db
        self._address = address
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
            if wakes:
                notices += self._enqueued(self._last_id, last_id)
            self._last_id = last_id
        if wakes_total != self._wakes_total:  # counts only grow: a change is a write
            notices += self._announced(report=wakes)
        cancels = frozenset(int(job_id) for job_id in asked.split(",")) if asked else frozenset()
        notices += [CancelNotice(job_id) for job_id in sorted(cancels - self._cancels)]
        self._cancels = cancels
        return notices

    def _enqueued(self, after: int, upto: int) -> list[Notice]:
        """The wake-ups for the jobs of ids ``after`` < id <= ``upto`` still pending. Due
        jobs that require no capability are addressed, as an enqueue addresses them on
        PostgreSQL, among the processes serving the queue, running the job's name and
        advertising an address that has not expired (read from their registry rows, the
        same for every reader whatever range of ids it read): each job to the one at its
        id modulo their number, so that one process claims it (owing it: passed on to
        every process if it cannot take it). This process hears of those addressed to it
        alone; of the rest, and of jobs due later, every process hears (a wake-up per
        queue)."""
        now = time.time()
        everyone: dict[str, float] = {}
        notices: list[Notice] = []
        for queue, addressable, name, run_at in self._db.execute(_NEW, (after, upto, now)):
            addresses = []
            if addressable and self._address is not None:
                rows = self._db.execute(_ADDRESSABLE, (queue, name, now)).fetchall()
                addresses = [address for (address,) in rows]
            if not addresses:
                everyone[queue] = min(run_at, everyone.get(queue, run_at))
            elif self._address in addresses:
                mine = (len(addresses), addresses.index(self._address))
                at = (after, upto, queue, name, now, *mine)
                owed, first = self._db.execute(_ADDRESSED, at).fetchone()
                if owed:
                    notices.append(WakeNotice(queue, first, owed))
        return [WakeNotice(queue, run_at) for queue, run_at in everyone.items()] + notices

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
#: The jobs inserted in a range of ids still pending, per queue, name and whether they
#: can be addressed (due by ?3, requiring no capability), with the earliest run_at. A
#: range of ids, never an index over the table (the unary ``+`` keeps the planner from
#: walking the (queue, run_at) index for the grouping, or the state index for the state).
_NEW = (
    "SELECT queue, run_at <= ?3 AND requires IS NULL, name, min(run_at) FROM trioforge_jobs "
    f"WHERE id > ?1 AND id <= ?2 AND +status IN {PENDING} "
    "GROUP BY +queue, run_at <= ?3 AND requires IS NULL, name"
)
#: The addresses of the processes a job of queue ?1 and name ?2 may wake alone at ?3, in
#: one order for every reader.
_ADDRESSABLE = """
SELECT json_extract(details, '$.wake_channel') AS address FROM trioforge_processes
WHERE json_extract(details, '$.wake_until') > ?3
  AND EXISTS (SELECT 1 FROM json_each(queues) WHERE value = ?1)
  AND EXISTS (SELECT 1 FROM json_each(job_names) WHERE value = ?2)
ORDER BY address
"""
#: How many of a range's due jobs of queue ?3 and name ?4 fall to the ?7th of ?6
#: addresses, and the earliest run_at among them.
_ADDRESSED = f"""
SELECT count(*), min(run_at) FROM trioforge_jobs
WHERE id > ?1 AND id <= ?2 AND +queue = ?3 AND name = ?4 AND +status IN {PENDING}
  AND run_at <= ?5 AND requires IS NULL AND id % ?6 = ?7
"""
