"""The SQLite backend: the default, one file, many processes.

WAL mode, one connection used from a worker thread: each batch of operations is one thread
hop and one ``BEGIN IMMEDIATE`` transaction, so many claims, outcomes and enqueues share one
commit. Several processes may use the same file; SQLite's write lock serialises them, and
leases plus the reaper hand a crashed process's jobs to another. The rules are those of
:mod:`trioforge._core`, written as SQL; the contract suite holds it to the memory backend.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

import attrs
import trio

from trioforge._core.errors import (
    DatabaseUnavailableError,
    InvalidArgumentError,
    InvalidStateError,
    JobNotFoundError,
    SchemaError,
    TrioforgeError,
)
from trioforge._core.flow import FLOW_WINDOW, Bucket, FlowGate
from trioforge._core.states import (
    TERMINAL_STATES,
    JobState,
    Released,
    Suspended,
    claim_key,
    next_state,
)
from trioforge.storage import _ops as ops
from trioforge.storage._backend import Changed, refused_value
from trioforge.storage._counts import Tally
from trioforge.storage._records import (
    JOB_COLUMNS,
    AttemptRecord,
    CancelResult,
    ChildRecord,
    ClaimedJob,
    ClaimResult,
    CronState,
    Enqueued,
    FireResult,
    JobInfo,
    NewJob,
    Notice,
    Outcome,
    ProcessDetails,
    ProcessInfo,
    RenewResult,
    RescuedJob,
    SchemaStatus,
    SignalRecord,
    StepRecord,
    StepWrite,
    WorkflowRecord,
    job_info,
    names_by_queue,
    not_a_run,
    step_record,
    step_row,
)
from trioforge.storage._sqlite_health import check_usable

__all__ = ["SQLiteBackend"]

_PENDING_SQL = "('scheduled', 'available', 'retrying')"
_TERMINAL_SQL = "('completed', 'dead', 'cancelled', 'compensated')"
#: The terminal states before workflows (the first migration's indexes name them).
_TERMINAL_V1 = "('completed', 'dead', 'cancelled')"


def _second(at: str) -> str:
    """SQL for the whole second an epoch time falls in (its floor; CAST truncates)."""
    return f"(CAST({at} AS INTEGER) - ({at} < CAST({at} AS INTEGER)))"


MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE trioforge_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        queue TEXT NOT NULL,
        payload TEXT NOT NULL,
        priority INTEGER NOT NULL,
        run_at REAL NOT NULL,
        max_attempts INTEGER NOT NULL,
        idempotency_key TEXT,
        created_at REAL NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        lease INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until REAL,
        started_at REAL,
        finished_at REAL,
        result TEXT,
        error TEXT,
        progress REAL,
        progress_message TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX trioforge_jobs_claim ON trioforge_jobs (queue, priority DESC, run_at, id)
        WHERE status IN {_PENDING_SQL};
    CREATE INDEX trioforge_jobs_upcoming ON trioforge_jobs (queue, run_at)
        WHERE status IN {_PENDING_SQL};
    CREATE UNIQUE INDEX trioforge_jobs_idempotency ON trioforge_jobs (idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status NOT IN {_TERMINAL_V1};
    CREATE INDEX trioforge_jobs_leases ON trioforge_jobs (lease_until) WHERE status = 'running'
    """,
    """
    CREATE TABLE trioforge_processes (
        owner TEXT PRIMARY KEY,
        queues TEXT NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    CREATE TABLE trioforge_leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        until REAL NOT NULL
    )
    """,
    """
    CREATE TABLE trioforge_cron (
        name TEXT PRIMARY KEY,
        last_tick REAL NOT NULL,
        last_job_id INTEGER,
        skipped INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE trioforge_paused_queues (
        name TEXT PRIMARY KEY,
        paused_at REAL NOT NULL
    )
    """,
    # Per-enqueue timeouts.
    """
    ALTER TABLE trioforge_jobs ADD COLUMN timeout REAL
    """,
    # The dashboard: pages by state and by name, counts per queue and state, throughput.
    """
    CREATE INDEX trioforge_jobs_status_id ON trioforge_jobs (status, id);
    CREATE INDEX trioforge_jobs_name_id ON trioforge_jobs (name, id);
    CREATE INDEX trioforge_jobs_queue_status ON trioforge_jobs (queue, status);
    CREATE INDEX trioforge_jobs_finished ON trioforge_jobs (finished_at)
        WHERE finished_at IS NOT NULL
    """,
    # Flow control: required capabilities (a JSON array), rate and concurrency keys, and
    # the token buckets.
    """
    ALTER TABLE trioforge_jobs ADD COLUMN requires TEXT;
    ALTER TABLE trioforge_jobs ADD COLUMN rate_key TEXT;
    ALTER TABLE trioforge_jobs ADD COLUMN concurrency_key TEXT;
    CREATE INDEX trioforge_jobs_running_keys ON trioforge_jobs (concurrency_key)
        WHERE status = 'running' AND concurrency_key IS NOT NULL;
    CREATE TABLE trioforge_limits (
        key TEXT PRIMARY KEY,
        tokens REAL,
        at REAL
    )
    """,
    # What each process says about itself (host, pid, pools, capabilities, running jobs).
    """
    ALTER TABLE trioforge_processes ADD COLUMN details TEXT
    """,
    # Attempt history: an error is kept when a later write replaces it; it goes with its job.
    """
    CREATE TABLE trioforge_attempts (
        job_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        started_at REAL,
        error TEXT NOT NULL
    );
    CREATE INDEX trioforge_attempts_job ON trioforge_attempts (job_id);
    CREATE TRIGGER trioforge_jobs_keep_errors AFTER UPDATE OF error ON trioforge_jobs
    WHEN OLD.error IS NOT NULL AND NEW.error IS NOT OLD.error
    BEGIN
        INSERT INTO trioforge_attempts (job_id, attempt, started_at, error)
        VALUES (OLD.id, OLD.attempt, OLD.started_at, OLD.error);
    END;
    CREATE TRIGGER trioforge_jobs_forget_errors AFTER DELETE ON trioforge_jobs
    BEGIN
        DELETE FROM trioforge_attempts WHERE job_id = OLD.id;
    END
    """,
    # unique_for: a key's finished jobs, by when they finished.
    """
    CREATE INDEX trioforge_jobs_keys_finished ON trioforge_jobs (idempotency_key, finished_at)
        WHERE idempotency_key IS NOT NULL AND finished_at IS NOT NULL
    """,
    # The dashboard's indexes, cheaper: an index on (status, id), (queue, status) or
    # finished_at is rewritten by every claim and outcome (half the drain rate on SQLite).
    # Lists of the rare states use partial indexes that a normal run never touches; the
    # common states are found by walking ids; counts scan.
    """
    DROP INDEX trioforge_jobs_status_id;
    DROP INDEX trioforge_jobs_queue_status;
    DROP INDEX trioforge_jobs_finished;
    CREATE INDEX trioforge_jobs_dead ON trioforge_jobs (id) WHERE status = 'dead';
    CREATE INDEX trioforge_jobs_cancelled ON trioforge_jobs (id) WHERE status = 'cancelled';
    CREATE INDEX trioforge_jobs_retrying ON trioforge_jobs (id) WHERE status = 'retrying';
    CREATE INDEX trioforge_jobs_scheduled ON trioforge_jobs (id) WHERE status = 'scheduled'
    """,
    # Workflows: runs, their records and signals, child jobs and wake-ups; "compensated"
    # joins the terminal states the idempotency index leaves out.
    f"""
    ALTER TABLE trioforge_jobs ADD COLUMN parent_id INTEGER;
    ALTER TABLE trioforge_jobs ADD COLUMN workflow INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE trioforge_jobs ADD COLUMN wake_requested INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX trioforge_jobs_parent ON trioforge_jobs (parent_id) WHERE parent_id IS NOT NULL;
    DROP INDEX trioforge_jobs_idempotency;
    CREATE UNIQUE INDEX trioforge_jobs_idempotency ON trioforge_jobs (idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status NOT IN {_TERMINAL_SQL};
    CREATE TABLE trioforge_workflow_steps (
        run_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        wake_at REAL,
        compensable INTEGER NOT NULL,
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE trioforge_workflow_signals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        payload TEXT NOT NULL,
        sent_at REAL NOT NULL
    );
    CREATE INDEX trioforge_workflow_signals_run ON trioforge_workflow_signals (run_id, id)
    """,
    # Tracing: the enqueuer's trace context (JSON text), read back by every claim.
    """
    ALTER TABLE trioforge_jobs ADD COLUMN trace_context TEXT
    """,
    # The dashboard's list of workflow runs, newest first: only runs are in it, and none of
    # its columns (id, workflow) ever changes, so claims and outcomes never rewrite it.
    """
    CREATE INDEX trioforge_jobs_runs ON trioforge_jobs (id) WHERE workflow = 1
    """,
    # Counts kept as jobs change, so the dashboard and /metrics read a few rows instead of
    # scanning every job: per (queue, state), and per (second finished, queue, state) for
    # throughput; filled here from the jobs already stored. Each write of jobs adds its net
    # changes in its own transaction (storage._counts: one statement per operation, not
    # per job): row triggers doing the same cost a claim and an outcome about 10
    # microseconds per job, a fifth of the drain rate.
    f"""
    CREATE TABLE trioforge_counts (
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (queue, state)
    ) WITHOUT ROWID;
    CREATE TABLE trioforge_finished (
        second INTEGER NOT NULL,
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (second, queue, state)
    ) WITHOUT ROWID;
    INSERT INTO trioforge_counts (queue, state, n)
        SELECT queue, status, count(*) FROM trioforge_jobs GROUP BY queue, status;
    INSERT INTO trioforge_finished (second, queue, state, n)
        SELECT {_second("finished_at")}, queue, status, count(*) FROM trioforge_jobs
        WHERE finished_at IS NOT NULL GROUP BY 1, 2, 3
    """,
    # The job names each process runs (a JSON array; NULL: it did not say), to find jobs
    # that nobody runs.
    """
    ALTER TABLE trioforge_processes ADD COLUMN job_names TEXT
    """,
)

