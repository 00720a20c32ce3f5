"""The SQLite backend: the default, one file, many processes.

WAL mode, one connection used from a worker thread: each batch of operations is one thread
hop and one ``BEGIN IMMEDIATE`` transaction, so many claims, outcomes and enqueues share one
commit. Several processes may use the same file; SQLite's write lock serialises them, and
leases plus the reaper hand a crashed process's jobs to another. The rules are those of
:mod:`trioforge._core`, written as SQL; the contract suite holds it to the memory backend.

This module holds the connection, the batch executor, the writes that other handlers build
on, and the entry points; beside it: ``_sqlite_schema`` (the migrations), ``_sqlite_sql``
(statement text), ``_sqlite_claims`` and ``_sqlite_reads`` (handlers, mixed into
:class:`SQLiteBackend`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from operator import itemgetter
from pathlib import Path
from typing import Any, ClassVar, TypeVar

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
from trioforge._core.states import TERMINAL_STATES, JobState, Released, Suspended, next_state
from trioforge.storage import _compound as compound
from trioforge.storage import _ops as ops
from trioforge.storage._backend import AsyncioExecute, Changed, Listening, refused_value
from trioforge.storage._counts import Tally
from trioforge.storage._records import (
    CancelResult,
    Enqueued,
    FireResult,
    Notice,
    RescuedJob,
    SchemaStatus,
    StepWrite,
    not_a_run,
    step_row,
)
from trioforge.storage._sql_states import PENDING, RESCUE_RETRIES, TERMINAL
from trioforge.storage._sqlite_claims import SQLiteClaims
from trioforge.storage._sqlite_health import check_usable
from trioforge.storage._sqlite_reads import SQLiteReads
from trioforge.storage._sqlite_schema import _TABLES, _statements

# Re-exported: tests read the migrations (and patch them) here.
from trioforge.storage._sqlite_schema import MIGRATIONS as MIGRATIONS
from trioforge.storage._sqlite_sql import (
    _FINISH,
    _INSERT,
    _KEY_FINISHED,
    _KEY_HOLDER,
    _RUNNING,
    _SLOTS_FREED,
    _STEP_COLUMNS,
    _first_state,
    _insert_row,
    _store,
    _wake,
    _wake_parents,
)
from trioforge.storage._sqlite_watch import NewWork, watching

__all__ = ["SQLiteBackend"]

log = logging.getLogger("trioforge.storage")

T = TypeVar("T")


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


class SQLiteBackend(SQLiteClaims, SQLiteReads):
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

    notifies = True
    enqueue_in_asyncio: ClassVar[bool] = False

    @asynccontextmanager
    async def listen(self, on_notice: Callable[[Notice], None]) -> AsyncIterator[Listening]:
        """Jobs enqueued, cancels asked for, and what other writes announce (jobs made due
        without a new row, concurrency slots freed), by any connection to the file, this
        process's own included, read when ``PRAGMA data_version`` moves (checked on a
        connection of its own after each write the kernel tells of, or where it tells of
        none every ``change_poll_interval`` seconds: ``storage._sqlite_watch``): a wake-up
        per queue (for new due jobs, of those addressed to this listener's address, which
        the heartbeat advertises: ``NewWork``), a cancel notice per running job, a
        slots-freed notice."""
        lost = trio.Event()

        def report(notice: Notice) -> None:
            try:
                on_notice(notice)
            except Exception:
                log.exception("handling the notice %r failed", notice)

        address = f"sqlite:{uuid.uuid4().hex}"  # this listener's, advertised by the heartbeat
        async with watching(
            self.path, busy_timeout=self._busy_timeout, interval=self._change_poll_interval,
            reader=lambda db: NewWork(db, address).read, report=report, ended=lost.set,
        ):  # fmt: skip
            yield Listening(lost, address)

    def environment(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    @asynccontextmanager
    async def changes(self) -> AsyncIterator[trio.MemoryReceiveChannel[Changed]]:
        """Commits by any connection to the file, this process's own included, seen by
        ``PRAGMA data_version`` (checked as :meth:`listen` checks it, on a connection of
        its own) and reported as None (which jobs is unknown)."""
        send, receive = trio.open_memory_channel[Changed](math.inf)

        def report(item: None) -> None:
            with contextlib.suppress(trio.ClosedResourceError):
                send.send_nowait(item)

        try:
            async with watching(
                self.path, busy_timeout=self._busy_timeout,
                interval=self._change_poll_interval, reader=lambda db: lambda: (None,),
                report=report, ended=send.close,
            ):  # fmt: skip
                yield receive
        finally:
            send.close()

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

    def _release_orphans(
        self, db: sqlite3.Connection, op: ops.ReleaseOrphans, now: float
    ) -> list[int]:
        return self._compound(db, compound.release_orphans(op), now)

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
        if any(keyed for *_, keyed in done):
            db.execute(_SLOTS_FREED)
        if ended:
            _wake_parents(db, ended, now)
        applied = {(job_id, lease) for job_id, lease, *_ in done}
        return [(o.job_id, o.lease) in applied for o in op.outcomes]

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
            f"SELECT id FROM trioforge_jobs WHERE parent_id = ? AND status NOT IN {TERMINAL}",
            (op.job_id,),
        ).fetchall()
        for (child,) in children:
            self._cancel(db, ops.Cancel(child), now)
        if status is JobState.RUNNING:
            db.execute("UPDATE trioforge_jobs SET cancel_requested = 1 WHERE id = ?", (op.job_id,))
            return CancelResult.REQUESTED
        waiting = db.execute(  # a waiting workflow run goes to a worker to be undone first
            "UPDATE trioforge_jobs SET cancel_requested = 1, run_at = min(run_at, ?) "
            "WHERE id = ? AND workflow RETURNING queue",
            (now, op.job_id),
        ).fetchall()
        if waiting:
            _wake(db, [waiting[0][0]], now)
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
                raise compound.key_held(op.job_id, holder[0], key)
        queue, finished_at = db.execute(
            "SELECT queue, finished_at FROM trioforge_jobs WHERE id = ?", (op.job_id,)
        ).fetchone()
        db.execute(
            "UPDATE trioforge_jobs SET status = 'available', attempt = 0, run_at = ?, "
            "finished_at = NULL, error = NULL, result = NULL, cancel_requested = 0 WHERE id = ?",
            (now, op.job_id),
        )
        _store(db, Tally().move(queue, (status.value, finished_at), ("available", None)))
        _wake(db, [queue], now)
        return True

    def _discard(self, db: sqlite3.Connection, op: ops.Discard, now: float) -> bool:
        status, _ = self._status_of(db, op.job_id)
        rows = db.execute(
            f"UPDATE trioforge_jobs SET status = 'dead', finished_at = ?, error = ? "
            f"WHERE id = ? AND status IN {PENDING} RETURNING queue",
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
            # A run lost on its last attempt gets one more, to be undone (rescue_outcome).
            f"  WHEN {RESCUE_RETRIES} THEN 'retrying' ELSE 'dead' END, "
            "finished_at = CASE WHEN (cancel_requested AND NOT workflow) "
            f"  OR NOT {RESCUE_RETRIES} THEN ?1 END, "
            "run_at = CASE WHEN NOT (cancel_requested AND NOT workflow) "
            f"  AND {RESCUE_RETRIES} THEN ?1 ELSE run_at END, "
            "error = CASE WHEN cancel_requested AND NOT workflow THEN error ELSE "
            "  'attempt ' || attempt || ' lost: its worker stopped heartbeating' END, "
            "lease_owner = NULL, lease_until = NULL "
            "WHERE status = 'running' AND lease_until <= ?1 "
            "RETURNING id, status, queue, finished_at, name, attempt, max_attempts, "
            "concurrency_key IS NOT NULL",
            (now,),
        ).fetchall()
        _store(db, Tally.from_running(Counter((q, s, at) for _, s, q, at, *_ in rows)))
        if any(keyed for *_, keyed in rows):
            db.execute(_SLOTS_FREED)
        ended = [i for i, status, *_ in rows if status != "retrying"]
        if ended:
            _wake_parents(db, ended, now)
        return sorted(
            (
                RescuedJob(i, name, queue, attempt, most, JobState(status))
                for i, status, queue, _, name, attempt, most, _ in rows
            ),
            key=lambda r: r.id,
        )

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
                f"SELECT 1 FROM trioforge_jobs WHERE id = ? AND status NOT IN {TERMINAL}",
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

    def _retry_many(self, db: sqlite3.Connection, op: ops.RetryMany, now: float) -> ops.BulkResult:
        return self._compound(db, compound.retry_many(op), now)

    def _discard_many(
        self, db: sqlite3.Connection, op: ops.DiscardMany, now: float
    ) -> ops.BulkResult:
        return self._compound(db, compound.discard_many(op), now)

    def _compound(self, db: sqlite3.Connection, steps: compound.Steps[T], now: float) -> T:
        """Run a compound op (:mod:`storage._compound`) in the batch's transaction."""

        def step(request: compound.Step) -> object:
            if isinstance(request, compound.Matching):
                return self._matching(db, request.where, [s.value for s in request.states])
            if isinstance(request, compound.Running):
                return db.execute(_RUNNING, (request.queue, request.owner)).fetchall()
            if isinstance(request, ops.RetryJob):
                return self._retry_job(db, request, now)
            if isinstance(request, ops.Discard):
                return self._discard(db, request, now)
            return self._finish(db, request, now)

        return compound.run(steps, step)

    # --- workflows ---------------------------------------------------------------------

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
        [(queue,)] = db.execute(
            f"UPDATE trioforge_jobs SET "
            f"run_at = CASE WHEN status IN {PENDING} AND run_at > ?1 THEN ?1 ELSE run_at END, "
            f"wake_requested = CASE WHEN status = 'running' THEN 1 ELSE wake_requested END "
            f"WHERE id = ?2 RETURNING queue",
            (now, op.run_id),
        ).fetchall()
        _wake(db, [queue], now)
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

    @asynccontextmanager
    async def on_asyncio(self, *, migrate: bool = True) -> AsyncIterator[AsyncioExecute]:
        """The same connection and statements from a worker thread, one batch at a time
        (one connection, as the trio side's writer thread)."""
        lock = asyncio.Lock()

        async def execute(batch: Sequence[ops.Op], now: float) -> list[object]:
            async with lock:
                return await asyncio.to_thread(self.execute_sync, batch, now)

        await asyncio.to_thread(self.open_sync, migrate=migrate)
        try:
            yield execute
        finally:
            await asyncio.to_thread(self.close_sync)

    @classmethod
    async def enqueue_in(
        cls, db: sqlite3.Connection, op: ops.Enqueue, now: float
    ) -> list[Enqueued]:
        """Store ``op``'s jobs with the caller's connection to this file, in its current
        transaction (begun here if none is open): a rollback leaves no job. Ids come from
        each insert, not from the sequence, since the write lock may not be held yet. It
        runs on the caller's own thread, in any event loop (sqlite3 blocks, as the caller's
        own statements on that connection do)."""
        return cls._enqueue(db, op, now, consecutive=False)