_TABLES = (
    "trioforge_jobs", "trioforge_processes", "trioforge_leases", "trioforge_cron",
    "trioforge_paused_queues", "trioforge_limits", "trioforge_attempts",
    "trioforge_workflow_steps", "trioforge_workflow_signals", "trioforge_counts",
    "trioforge_finished", "trioforge_schema",
)  # fmt: skip


_INSERT = (
    "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, max_attempts, "
    "idempotency_key, created_at, status, timeout, requires, rate_key, concurrency_key, "
    "parent_id, workflow, trace_context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _first_state(j: NewJob, now: float) -> str:
    return "scheduled" if j.run_at > now else "available"


def _insert_row(j: NewJob, key: str | None, now: float) -> tuple[object, ...]:
    return (
        j.name, j.queue, j.payload, j.priority, j.run_at, j.max_attempts, key, now,
        _first_state(j, now), j.timeout,
        json.dumps(list(j.requires)) if j.requires else None, j.rate_key, j.concurrency_key,
        j.parent_id, int(j.workflow), j.trace_context,
    )  # fmt: skip


#: A job this claimer can run: every capability it requires is in the JSON array ?caps.
_CAPABLE = (
    "(requires IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(requires) AS r "
    "WHERE r.value NOT IN (SELECT value FROM json_each({caps}))))"
)

#: The unfinished job holding an idempotency key, if any.
#: The last job holding an idempotency key that finished at or after a time, if any.
_KEY_FINISHED = (
    "SELECT id FROM trioforge_jobs WHERE idempotency_key = ? AND finished_at >= ? "
    "ORDER BY finished_at DESC LIMIT 1"
)

_KEY_HOLDER = (
    f"SELECT id FROM trioforge_jobs WHERE idempotency_key = ? AND status NOT IN {_TERMINAL_SQL}"
)

#: The jobs a claim takes, as a subquery: due, in claim order (id last, so the order is
#: total and the same statement twice under the write lock picks the same jobs).
_DUE = f"""
    SELECT id, status FROM trioforge_jobs INDEXED BY trioforge_jobs_claim
    WHERE queue = ? AND status IN {_PENDING_SQL} AND run_at <= ?
      AND name IN (SELECT value FROM json_each(?)) AND {_CAPABLE.format(caps="?")}
    ORDER BY priority DESC, run_at, id
    LIMIT ?
"""

#: How many of the jobs the claim will take are in each state (for the counts).
_DUE_STATES = f"SELECT status, count(*) FROM ({_DUE}) GROUP BY status"

_CLAIM = f"""
UPDATE trioforge_jobs
SET status = 'running', attempt = attempt + 1, lease = lease + 1, lease_owner = ?,
    lease_until = ?, started_at = ?, error = NULL, progress = NULL, progress_message = NULL
WHERE id IN (SELECT id FROM ({_DUE}))
RETURNING id, name, queue, payload, priority, run_at, attempt, max_attempts, lease, timeout,
    trace_context
"""

#: A flow-controlled claim reads due jobs in claim order, a chunk at a time, each with the
#: running count of its concurrency key and its rate key's stored bucket; decides in Python
#: (FlowGate, the shared rule), then claims the chosen ids. The write lock is held
#: throughout, so nothing read here changes before the claim commits.
_CANDIDATES = f"""
SELECT j.id, j.name, j.rate_key, j.concurrency_key,
    CASE WHEN j.concurrency_key IS NOT NULL THEN (
        SELECT count(*) FROM trioforge_jobs AS r INDEXED BY trioforge_jobs_running_keys
        WHERE r.status = 'running' AND r.concurrency_key IS NOT NULL
          AND r.concurrency_key = j.concurrency_key) END,
    l.tokens, l.at, j.status
FROM trioforge_jobs AS j INDEXED BY trioforge_jobs_claim
LEFT JOIN trioforge_limits AS l ON j.rate_key IS NOT NULL AND l.key = 'r:' || j.rate_key
WHERE j.queue = ?1 AND j.status IN {_PENDING_SQL} AND j.run_at <= ?2
  AND j.name IN (SELECT value FROM json_each(?3)) AND {_CAPABLE.format(caps="?4")}
ORDER BY j.priority DESC, j.run_at, j.id
LIMIT ?5 OFFSET ?6
"""

#: The running attempts among ids, with their concurrency key (those without one: no slot).
_ENDING = """
SELECT concurrency_key, id, lease FROM trioforge_jobs
WHERE id IN (SELECT value FROM json_each(?)) AND status = 'running'
  AND concurrency_key IS NOT NULL
"""

_CLAIM_IDS = """
UPDATE trioforge_jobs
SET status = 'running', attempt = attempt + 1, lease = lease + 1, lease_owner = ?,
    lease_until = ?, started_at = ?, error = NULL, progress = NULL, progress_message = NULL
WHERE id IN (SELECT value FROM json_each(?))
RETURNING id, name, queue, payload, priority, run_at, attempt, max_attempts, lease, timeout,
    trace_context
"""

_STORE_BUCKETS = """
INSERT INTO trioforge_limits (key, tokens, at)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
FROM json_each(?) WHERE true
ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at
"""

#: Before a claim, in one statement: whether the queue is paused, and the earliest run_at
#: still in the future (the jobs being claimed are due, so the claim cannot change it).
_PAUSED_AND_UPCOMING = f"""
SELECT EXISTS (SELECT 1 FROM trioforge_paused_queues WHERE name = ?1),
    (SELECT min(run_at) FROM trioforge_jobs
     WHERE queue = ?1 AND status IN {_PENDING_SQL} AND run_at > ?2
       AND name IN (SELECT value FROM json_each(?3)) AND {_CAPABLE.format(caps="?4")})
"""

#: Every outcome of a batch in one statement (one GIL hand-off in the writer thread, not
#: one per job): rows of [id, lease, status, run_at, released, finished_at, result, error]
#: as JSON, whose numbers SQLite reads back exactly.
_FINISH = """
WITH u AS (
    SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS lease,
        json_extract(value, '$[2]') AS status, json_extract(value, '$[3]') AS run_at,
        json_extract(value, '$[4]') AS released, json_extract(value, '$[5]') AS finished_at,
        json_extract(value, '$[6]') AS result, json_extract(value, '$[7]') AS error
    FROM json_each(?1)
)
UPDATE trioforge_jobs AS j
SET status = u.status, attempt = j.attempt - u.released,
    run_at = CASE WHEN u.status = 'scheduled' AND j.wake_requested THEN ?2
        ELSE coalesce(u.run_at, j.run_at) END,
    lease_owner = NULL, lease_until = NULL, finished_at = u.finished_at, result = u.result,
    error = u.error
FROM u WHERE j.id = u.id AND j.status = 'running' AND j.lease = u.lease
RETURNING id, lease, queue, status, finished_at
"""

#: The workflow runs whose children (ids as a JSON array) just ended: a waiting run is due
#: now, a running one will be when it suspends.
_WAKE_PARENTS = f"""
UPDATE trioforge_jobs
SET run_at = CASE WHEN status IN {_PENDING_SQL} AND run_at > ?1 THEN ?1 ELSE run_at END,
    wake_requested = CASE WHEN status = 'running' THEN 1 ELSE wake_requested END
WHERE id IN (SELECT parent_id FROM trioforge_jobs
             WHERE id IN (SELECT value FROM json_each(?2)) AND parent_id IS NOT NULL)
"""

_STEP_COLUMNS = (
    "seq, kind, name, status, attempt, result, error, wake_at, compensable, started_at, finished_at"
)


def _in_claim_order(rows: list[Any]) -> tuple[ClaimedJob, ...]:
    jobs = (ClaimedJob(*row) for row in rows)
    return tuple(sorted(jobs, key=lambda j: claim_key(j.priority, j.run_at, j.id)))


def _statements(script: str) -> list[str]:
    """A migration's statements (a trigger's body holds semicolons of its own)."""
    out, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending)
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending)
    return out


def _status_literal(status: JobState | None) -> list[str]:
    """``status = '<state>'`` as a literal: a partial index (``WHERE status = 'dead'``)
    serves only a condition known when the statement is prepared. The text is the
    enum's own value, never caller input."""
    return [] if status is None else [f"status = '{JobState(status).value}'"]


#: What sqlite3 says when a text column holds bytes that are not UTF-8.
_UNDECODABLE = "Could not decode to UTF-8"


def _bad_value(exc: Exception) -> bool:
    """Whether ``exc`` refused one of the operation's values (text the driver cannot
    encode, an integer over 64 bits, a float no JSON holds): trying again fails the same
    way. Our own errors (some are ValueErrors too) and unreadable stored JSON are not."""
    if isinstance(exc, TrioforgeError | json.JSONDecodeError):
        return False
    return isinstance(exc, ValueError | OverflowError | sqlite3.DataError)


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class _Busy(Exception):
    """The write lock could not be taken within the busy timeout (carries the error)."""

    def __init__(self, error: DatabaseUnavailableError) -> None:
        super().__init__(str(error))
        self.error = error


class SQLiteBackend:
    """Jobs in a SQLite file (WAL); safe for several processes on one machine."""

    shared = True
    #: One batch at a time: one connection, one writer thread.
    max_in_flight = 1

    def __init__(
        self, path: Path, *, busy_timeout: float = 10.0, change_poll_interval: float = 0.005
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._change_poll_interval = change_poll_interval
        self._db: sqlite3.Connection | None = None
        self._handlers: dict[type, Callable[[sqlite3.Connection, Any, float], object]] = (
            ops.handlers(self)
        )

    # --- lifecycle ---------------------------------------------------------------------

    notifies = False

    def listen(self) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Notice]]:
        raise NotImplementedError("this backend pushes no notices; the runtime polls it")

    def environment(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    @asynccontextmanager
    async def changes(self) -> AsyncIterator[trio.MemoryReceiveChannel[Changed]]:
        """Commits by any connection to the file, this process's own included, seen by
        ``PRAGMA data_version`` on a connection of its own: a thread reads it every
        ``change_poll_interval`` seconds (a read of the WAL index in shared memory, no
        disk I/O and no lock) and reports None (which jobs is unknown) when it moved."""
        send, receive = trio.open_memory_channel[Changed](math.inf)
        stop = threading.Event()
        token = trio.lowlevel.current_trio_token()
        try:  # the first version is read before anything is reported: no gap
            db, first = await trio.to_thread.run_sync(self._watch_connection)
        except sqlite3.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot watch SQLite database {str(self.path)!r} for changes: {exc}"
            ) from None

        def report() -> None:
            with contextlib.suppress(trio.ClosedResourceError):
                send.send_nowait(None)

        def watch() -> None:
            try:
                last = first
                while not stop.wait(self._change_poll_interval):
                    version = db.execute("PRAGMA data_version").fetchone()[0]
                    if version != last:
                        last = version
                        trio.from_thread.run_sync(report, trio_token=token)
            except sqlite3.Error:  # the feed ends; its reader reconnects
                with contextlib.suppress(trio.RunFinishedError):
                    trio.from_thread.run_sync(send.close, trio_token=token)
            except trio.RunFinishedError:
                pass
            finally:
                db.close()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(trio.to_thread.run_sync, watch, abandon_on_cancel=False))
                try:
                    yield receive
                finally:
                    stop.set()  # the thread ends within one poll interval; the nursery waits
        finally:
            send.close()

    def _watch_connection(self) -> tuple[sqlite3.Connection, int]:
        db = sqlite3.connect(self.path, timeout=self._busy_timeout, check_same_thread=False)
        db.execute("PRAGMA query_only = 1")
        version: int = db.execute("PRAGMA data_version").fetchone()[0]
        return db, version

    async def open(self, *, migrate: bool = True) -> None:
        await trio.to_thread.run_sync(self._open_sync, migrate)

    def _open_sync(self, migrate: bool) -> None:
        if not migrate and not self.path.exists():
            # Only migrating may create the file: inspecting must leave no trace.
            raise SchemaError(
                f"no database at {str(self.path)!r} (the file does not exist); create it "
                "with `trioforge db migrate`"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
            self._enter_wal_mode(db)
            db.execute("PRAGMA synchronous = NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseUnavailableError(
                f"cannot open SQLite database {str(self.path)!r}: {exc}; check the path "
                "and its permissions"
            ) from None
        try:
            check_usable(db, self.path)
            status = self._status_sync(db)
            if status.current > status.latest:
                raise SchemaError(
                    f"{self.path} has schema version {status.current}, newer than this "
                    f"trioforge knows ({status.latest}); upgrade trioforge"
                )
            if status.current < status.latest:
                if not migrate:
                    raise SchemaError(
                        f"{self.path} has schema version {status.current}, this trioforge "
                        f"needs {status.latest}; run `trioforge db migrate`"
                    )
                self._migrate_sync(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _enter_wal_mode(self, db: sqlite3.Connection) -> None:
        """Switching a new file to WAL takes an exclusive lock, and SQLite may report a
        second process doing the same as "locked" at once rather than wait for it (two
        workers starting on a new file): retry until the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)  # a worker thread, not the trio loop

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await trio.to_thread.run_sync(db.close)

    async def create_database(self) -> bool:
        return not self.path.exists()  # open() creates the file

    async def drop(self) -> None:
        def drop_tables(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            for table in _TABLES:
                db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute("COMMIT")

        await trio.to_thread.run_sync(drop_tables, self._conn())

    async def schema_status(self) -> SchemaStatus:
        return await trio.to_thread.run_sync(self._status_sync, self._conn())

    async def migrate(self) -> SchemaStatus:
        db = self._conn()
        await trio.to_thread.run_sync(self._migrate_sync, db)
        return await self.schema_status()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise DatabaseUnavailableError(f"SQLite database {self.path} is not open")
        return self._db

    @staticmethod
    def _status_sync(db: sqlite3.Connection) -> SchemaStatus:
        try:
            row = db.execute("SELECT max(version) FROM trioforge_schema").fetchone()
        except sqlite3.OperationalError:  # no such table: a new file
            return SchemaStatus(0, len(MIGRATIONS))
        return SchemaStatus(row[0] or 0, len(MIGRATIONS))

    @staticmethod
    def _migrate_sync(db: sqlite3.Connection) -> None:
        # Two processes may open a new file at once: decide inside the write lock.
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS trioforge_schema (version INTEGER NOT NULL)")
            current = db.execute("SELECT max(version) FROM trioforge_schema").fetchone()[0] or 0
            for version, script in enumerate(MIGRATIONS, start=1):
                if version > current:
                    for statement in _statements(script):
                        db.execute(statement)
                    db.execute("INSERT INTO trioforge_schema (version) VALUES (?)", (version,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # --- batches -----------------------------------------------------------------------

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        return await trio.to_thread.run_sync(self._execute_sync, self._conn(), list(batch), now)

    def _execute_sync(
        self, db: sqlite3.Connection, batch: list[ops.Op], now: float
    ) -> list[object]:
        try:
            return self._transaction(db, batch, now)
        except _Busy as exc:
            # Another process held the write lock past the busy timeout: each op on its own
            # would wait that long again. The callers retry (outcomes while their leases hold).
            return [exc.error] * len(batch)
        except Exception:
            if len(batch) == 1:
                return [self._one(db, batch[0], now)]
        # Something in the batch failed: run each on its own so neighbours are unaffected.
        return [self._one(db, op, now) for op in batch]

    def _one(self, db: sqlite3.Connection, op: ops.Op, now: float) -> object:
        try:
            return self._transaction(db, [op], now)[0]
        except _Busy as exc:
            return exc.error
        except sqlite3.OperationalError as exc:
            if _UNDECODABLE not in str(exc):
                return exc
        except Exception as exc:
            return refused_value(exc) if _bad_value(exc) else exc
        # A row holds text that is not UTF-8 (written by an older version): read it with
        # each bad byte replaced, so one such row never hides the others.
        db.text_factory = _lenient_text
        try:
            return self._transaction(db, [op], now)[0]
        except _Busy as exc:
            return exc.error
        except Exception as exc:
            return exc
        finally:
            db.text_factory = str

    def _transaction(self, db: sqlite3.Connection, batch: list[ops.Op], now: float) -> list[object]:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _Busy(
                DatabaseUnavailableError(
                    f"SQLite database {self.path} is busy ({exc}): another process held its "
                    f"write lock for over {self._busy_timeout}s"
                )
            ) from None
        try:
            results = [self._handlers[type(op)](db, op, now) for op in batch]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return results

    # --- operations --------------------------------------------------------------------

    @staticmethod
    def _enqueue(
        db: sqlite3.Connection, op: ops.Enqueue, now: float, *, consecutive: bool = True
    ) -> list[Enqueued]:
        for job in op.jobs:
            json.loads(job.payload)  # refuse anything that is not JSON text
        if consecutive and all(job.idempotency_key is None for job in op.jobs):
            rows = [_insert_row(j, None, now) for j in op.jobs]
            before = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'trioforge_jobs'")
            first = (before.fetchone() or (0,))[0] + 1
            db.executemany(_INSERT, rows)
            _store(db, Tally(Counter((j.queue, _first_state(j, now), None) for j in op.jobs)))
            # The write lock is held, so AUTOINCREMENT handed out consecutive ids.
            return [Enqueued(first + i, created=True) for i in range(len(rows))]
        out, inserted = [], Tally()
        for j in op.jobs:
            key = j.idempotency_key
            if key is not None:
                existing = db.execute(
                    _KEY_HOLDER,
                    (key,),
                ).fetchone()
                if existing is None and j.unique_for is not None:
                    existing = db.execute(_KEY_FINISHED, (key, now - j.unique_for)).fetchone()
                if existing is not None:
                    out.append(Enqueued(existing[0], created=False))
                    continue
            cursor = db.execute(_INSERT, _insert_row(j, key, now))
            assert cursor.lastrowid is not None
            out.append(Enqueued(cursor.lastrowid, created=True))
            inserted.add(j.queue, _first_state(j, now), None)
        _store(db, inserted)
        return out

    def _claim(self, db: sqlite3.Connection, op: ops.Claim, now: float) -> ClaimResult:
        names = json.dumps(sorted(op.names))
        caps = json.dumps(sorted(op.capabilities))
        paused, upcoming = db.execute(_PAUSED_AND_UPCOMING, (op.queue, now, names, caps)).fetchone()
        if paused:
            return ClaimResult((), None)
        if op.flow_controlled:
            return self._claim_limited(db, op, now, names, caps, upcoming)
        due = (op.queue, now, names, caps, max(op.limit, 0))
        states = db.execute(_DUE_STATES, due).fetchall()
        rows = db.execute(_CLAIM, (op.owner, op.lease_until, now, *due)).fetchall()
        tally = Tally({(op.queue, state, None): -n for state, n in states})
        tally.add(op.queue, "running", None, len(rows))
        _store(db, tally)
        return ClaimResult(_in_claim_order(rows), upcoming)

    @staticmethod
    def _claim_limited(
        db: sqlite3.Connection,
        op: ops.Claim,
        now: float,
        names: str,
        caps: str,
        upcoming: float | None,
    ) -> ClaimResult:
        """The write lock is held: counts and buckets read here cannot change under us."""
        gate = FlowGate(op.limits, {}, {}, now, op.queue_rate)
        if op.queue_rate is not None:
            stored = db.execute(
                "SELECT tokens, at FROM trioforge_limits WHERE key = ?",
                (f"r:{op.queue_rate.name}",),
            ).fetchone()
            if stored is not None:
                gate.learn({}, {op.queue_rate.name: Bucket(*stored)})
        ending: dict[str, int] = {}  # per concurrency key: the claimer's ended attempts
        if op.ending:
            ids = json.dumps([job_id for job_id, _ in op.ending])
            for key, job_id, lease in db.execute(_ENDING, (ids,)).fetchall():
                if (job_id, lease) in op.ending:
                    ending[key] = ending.get(key, 0) + 1
        picked: dict[int, str] = {}
        seen, chunk = 0, max(2 * op.limit, 16)
        while len(picked) < op.limit and seen < FLOW_WINDOW:
            rows = db.execute(
                _CANDIDATES, (op.queue, now, names, caps, min(chunk, FLOW_WINDOW - seen), seen)
            ).fetchall()
            if not rows:
                break
            seen += len(rows)
            chunk *= 4
            gate.learn(
                {r[3]: r[4] - ending.get(r[3], 0) for r in rows if r[3] is not None},
                {r[2]: Bucket(r[5], r[6]) for r in rows if r[5] is not None},
            )
            for job_id, name, rate_key, concurrency_key, *_, status in rows:
                if len(picked) < op.limit and gate.admit(name, rate_key, concurrency_key):
                    picked[job_id] = status
        claimed = _claim_ids(db, op, now, picked)
        if gate.buckets:
            stored = [[f"r:{k}", b.tokens, b.at] for k, b in gate.buckets.items()]
            db.execute(_STORE_BUCKETS, (json.dumps(stored),))
        return ClaimResult(claimed, upcoming, gate.next_token_at, gate.held)

    def _release_orphans(
        self, db: sqlite3.Connection, op: ops.ReleaseOrphans, now: float
    ) -> list[int]:
        rows = db.execute(
            "SELECT id, lease FROM trioforge_jobs WHERE queue = ? AND status = 'running' "
            "AND lease_owner = ?",
            (op.queue, op.owner),
        ).fetchall()
        held = set(op.held)
        orphans = tuple(
            Outcome(i, lease, Released()) for i, lease in rows if (i, lease) not in held
        )
        applied = self._finish(db, ops.Finish(orphans), now) if orphans else []
        return sorted(o.job_id for o, ok in zip(orphans, applied, strict=True) if ok)

    @staticmethod
    def _finish(db: sqlite3.Connection, op: ops.Finish, now: float) -> list[bool]:
        rows, ended = [], []
        for outcome in op.outcomes:
            event = outcome.event
            target = next_state(JobState.RUNNING, event)
            if target is not None:
                run_at = (
                    event.run_at
                    if isinstance(event, Suspended)
                    else getattr(event, "retry_at", None)
                )
                rows.append(
                    (outcome.job_id, outcome.lease, target.value, run_at,
                     1 if isinstance(event, Released | Suspended) else 0,
                     now if target in TERMINAL_STATES else None, outcome.result, outcome.error)
                )  # fmt: skip
                if target in TERMINAL_STATES:
                    ended.append(outcome.job_id)
        if not rows:
            return [False] * len(op.outcomes)
        # No NaN or infinite time may pass as JSON SQLite cannot read: refused, not retried.
        done = db.execute(_FINISH, (json.dumps(rows, allow_nan=False), now)).fetchall()
        _store(db, Tally.from_running(Counter(map(itemgetter(2, 3, 4), done))))
        if ended:
            _wake_parents(db, ended, now)
        applied = {(job_id, lease) for job_id, lease, *_ in done}
        return [(o.job_id, o.lease) in applied for o in op.outcomes]

    @staticmethod
    def _renew(db: sqlite3.Connection, op: ops.Renew, now: float) -> RenewResult:
        del now
        cancel, lost = set(), set()
        for job_id, lease in op.leases:
            row = db.execute(
                "UPDATE trioforge_jobs SET lease_until = ? WHERE id = ? AND lease = ? "
                "AND status = 'running' AND lease_owner = ? RETURNING cancel_requested",
                (op.lease_until, job_id, lease, op.owner),
            ).fetchone()
            if row is None:
                lost.add((job_id, lease))
            elif row[0]:
                cancel.add(job_id)
        return RenewResult(frozenset(cancel), frozenset(lost))

    @staticmethod
    def _progress(db: sqlite3.Connection, op: ops.Progress, now: float) -> bool:
        del now
        cursor = db.execute(
            "UPDATE trioforge_jobs SET progress = ?, progress_message = ? "
            "WHERE id = ? AND lease = ? AND status = 'running'",
            (op.pct, op.message, op.job_id, op.lease),
        )
        return cursor.rowcount == 1

    @staticmethod
    def _get(db: sqlite3.Connection, op: ops.Get, now: float) -> JobInfo | None:
        del now
        row = db.execute(
            f"SELECT {JOB_COLUMNS} FROM trioforge_jobs WHERE id = ?", (op.job_id,)
        ).fetchone()
        return None if row is None else job_info(row)

    @staticmethod
    def _get_many(db: sqlite3.Connection, op: ops.GetMany, now: float) -> dict[int, JobInfo]:
        del now
        rows = db.execute(
            f"SELECT {JOB_COLUMNS} FROM trioforge_jobs "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(op.job_ids)),),
        ).fetchall()
        return {info.id: info for info in map(job_info, rows)}

    @staticmethod
    def _list_jobs(db: sqlite3.Connection, op: ops.ListJobs, now: float) -> list[JobInfo]:
        del now
        # Only the filters given, so the (name, id) index and the partial indexes by state
        # serve them; fixed fragments, and every value a parameter but the state's.
        filters = {
            "queue = ?": op.queue,
            "name = ?": op.name,
            "id < ?": op.before,
        }
        given = {sql: value for sql, value in filters.items() if value is not None}
        clauses = [*_status_literal(op.status), *given]
        values = list[object](given.values())
        if op.runs_only or op.workflow is not None:
            clauses.append("workflow = 1")
        if op.workflow is not None:  # every version: job names "<workflow>@v<N>"
            clauses.append("substr(name, 1, length(?) + 2) = ? || '@v'")
            values += [op.workflow, op.workflow]
        where = " AND ".join(clauses) or "1"
        # Running jobs are few: read them off the leases index and sort, rather than let
        # the planner walk every id from the newest looking for them.
        source = (
            "trioforge_jobs INDEXED BY trioforge_jobs_leases"
            if op.status is JobState.RUNNING
            else "trioforge_jobs"
        )
        rows = db.execute(
            f"SELECT {JOB_COLUMNS} FROM {source} WHERE {where} ORDER BY id DESC LIMIT ?",
            (*values, op.limit),
        ).fetchall()
        return [job_info(row) for row in rows]

    @staticmethod
    def _throughput(
        db: sqlite3.Connection, op: ops.Throughput, now: float
    ) -> dict[str, dict[JobState, int]]:
        del now
        out: dict[str, dict[JobState, int]] = {}
        for queue, status, count in db.execute(
            "SELECT queue, state, sum(n) FROM trioforge_finished "
            "WHERE second >= ? GROUP BY queue, state",
            (math.floor(op.since),),
        ):
            out.setdefault(queue, {})[JobState(status)] = count
        return out

    @staticmethod
    def _throughput_series(
        db: sqlite3.Connection, op: ops.ThroughputSeries, now: float
    ) -> dict[str, dict[JobState, dict[int, int]]]:
        del now
        out: dict[str, dict[JobState, dict[int, int]]] = {}
        for queue, status, start, count in db.execute(
            "SELECT queue, state, second - second % ?1 AS start, sum(n) FROM trioforge_finished "
            "WHERE second >= ?2 GROUP BY queue, state, start HAVING sum(n) <> 0",
            (op.step, math.floor(op.since)),
        ):
            out.setdefault(queue, {}).setdefault(JobState(status), {})[start] = count
        return out

    @staticmethod
    def _status_of(db: sqlite3.Connection, job_id: int) -> tuple[JobState, str | None]:
        row = db.execute(
            "SELECT status, idempotency_key FROM trioforge_jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return JobState(row[0]), row[1]

    def _cancel(self, db: sqlite3.Connection, op: ops.Cancel, now: float) -> CancelResult:
        status, _ = self._status_of(db, op.job_id)
        if status in TERMINAL_STATES:
            return CancelResult.FINISHED
        children = db.execute(
            f"SELECT id FROM trioforge_jobs WHERE parent_id = ? AND status NOT IN {_TERMINAL_SQL}",
            (op.job_id,),
        ).fetchall()
        for (child,) in children:
            self._cancel(db, ops.Cancel(child), now)
        if status is JobState.RUNNING:
            db.execute("UPDATE trioforge_jobs SET cancel_requested = 1 WHERE id = ?", (op.job_id,))
            return CancelResult.REQUESTED
        cursor = db.execute(  # a waiting workflow run goes to a worker to be undone first
            "UPDATE trioforge_jobs SET cancel_requested = 1, run_at = min(run_at, ?) "
            "WHERE id = ? AND workflow",
            (now, op.job_id),
        )
        if cursor.rowcount:
            return CancelResult.REQUESTED
        [(queue,)] = db.execute(
            "UPDATE trioforge_jobs SET status = 'cancelled', finished_at = ? WHERE id = ? "
            "RETURNING queue",
            (now, op.job_id),
        ).fetchall()
        _store(db, Tally().move(queue, (status.value, None), ("cancelled", now)))
        _wake_parents(db, [op.job_id], now)
        return CancelResult.CANCELLED

    def _retry_job(self, db: sqlite3.Connection, op: ops.RetryJob, now: float) -> bool:
        status, key = self._status_of(db, op.job_id)
        if status not in (JobState.DEAD, JobState.CANCELLED):
            return False
        if key is not None:
            holder = db.execute(
                _KEY_HOLDER,
                (key,),
            ).fetchone()
            if holder is not None:
                raise InvalidStateError(
                    f"job {op.job_id} cannot be retried: job {holder[0]} holds its "
                    f"idempotency key {key!r}; wait for that job or cancel it"
                )
        queue, finished_at = db.execute(
            "SELECT queue, finished_at FROM trioforge_jobs WHERE id = ?", (op.job_id,)
        ).fetchone()
        db.execute(
            "UPDATE trioforge_jobs SET status = 'available', attempt = 0, run_at = ?, "
            "finished_at = NULL, error = NULL, result = NULL, cancel_requested = 0 WHERE id = ?",
            (now, op.job_id),
        )
        _store(db, Tally().move(queue, (status.value, finished_at), ("available", None)))
        return True

    def _discard(self, db: sqlite3.Connection, op: ops.Discard, now: float) -> bool:
        status, _ = self._status_of(db, op.job_id)
        rows = db.execute(
            f"UPDATE trioforge_jobs SET status = 'dead', finished_at = ?, error = ? "
            f"WHERE id = ? AND status IN {_PENDING_SQL} RETURNING queue",
            (now, op.reason, op.job_id),
        ).fetchall()
        if rows:
            [(queue,)] = rows
            _store(db, Tally().move(queue, (status.value, None), ("dead", now)))
            _wake_parents(db, [op.job_id], now)
        return bool(rows)

    @staticmethod
    def _rescue(db: sqlite3.Connection, op: ops.Rescue, now: float) -> list[RescuedJob]:
        db.execute("DELETE FROM trioforge_processes WHERE heartbeat_at < ?", (op.stale_before,))
        rows = db.execute(
            # A workflow run asked to cancel goes on to be undone, as any lost attempt.
            "UPDATE trioforge_jobs SET "
            "status = CASE WHEN cancel_requested AND NOT workflow THEN 'cancelled' "
            "  WHEN attempt < max_attempts THEN 'retrying' ELSE 'dead' END, "
            "finished_at = CASE WHEN (cancel_requested AND NOT workflow) "
            "  OR attempt >= max_attempts THEN ?1 END, "
            "run_at = CASE WHEN NOT (cancel_requested AND NOT workflow) "
            "  AND attempt < max_attempts THEN ?1 ELSE run_at END, "
            "error = CASE WHEN cancel_requested AND NOT workflow THEN error ELSE "
            "  'attempt ' || attempt || ' lost: its worker stopped heartbeating' END, "
            "lease_owner = NULL, lease_until = NULL "
            "WHERE status = 'running' AND lease_until <= ?1 "
            "RETURNING id, status, queue, finished_at, name, attempt, max_attempts",
            (now,),
        ).fetchall()
        _store(db, Tally.from_running(Counter((q, s, at) for _, s, q, at, *_ in rows)))
        ended = [i for i, status, *_ in rows if status != "retrying"]
        if ended:
            _wake_parents(db, ended, now)
        return sorted(
            (
                RescuedJob(i, name, queue, attempt, most, JobState(status))
                for i, status, queue, _, name, attempt, most in rows
            ),
            key=lambda r: r.id,
        )

    @staticmethod
    def _stats(db: sqlite3.Connection, op: ops.Stats, now: float) -> dict[str, dict[JobState, int]]:
        del op, now
        out: dict[str, dict[JobState, int]] = {}
        for queue, status, count in db.execute(
            "SELECT queue, state, n FROM trioforge_counts WHERE n <> 0"
        ):
            out.setdefault(queue, {})[JobState(status)] = count
        return out

    @staticmethod
    def _fold_counts(db: sqlite3.Connection, op: ops.FoldCounts, now: float) -> None:
        """Nothing to fold: each write adds into the one row per key (``ON CONFLICT``), since
        the single writer has no contention to avoid."""
        del db, op, now

    @staticmethod
    def _pause_queue(db: sqlite3.Connection, op: ops.PauseQueue, now: float) -> bool:
        if op.paused:
            cursor = db.execute(
                "INSERT INTO trioforge_paused_queues (name, paused_at) VALUES (?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (op.queue, now),
            )
        else:
            cursor = db.execute("DELETE FROM trioforge_paused_queues WHERE name = ?", (op.queue,))
        return cursor.rowcount == 1

    @staticmethod
    def _paused_queues(db: sqlite3.Connection, op: ops.PausedQueues, now: float) -> frozenset[str]:
        del op, now
        return frozenset(name for (name,) in db.execute("SELECT name FROM trioforge_paused_queues"))

    @staticmethod
    def _beat(db: sqlite3.Connection, op: ops.Beat, now: float) -> None:
        db.execute(
            "INSERT INTO trioforge_processes "
            "(owner, queues, started_at, heartbeat_at, details, job_names) "
            "VALUES (?1, ?2, ?3, ?3, ?4, ?5) ON CONFLICT (owner) DO UPDATE SET "
            "queues = excluded.queues, heartbeat_at = excluded.heartbeat_at, "
            "details = excluded.details, job_names = excluded.job_names",
            (op.owner, json.dumps(list(op.queues)), now,
             None if op.details is None else op.details.to_json(),
             None if op.names is None else json.dumps(list(op.names))),
        )  # fmt: skip

    @staticmethod
    def _leave(db: sqlite3.Connection, op: ops.Leave, now: float) -> None:
        del now
        db.execute("DELETE FROM trioforge_processes WHERE owner = ?", (op.owner,))
        db.execute("DELETE FROM trioforge_leases WHERE owner = ?", (op.owner,))

    @staticmethod
    def _processes_list(db: sqlite3.Connection, op: ops.Processes, now: float) -> list[ProcessInfo]:
        del op, now
        rows = db.execute(
            "SELECT owner, queues, started_at, heartbeat_at, details, job_names "
            "FROM trioforge_processes ORDER BY started_at, owner"
        )
        return [
            ProcessInfo(o, tuple(json.loads(q)), s, h, ProcessDetails.from_json(d),
                        None if n is None else tuple(json.loads(n)))
            for o, q, s, h, d, n in rows
        ]  # fmt: skip

    @staticmethod
    def _waiting_names(
        db: sqlite3.Connection, op: ops.WaitingNames, now: float
    ) -> dict[str, frozenset[str]]:
        del now
        if op.queues is None:
            rows = db.execute(
                f"SELECT DISTINCT queue, name FROM trioforge_jobs WHERE status IN {_PENDING_SQL}"
            )
        else:
            rows = db.execute(
                "SELECT DISTINCT queue, name FROM trioforge_jobs "
                f"WHERE status IN {_PENDING_SQL} AND queue IN (SELECT value FROM json_each(?))",
                (json.dumps(list(op.queues)),),
            )
        return names_by_queue(rows)

    @staticmethod
    def _lead(db: sqlite3.Connection, op: ops.Lead, now: float) -> bool:
        row = db.execute(
            "INSERT INTO trioforge_leases (name, owner, until) VALUES (?1, ?2, ?3) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until "
            "WHERE trioforge_leases.until <= ?4 OR trioforge_leases.owner = excluded.owner "
            "RETURNING owner",
            (op.name, op.owner, op.until, now),
        ).fetchone()
        return row is not None

    def _fire_cron(self, db: sqlite3.Connection, op: ops.FireCron, now: float) -> FireResult:
        row = db.execute(
            "SELECT last_tick, last_job_id, skipped FROM trioforge_cron WHERE name = ?",
            (op.name,),
        ).fetchone()
        last_tick, last_job, skipped = row if row else (None, None, 0)
        if last_tick != op.expected_last:
            return FireResult(conflict=True)
        busy = (
            last_job is not None
            and db.execute(
                f"SELECT 1 FROM trioforge_jobs WHERE id = ? AND status NOT IN {_TERMINAL_SQL}",
                (last_job,),
            ).fetchone()
        )
        ids: tuple[int, ...] = ()
        if op.jobs and op.skip_if_running and busy:
            skipped += len(op.jobs)
        else:
            ids = tuple(e.id for e in self._enqueue(db, ops.Enqueue(op.jobs), now))
            last_job = ids[-1] if ids else last_job
        db.execute(
            "INSERT INTO trioforge_cron (name, last_tick, last_job_id, skipped) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick, "
            "last_job_id = excluded.last_job_id, skipped = excluded.skipped",
            (op.name, op.new_last, last_job, skipped),
        )
        return FireResult(job_ids=ids, skipped=0 if ids or not op.jobs else len(op.jobs))

    @staticmethod
    def _cron_states(
        db: sqlite3.Connection, op: ops.CronStates, now: float
    ) -> dict[str, CronState]:
        del op, now
        rows = db.execute("SELECT name, last_tick, last_job_id, skipped FROM trioforge_cron")
        return {r[0]: CronState(*r) for r in rows}

    @staticmethod
    def _purge(db: sqlite3.Connection, op: ops.Purge, now: float) -> list[int]:
        del now
        rows = db.execute(
            "DELETE FROM trioforge_jobs WHERE id IN ("
            " SELECT id FROM trioforge_jobs WHERE status IN (SELECT value FROM json_each(?1))"
            " AND finished_at IS NOT NULL AND finished_at < ?2"
            " AND ((?3 IS NOT NULL AND queue = ?3) OR (?3 IS NULL"
            "  AND queue NOT IN (SELECT value FROM json_each(?4))))"
            " ORDER BY finished_at, id LIMIT ?5) RETURNING id, queue, status, finished_at",
            (json.dumps([JobState(s).value for s in op.statuses]), op.before, op.queue,
             json.dumps(list(op.exclude)), max(op.limit, 0)),
        ).fetchall()  # fmt: skip
        _store(
            db, Tally({(q, s, at): -n for (q, s, at), n in Counter(r[1:] for r in rows).items()})
        )
        gone = json.dumps([r[0] for r in rows])  # a purged run's record goes with it
        for table in ("trioforge_workflow_steps", "trioforge_workflow_signals"):
            db.execute(
                f"DELETE FROM {table} WHERE run_id IN (SELECT value FROM json_each(?))", (gone,)
            )
        return sorted(r[0] for r in rows)

    @staticmethod
    def _attempts(db: sqlite3.Connection, op: ops.Attempts, now: float) -> list[AttemptRecord]:
        del now
        kept = db.execute(
            "SELECT attempt, started_at, error FROM trioforge_attempts WHERE job_id = ? "
            "ORDER BY rowid",
            (op.job_id,),
        ).fetchall()
        current = db.execute(
            "SELECT attempt, started_at, error FROM trioforge_jobs "
            "WHERE id = ? AND error IS NOT NULL",
            (op.job_id,),
        ).fetchall()
        return [AttemptRecord(*row) for row in kept + current]

    @staticmethod
    def _matching(db: sqlite3.Connection, where: ops.JobFilter, statuses: list[str]) -> list[int]:
        rows = db.execute(
            "SELECT id FROM trioforge_jobs WHERE id > ?1"
            " AND status IN (SELECT value FROM json_each(?2))"
            " AND (?3 IS NULL OR queue = ?3) AND (?4 IS NULL OR name = ?4)"
            " AND (?5 IS NULL OR coalesce(finished_at, created_at) >= ?5)"
            " ORDER BY id LIMIT ?6",
            (where.after_id, json.dumps(statuses), where.queue, where.name, where.since,
             max(where.limit, 0)),
        ).fetchall()  # fmt: skip
        return [r[0] for r in rows]

    def _retry_many(self, db: sqlite3.Connection, op: ops.RetryMany, now: float) -> ops.BulkResult:
        seen = self._matching(db, op.where, [op.status.value])
        done = []
        for job_id in seen:
            try:
                if self._retry_job(db, ops.RetryJob(job_id), now):
                    done.append(job_id)
            except InvalidStateError:
                continue  # its idempotency key is another unfinished job's (nothing written)
        return ops.BulkResult(tuple(done), seen[-1] if len(seen) >= op.where.limit else None)

    def _discard_many(
        self, db: sqlite3.Connection, op: ops.DiscardMany, now: float
    ) -> ops.BulkResult:
        statuses = ["scheduled", "available", "retrying"] if op.status is None else [op.status]
        seen = self._matching(db, op.where, [JobState(s).value for s in statuses])
        done = [j for j in seen if self._discard(db, ops.Discard(j, op.reason), now)]
        return ops.BulkResult(tuple(done), seen[-1] if len(seen) >= op.where.limit else None)

    # --- workflows ---------------------------------------------------------------------

    @staticmethod
    def _record_of(db: sqlite3.Connection, run_id: int) -> WorkflowRecord | None:
        row = db.execute(
            "SELECT created_at, cancel_requested, workflow FROM trioforge_jobs WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        steps = db.execute(
            f"SELECT {_STEP_COLUMNS} FROM trioforge_workflow_steps WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ).fetchall()
        signals = db.execute(
            "SELECT id, name, payload, sent_at FROM trioforge_workflow_signals "
            "WHERE run_id = ? ORDER BY id",
            (run_id,),
        ).fetchall()
        children = db.execute(
            "SELECT id, name, status, result, error FROM trioforge_jobs WHERE parent_id = ? "
            "ORDER BY id",
            (run_id,),
        ).fetchall()
        return WorkflowRecord(
            run_id=run_id,
            created_at=row[0],
            cancel_requested=bool(row[1]),
            steps=tuple(step_record(s) for s in steps),
            signals=tuple(SignalRecord(*s) for s in signals),
            children=tuple(ChildRecord(i, n, JobState(st), r, e) for i, n, st, r, e in children),
            workflow=bool(row[2]),
        )

    def _load_workflow(
        self, db: sqlite3.Connection, op: ops.LoadWorkflow, now: float
    ) -> WorkflowRecord | None:
        del now
        cursor = db.execute(
            "UPDATE trioforge_jobs SET wake_requested = 0 "
            "WHERE id = ? AND lease = ? AND status = 'running'",
            (op.run_id, op.lease),
        )
        return self._record_of(db, op.run_id) if cursor.rowcount == 1 else None

    def _read_workflow(
        self, db: sqlite3.Connection, op: ops.ReadWorkflow, now: float
    ) -> WorkflowRecord | None:
        del now
        return self._record_of(db, op.run_id)

    @staticmethod
    def _latest_steps(
        db: sqlite3.Connection, op: ops.LatestSteps, now: float
    ) -> dict[int, StepRecord]:
        del now
        rows = db.execute(
            f"SELECT run_id, {_STEP_COLUMNS} FROM trioforge_workflow_steps AS s "
            "WHERE run_id IN (SELECT value FROM json_each(?)) AND seq = "
            "(SELECT max(seq) FROM trioforge_workflow_steps WHERE run_id = s.run_id)",
            (json.dumps(list(op.run_ids)),),
        ).fetchall()
        return {row[0]: step_record(row[1:]) for row in rows}

    def _record_step(self, db: sqlite3.Connection, op: ops.RecordStep, now: float) -> StepWrite:
        cursor = db.execute(
            "UPDATE trioforge_jobs SET cancel_requested = cancel_requested AND NOT ? "
            "WHERE id = ? AND lease = ? AND status = 'running'",
            (op.clear_cancel, op.run_id, op.lease),
        )
        if cursor.rowcount != 1:
            return StepWrite(applied=False)
        step, child_id = op.step, None
        if op.child is not None:
            [enqueued] = self._enqueue(db, ops.Enqueue((op.child,)), now)
            child_id = enqueued.id
            step = attrs.evolve(step, result=json.dumps(child_id))
        if op.consume_signal is not None:
            db.execute(
                "DELETE FROM trioforge_workflow_signals WHERE id = ? AND run_id = ?",
                (op.consume_signal, op.run_id),
            )
        db.execute(
            f"INSERT OR REPLACE INTO trioforge_workflow_steps (run_id, {_STEP_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (op.run_id, *step_row(step)),
        )
        return StepWrite(applied=True, child_id=child_id)

    def _send_signal(self, db: sqlite3.Connection, op: ops.SendSignal, now: float) -> int:
        status, _ = self._status_of(db, op.run_id)
        name, workflow = db.execute(
            "SELECT name, workflow FROM trioforge_jobs WHERE id = ?", (op.run_id,)
        ).fetchone()
        if not workflow:
            raise InvalidArgumentError(not_a_run(op.run_id, name))
        if status in TERMINAL_STATES:
            raise InvalidStateError(
                f"run {op.run_id} has finished ({status}); a signal to it would never be read"
            )
        json.loads(op.payload)  # refuse anything that is not JSON text
        cursor = db.execute(
            "INSERT INTO trioforge_workflow_signals (run_id, name, payload, sent_at) "
            "VALUES (?, ?, ?, ?)",
            (op.run_id, op.name, op.payload, now),
        )
        db.execute(
            f"UPDATE trioforge_jobs SET "
            f"run_at = CASE WHEN status IN {_PENDING_SQL} AND run_at > ?1 THEN ?1 ELSE run_at END, "
            f"wake_requested = CASE WHEN status = 'running' THEN 1 ELSE wake_requested END "
            f"WHERE id = ?2",
            (now, op.run_id),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    # --- from plain asyncio (trioforge.aio), and inside a caller's transaction ----------

    def open_sync(self, *, migrate: bool = True) -> None:
        """:meth:`open` for a caller without trio (run it in a worker thread)."""
        self._open_sync(migrate)

    def close_sync(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def execute_sync(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        """:meth:`execute` for a caller without trio (one at a time, in a worker thread)."""
        return self._execute_sync(self._conn(), list(batch), now)

    @classmethod
    def enqueue_in(cls, db: sqlite3.Connection, op: ops.Enqueue, now: float) -> list[Enqueued]:
        """Store ``op``'s jobs with the caller's connection to this file, in its current
        transaction (begun here if none is open): a rollback leaves no job. Ids come from
        each insert, not from the sequence, since the write lock may not be held yet."""
        return cls._enqueue(db, op, now, consecutive=False)


def _wake_parents(db: sqlite3.Connection, ended: list[int], now: float) -> None:
    db.execute(_WAKE_PARENTS, (now, json.dumps(ended)))


def _claim_ids(
    db: sqlite3.Connection, op: ops.Claim, now: float, picked: dict[int, str]
) -> tuple[ClaimedJob, ...]:
    """Claim the ``picked`` jobs (id -> state); the write lock keeps them as read."""
    rows = db.execute(
        _CLAIM_IDS, (op.owner, op.lease_until, now, json.dumps(list(picked)))
    ).fetchall()
    left = Counter(picked[r[0]] for r in rows)
    tally = Tally({(op.queue, state, None): -n for state, n in left.items()})
    tally.add(op.queue, "running", None, len(rows))
    _store(db, tally)
    return _in_claim_order(rows)


_ADD_COUNTS = (
    "INSERT INTO trioforge_counts (queue, state, n) VALUES (?, ?, ?) "
    "ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n"
)
_ADD_FINISHED = (
    "INSERT INTO trioforge_finished (second, queue, state, n) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (second, queue, state) DO UPDATE SET n = n + excluded.n"
)
_DROP_EMPTY = (
    "DELETE FROM trioforge_finished WHERE second = ? AND queue = ? AND state = ? AND n = 0"
)


def _store(db: sqlite3.Connection, tally: Tally) -> None:
    """Write ``tally`` in the write's transaction: one statement per table however many
    jobs moved (a second finished left empty goes)."""
    if counts := tally.counts():
        db.executemany(_ADD_COUNTS, counts)
    if finished := tally.finished():
        db.executemany(_ADD_FINISHED, finished)
        if emptied := [key for *key, n in finished if n < 0]:
            db.executemany(_DROP_EMPTY, emptied)
