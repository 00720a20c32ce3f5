"""The PostgreSQL backend: many replicas on one database.

asyncpg runs under trio-asyncio, reached only through the storage actor. Each batch is one
``aio_as_trio`` crossing into a coroutine that acquires a pooled connection, runs the batch
in one transaction and releases the connection, all on the asyncio side: a cancelled
crossing cancels that coroutine, whose ``async with`` gives the connection back. Claims use
``FOR UPDATE SKIP LOCKED`` so replicas never wait on each other's rows; multi-row writes
(enqueue, outcomes, lease renewals) are single statements over ``unnest`` arrays. The rules
are those of :mod:`trioforge._core`; the contract suite holds this backend to them.

This module holds the connection, the batch executor, the writes that other handlers build
on, and the entry points; beside it: ``_pg_schema`` (the migrations and the claim
function), ``_pg_sql`` (statement text), ``_pg_listen`` (LISTEN), ``_pg_connection``
(the pooler option, lost-connection and refused-value errors), ``_pg_claims``,
``_pg_reads`` and ``_pg_operator`` (handlers, mixed into :class:`PostgresBackend`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, ClassVar, TypeVar

import attrs

from trioforge._core.errors import ConfigurationError, DatabaseUnavailableError, SchemaError
from trioforge._core.extras import needs_extra
from trioforge._core.states import TERMINAL_STATES, JobState, Released, Suspended, next_state
from trioforge.storage import _compound as compound
from trioforge.storage import _ops as ops
from trioforge.storage._backend import AsyncioExecute, refused_value
from trioforge.storage._changes import changed_jobs, encode_ids
from trioforge.storage._counts import Tally
from trioforge.storage._pg_claims import PostgresClaims
from trioforge.storage._pg_connection import (
    Connections,
    _bad_value,
    _keep_session,
    _lost,
    _probe,
    _quoted,
    pooler_mode,
)
from trioforge.storage._pg_listen import PostgresListening, trio_asyncio_module
from trioforge.storage._pg_listen import parse_notice as parse_notice
from trioforge.storage._pg_operator import PostgresOperator
from trioforge.storage._pg_reads import PostgresReads
from trioforge.storage._pg_schema import _MIGRATION_LOCK

# Re-exported: tests read the migrations (and patch them) here.
from trioforge.storage._pg_schema import MIGRATIONS as MIGRATIONS

# Re-exported: a bench patches the outcome statement here.
from trioforge.storage._pg_sql import _FINISH as _FINISH
from trioforge.storage._pg_sql import (
    _INSERT_KEYED,
    _INSERT_MANY,
    _KEY_HOLDER,
    _NOTIFY_DUE,
    _NOTIFY_WAKES,
    _RESCUE,
    _RUNNING,
    _STEP_COLUMNS,
    CHANGES_CHANNEL,
    CHANNEL,
    _load_records,
    _record_steps,
    _store,
)
from trioforge.storage._records import (
    Enqueued,
    FireResult,
    RescuedJob,
    SchemaStatus,
    StepWrite,
    step_row,
)
from trioforge.storage._sql_states import TERMINAL
from trioforge.storage._urls import redact

with needs_extra("postgres", "PostgreSQL"):
    import asyncpg

__all__ = ["PostgresBackend"]

T = TypeVar("T")


#: PostgreSQL's longest identifier (a NOTIFY channel is one), in bytes.
_MAX_IDENTIFIER = 63

#: Batches of at most this many groups of ops (see _groups), each atomic alone, run
#: without an explicit transaction.
_AUTOCOMMIT_MAX = 3


def _plain_step(op: ops.Op) -> bool:
    """A record write with nothing else in its transaction (no child, signal or cancel)."""
    return isinstance(op, ops.RecordStep) and op.plain


def _groups(batch: Sequence[ops.Op]) -> list[list[int]]:
    """The batch as groups of ops run together, each the indexes of its ops: the plain
    record writes (one statement, however many runs), the record loads (two), then each
    other op on its own. A queue's runs tend to step in lockstep: claimed, loaded and
    recorded together, a batch of each."""
    steps = [i for i, op in enumerate(batch) if _plain_step(op)]
    loads = [i for i, op in enumerate(batch) if isinstance(op, ops.LoadWorkflow)]
    together = {*steps, *loads}
    alone = [[i] for i in range(len(batch)) if i not in together]
    return [group for group in (steps, loads) if group] + alone


def _notified_by_statement(op: ops.Op) -> bool:
    """Whether ``op``'s own statement sends its change notice (at its commit): outcomes
    (also those of orphan releases), claims and plain record writes."""
    return isinstance(op, ops.Finish | ops.ReleaseOrphans | ops.Claim) or _plain_step(op)


class PostgresBackend(PostgresListening, PostgresClaims, PostgresReads, PostgresOperator):
    """Jobs in PostgreSQL; any number of processes and machines may share it.

    ``schema`` puts the tables in that schema (created if missing) instead of the
    connection's default search path.

    ``listen_url`` is where LISTEN connects (default: ``url``). Behind a transaction
    pooler (PgBouncer with ``pool_mode = transaction``; ``?pooler=transaction`` on ``url``)
    it must be a direct connection, since a pooled one hands LISTEN's server to other
    clients. In that mode the pool keeps no session state: no prepared-statement cache,
    every batch in a transaction, and the schema (``schema``, or ``search_path`` in the
    URL) set by ``SET LOCAL`` in each transaction instead of per session.
    """

    shared = True
    notifies = True
    enqueue_in_asyncio: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        listen_url: str | None = None,
    ) -> None:
        self.url, self._pooled, url_path = pooler_mode(url)
        self.listen_url = listen_url or self.url
        self.schema = schema
        #: Set per transaction when pooled (a session setting would not survive).
        path = _quoted(schema) if schema else url_path
        self._set_path = (
            None
            if path is None
            else "SELECT set_config('search_path', '{}', true)".format(path.replace("'", "''"))
        )
        self._pool_size = pool_size
        #: One batch per pooled connection (the listener has a connection of its own).
        self.max_in_flight = pool_size
        #: The NOTIFY channel of job changes (per schema: other schemas' ids mean nothing).
        self.changes_channel = CHANGES_CHANNEL + (f".{schema}" if schema else "")
        if len(self.changes_channel.encode()) > _MAX_IDENTIFIER:
            raise ConfigurationError(
                f"schema {schema!r} is too long for PostgreSQL's change notices: their channel "
                f"{CHANGES_CHANNEL}.<schema> must fit in {_MAX_IDENTIFIER} bytes, so at most "
                f"{_MAX_IDENTIFIER - len(CHANGES_CHANNEL) - 1}; pick a shorter schema name"
            )
        self._slots_freed = f"f:{schema or ''}"
        self._address = f"{CHANNEL}_w_{uuid.uuid4().hex}"
        self._connect_timeout = connect_timeout
        self._pool: Connections | None = None
        self._batch_tasks: set[asyncio.Task[None]] = set()  # batches running (start_batch)
        self._handlers: dict[
            type, Callable[[asyncpg.Connection, Any, float], Awaitable[object]]
        ] = ops.handlers(self)

    # --- lifecycle (trio side) ---------------------------------------------------------

    def environment(self) -> AbstractAsyncContextManager[Any]:
        trio_asyncio = trio_asyncio_module()
        if trio_asyncio.current_loop.get() is None:
            loop: AbstractAsyncContextManager[Any] = trio_asyncio.open_loop()
            return loop
        return contextlib.nullcontext()  # the host app runs a loop already: reuse it

    async def open(self, *, migrate: bool = True) -> None:
        try:
            self._pool = await self._aio(self._connect)
            status = await self.schema_status()
            if status.current > status.latest:
                raise SchemaError(
                    f"schema version {status.current} in {redact(self.url)} is newer than "
                    f"this trioforge knows ({status.latest}); upgrade trioforge"
                )
            if status.current < status.latest:
                if not migrate:
                    raise SchemaError(
                        f"schema version {status.current} in {redact(self.url)}, this "
                        f"trioforge needs {status.latest}; run `trioforge db migrate`"
                    )
                await self.migrate()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._aio(pool.close)

    async def create_database(self) -> bool:
        parts = urllib.parse.urlsplit(self.url)
        name = urllib.parse.unquote(parts.path.lstrip("/"))
        if not name:
            return False
        maintenance = urllib.parse.urlunsplit(parts._replace(path="/postgres", query=""))

        async def create() -> bool:
            try:
                conn = await asyncpg.connect(maintenance, timeout=self._connect_timeout)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                raise DatabaseUnavailableError(
                    f"cannot reach PostgreSQL at {redact(maintenance)} to create {name!r}: {exc}"
                ) from None
            try:
                if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                    return False
                await conn.execute(f"CREATE DATABASE {_quoted(name)}")
                return True
            finally:
                await conn.close()

        created: bool = await self._aio(create)
        return created

    async def drop(self) -> None:
        async def drop_tables(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "DROP TABLE IF EXISTS trioforge_jobs, trioforge_processes, trioforge_leases, "
                "trioforge_cron, trioforge_paused_queues, trioforge_limits, trioforge_attempts, "
                "trioforge_workflow_steps, trioforge_workflow_signals, trioforge_counts, "
                "trioforge_finished, trioforge_schema CASCADE; "
                "DROP FUNCTION IF EXISTS trioforge_keep_error(); "
                "DROP FUNCTION IF EXISTS trioforge_claim_limited; "
                "DROP FUNCTION IF EXISTS trioforge_addressee"
            )

        await self._aio(self._run, drop_tables)

    async def schema_status(self) -> SchemaStatus:
        current: int = await self._aio(self._run, self._read_version)
        return SchemaStatus(current, len(MIGRATIONS))

    async def migrate(self) -> SchemaStatus:
        await self._aio(self._run, self._migrate)
        return await self.schema_status()

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        try:
            results: list[object] = await self._aio(self._execute, list(batch), now)
        except Exception as exc:
            mapped = self._unavailable(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return [self._unavailable(r) if isinstance(r, Exception) else r for r in results]

    def start_batch(
        self,
        batch: Sequence[ops.Op],
        now: float,
        done: Callable[[list[object] | BaseException], None],
    ) -> bool:
        """:meth:`execute` as an asyncio task of its own on the trio-asyncio loop, calling
        ``done`` as its last step (on the loop, so on trio's thread): no trio task waits
        for it or wakes to pass its results on, and no done-callback costs the loop a turn."""
        loop = trio_asyncio_module().current_loop.get()
        if loop is None or loop.is_closed():
            return False
        task = loop.create_task(self._run_then(batch, now, done))
        self._batch_tasks.add(task)  # the loop keeps tasks only weakly
        task.add_done_callback(self._batch_tasks.discard)
        return True

    async def _run_then(
        self,
        batch: Sequence[ops.Op],
        now: float,
        done: Callable[[list[object] | BaseException], None],
    ) -> None:
        try:
            results = await self.execute_asyncio(batch, now)
        except Exception as exc:  # the whole batch failed, as execute would have raised
            done(exc)
        except BaseException:  # the loop's teardown cancelling it, or an interrupt: the
            # callers get an error of their own; the interrupt goes on from this task only
            done(DatabaseUnavailableError(f"PostgreSQL backend for {redact(self.url)} closed"))
            raise
        else:
            done(results)

    def _unavailable(self, exc: Exception) -> Exception:
        """A lost or refused connection as the error callers know, and a value the server
        or driver refused as :func:`refused_value` (other errors as they are): the runtime
        retries what must not be lost (outcomes, renewals) through an outage, a handler's
        progress rides it out, and an outcome that fails on its own data fails alone."""
        if _bad_value(exc):
            return refused_value(exc)
        if isinstance(exc, DatabaseUnavailableError) or not _lost(exc):
            return exc
        return DatabaseUnavailableError(
            f"PostgreSQL at {redact(self.url)} is unavailable ({type(exc).__name__}: "
            f"{exc}); the operation can be retried once it is back"
        )

    # --- asyncio side ------------------------------------------------------------------

    async def _connect(self) -> Connections:
        settings = {"search_path": self.schema} if self.schema and not self._pooled else None
        # Through a transaction pooler a named prepared statement may be on another server
        # connection than the next transaction's, so none are cached.
        cache = {"statement_cache_size": 0} if self._pooled else {}
        try:
            if self.schema:
                conn = await asyncpg.connect(self.url, timeout=self._connect_timeout, **cache)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                finally:
                    await conn.close()
            pool: asyncpg.Pool = await asyncpg.create_pool(
                self.url,
                # Two kept open (as the pool allows): the first batch that overlaps another
                # (a claim beside an outcome write or a heartbeat), in a fresh process or
                # after a quiet spell, would otherwise wait for a connection to be made.
                min_size=min(2, self._pool_size),
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                server_settings=settings,
                reset=_keep_session,
                **cache,
            )
        except asyncpg.PostgresError as exc:  # the server answered: it runs, and refused
            raise DatabaseUnavailableError(
                f"PostgreSQL at {redact(self.url)} refused the connection: {exc}; check the "
                "URL's user, password and database, and its query parameters (each is sent "
                "to the server as a setting)"
            ) from None
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailableError(
                f"cannot reach PostgreSQL at {redact(self.url)}: {exc or type(exc).__name__}; "
                "check that the server is running and the URL (host, port, user, database)"
            ) from None
        return Connections(pool)

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        if self._pool is None:
            raise DatabaseUnavailableError(f"PostgreSQL backend for {redact(self.url)} is not open")
        async with self._pool.connection() as conn:
            if not self._pooled:
                return await fn(conn)
            async with self._transaction(conn):
                return await fn(conn)

    @asynccontextmanager
    async def _transaction(self, conn: asyncpg.Connection) -> AsyncIterator[None]:
        """A transaction that, behind a transaction pooler, first sets the search path (the
        pooler gives each transaction whichever server connection is free)."""
        async with conn.transaction():
            if self._pooled and self._set_path is not None:
                await conn.execute(self._set_path)
            yield

    async def _notify_probe(self, channel: str, payload: str) -> None:
        await self._aio(self._run, partial(_probe, channel=channel, payload=payload))

    @staticmethod
    async def _read_version(conn: asyncpg.Connection) -> int:
        exists = await conn.fetchval("SELECT to_regclass('trioforge_schema') IS NOT NULL")
        if not exists:
            return 0
        return await conn.fetchval("SELECT coalesce(max(version), 0) FROM trioforge_schema") or 0

    @staticmethod
    async def _migrate(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS trioforge_schema (version INTEGER NOT NULL)"
            )
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM trioforge_schema")
            for version, script in enumerate(MIGRATIONS, start=1):
                if version > current:
                    await conn.execute(script)
                    await conn.execute(
                        "INSERT INTO trioforge_schema (version) VALUES ($1)", version
                    )

    async def _execute(self, batch: list[ops.Op], now: float) -> list[object]:
        if self._pool is None:
            raise DatabaseUnavailableError(f"PostgreSQL backend for {redact(self.url)} is not open")
        async with self._pool.connection() as conn:
            results = await self._batch(conn, batch, now)
            rest = [
                (op, r)
                for op, r in zip(batch, results, strict=True)
                if not _notified_by_statement(op)
            ]
            changed = changed_jobs([op for op, _ in rest], [r for _, r in rest])
            if changed:
                # After the commit, one statement for the whole batch. If it fails the
                # connection is gone, and so is the listeners' (they re-read on reconnect).
                with contextlib.suppress(Exception):
                    async with (
                        self._transaction(conn) if self._pooled else contextlib.nullcontext()
                    ):
                        await conn.execute(
                            _NOTIFY_WAKES, self.changes_channel, list(encode_ids(changed))
                        )
            return results

    async def _batch(
        self, conn: asyncpg.Connection, batch: list[ops.Op], now: float
    ) -> list[object]:
        groups = _groups(batch)
        if (
            not self._pooled  # a pooler may split a statement's parse and execution
            and len(groups) <= _AUTOCOMMIT_MAX
            and all(op.atomic_alone() for op in batch)
        ):
            # No BEGIN/COMMIT round trips for what single statements do atomically: for
            # a few statements (a claim and an outcome batch, a lockstep batch of step
            # writes) they cost more than the extra commits.
            return await self._autocommitted(conn, batch, groups, now)
        try:
            async with self._transaction(conn):
                results: list[object] = [None] * len(batch)
                for group in groups:
                    done = await self._group(conn, [batch[i] for i in group], now)
                    for i, result in zip(group, done, strict=True):
                        results[i] = result
                return results
        except Exception as exc:
            if _lost(exc):  # nothing committed; the connection is gone
                return [exc] * len(batch)
        # Something failed: each op on its own, so neighbours are unaffected.
        return await self._each(conn, batch, now, self._one)

    async def _group(
        self, conn: asyncpg.Connection, group: list[ops.Op], now: float
    ) -> Sequence[object]:
        """The results of a group of ops (see :func:`_groups`), run together. Plain record
        writes and record loads go before the batch's other ops, which cannot reorder one
        run's writes: a run waits for each load and write of its record before its next
        request (a step shown running and ended in one batch is one write), and a signal
        or a child's end beside its load sets its wake-up flag whichever goes first."""
        if len(group) == 1:
            return [await self._handlers[type(group[0])](conn, group[0], now)]
        steps = [op for op in group if isinstance(op, ops.RecordStep)]
        if steps:
            return await _record_steps(conn, steps, self.changes_channel)
        return await _load_records(conn, [op for op in group if isinstance(op, ops.LoadWorkflow)])

    async def _autocommitted(
        self, conn: asyncpg.Connection, batch: list[ops.Op], groups: list[list[int]], now: float
    ) -> list[object]:
        """Each statement committed on its own. One that fails on its data fails its op
        alone: a group's ops are tried again one by one. Once the connection is lost, the
        rest are not tried (their error is the loss), and what committed keeps its result."""
        results: list[object] = [None] * len(batch)
        for n, group in enumerate(groups):
            members = [batch[i] for i in group]
            try:
                done = await self._group(conn, members, now)
            except Exception as exc:
                if _lost(exc):
                    for i in (i for rest in groups[n:] for i in rest):
                        results[i] = exc
                    return results
                done = [exc] if len(group) == 1 else await self._each(conn, members, now, self._one)
            for i, result in zip(group, done, strict=True):
                results[i] = result
        return results

    @staticmethod
    async def _each(
        conn: asyncpg.Connection,
        batch: list[ops.Op],
        now: float,
        run: Callable[[asyncpg.Connection, ops.Op, float], Awaitable[object]],
    ) -> list[object]:
        """Each op on its own; once the connection is lost, the rest are not tried (their
        error is the loss), and what already committed keeps its result."""
        results: list[object] = []
        for i, op in enumerate(batch):
            try:
                results.append(await run(conn, op, now))
            except Exception as exc:
                if not _lost(exc):
                    raise
                return results + [exc] * (len(batch) - i)
        return results

    async def _one(self, conn: asyncpg.Connection, op: ops.Op, now: float) -> object:
        try:
            async with self._transaction(conn):
                return await self._handlers[type(op)](conn, op, now)
        except Exception as exc:
            if _lost(exc):
                raise
            return exc

    # --- operations (asyncio side, inside the batch's transaction) ----------------------

    @staticmethod
    async def _enqueue(conn: asyncpg.Connection, op: ops.Enqueue, now: float) -> list[Enqueued]:
        for job in op.jobs:
            json.loads(job.payload)  # refuse anything that is not JSON text
        status = ["scheduled" if j.run_at > now else "available" for j in op.jobs]
        if all(j.idempotency_key is None for j in op.jobs):
            rows = await conn.fetch(
                _INSERT_MANY,
                [j.name for j in op.jobs], [j.queue for j in op.jobs],
                [j.payload for j in op.jobs], [j.priority for j in op.jobs],
                [j.run_at for j in op.jobs], [j.max_attempts for j in op.jobs], now, status,
                CHANNEL, [j.timeout for j in op.jobs],
                [json.dumps(list(j.requires)) if j.requires else None for j in op.jobs],
                [j.rate_key for j in op.jobs], [j.concurrency_key for j in op.jobs],
                [j.parent_id for j in op.jobs], [j.workflow for j in op.jobs],
                [j.trace_context for j in op.jobs], [j.retain for j in op.jobs],
            )  # fmt: skip
            return [Enqueued(job_id, created=True) for job_id in sorted(r["id"] for r in rows)]
        out, inserted, created = [], Tally(), []
        for j, state in zip(op.jobs, status, strict=True):
            if j.unique_for is not None and j.idempotency_key is not None:
                # An unfinished holder first, else one that finished within unique_for.
                blocking = await conn.fetchval(
                    _KEY_HOLDER, j.idempotency_key
                ) or await conn.fetchval(
                    "SELECT id FROM trioforge_jobs WHERE idempotency_key = $1 "
                    "AND finished_at >= $2 ORDER BY finished_at DESC LIMIT 1",
                    j.idempotency_key, now - j.unique_for,
                )  # fmt: skip
                if blocking is not None:
                    out.append(Enqueued(blocking, created=False))
                    continue
            job_id = await conn.fetchval(
                _INSERT_KEYED, j.name, j.queue, j.payload, j.priority, j.run_at,
                j.max_attempts, j.idempotency_key, now, state, j.timeout,
                list(j.requires) if j.requires else None, j.rate_key, j.concurrency_key,
                j.parent_id, j.workflow, j.trace_context, j.retain,
            )  # fmt: skip
            if job_id is not None:
                out.append(Enqueued(job_id, created=True))
                inserted.add(j.queue, state, None)
                created.append(j)
                continue
            existing = await conn.fetchval(
                _KEY_HOLDER,
                j.idempotency_key,
            )
            out.append(Enqueued(existing, created=False))
        await _store(conn, inserted)
        if created:
            await conn.execute(
                _NOTIFY_DUE, CHANNEL, now, [j.queue for j in created],
                [j.run_at for j in created], [j.name for j in created],
                [bool(j.requires) for j in created],
            )  # fmt: skip
        return out

    async def _release_orphans(
        self, conn: asyncpg.Connection, op: ops.ReleaseOrphans, now: float
    ) -> list[int]:
        return await self._compound(conn, compound.release_orphans(op), now)

    async def _finish(self, conn: asyncpg.Connection, op: ops.Finish, now: float) -> list[bool]:
        columns: list[list[Any]] = [[], [], [], [], [], [], [], []]
        for outcome in op.outcomes:
            event = outcome.event
            target = next_state(JobState.RUNNING, event)
            if target is None:
                continue
            run_at = (
                event.run_at if isinstance(event, Suspended) else getattr(event, "retry_at", None)
            )
            values = (
                outcome.job_id, outcome.lease, target.value, run_at,
                1 if isinstance(event, Released | Suspended) else 0,
                now if target in TERMINAL_STATES else None,
                outcome.result, outcome.error,
            )  # fmt: skip
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        rows = await conn.fetch(
            _FINISH, *columns, now, CHANNEL, self.changes_channel, self._slots_freed
        )
        applied = {(r["id"], r["lease"]) for r in rows}
        return [(o.job_id, o.lease) in applied for o in op.outcomes]

    async def _rescue(
        self, conn: asyncpg.Connection, op: ops.Rescue, now: float
    ) -> list[RescuedJob]:
        rows = await conn.fetch(_RESCUE, now, op.stale_before, CHANNEL, self._slots_freed)
        return sorted(
            (RescuedJob(r["id"], r["name"], r["queue"], r["attempt"], r["max_attempts"],
                        JobState(r["status"])) for r in rows),
            key=lambda r: r.id,
        )  # fmt: skip

    async def _fire_cron(
        self, conn: asyncpg.Connection, op: ops.FireCron, now: float
    ) -> FireResult:
        row = await conn.fetchrow(
            "SELECT last_tick, last_job_id, skipped FROM trioforge_cron WHERE name = $1 FOR UPDATE",
            op.name,
        )
        last_tick, last_job, skipped = (row[0], row[1], row[2]) if row else (None, None, 0)
        if last_tick != op.expected_last:
            return FireResult(conflict=True)
        busy = last_job is not None and await conn.fetchval(
            f"SELECT 1 FROM trioforge_jobs WHERE id = $1 AND status NOT IN {TERMINAL}", last_job
        )
        ids: tuple[int, ...] = ()
        if op.jobs and op.skip_if_running and busy:
            skipped += len(op.jobs)
        else:
            ids = tuple(e.id for e in await self._enqueue(conn, ops.Enqueue(op.jobs), now))
            last_job = ids[-1] if ids else last_job
        # Existing state is locked above; a first state carries no jobs (FireCron), so
        # two schedulers creating it at once is harmless.
        await conn.execute(
            "INSERT INTO trioforge_cron (name, last_tick, last_job_id, skipped) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET "
            "last_tick = excluded.last_tick, last_job_id = excluded.last_job_id, "
            "skipped = excluded.skipped",
            op.name, op.new_last, last_job, skipped,
        )  # fmt: skip
        return FireResult(job_ids=ids, skipped=0 if ids or not op.jobs else len(op.jobs))

    async def _retry_many(
        self, conn: asyncpg.Connection, op: ops.RetryMany, now: float
    ) -> ops.BulkResult:
        return await self._compound(conn, compound.retry_many(op), now)

    async def _discard_many(
        self, conn: asyncpg.Connection, op: ops.DiscardMany, now: float
    ) -> ops.BulkResult:
        return await self._compound(conn, compound.discard_many(op), now)

    async def _compound(self, conn: asyncpg.Connection, steps: compound.Steps[T], now: float) -> T:
        """Run a compound op (:mod:`storage._compound`) in the batch's transaction."""

        async def step(request: compound.Step) -> object:
            if isinstance(request, compound.Matching):
                states = [s.value for s in request.states]
                return await self._matching(conn, request.where, states)
            if isinstance(request, compound.Running):
                rows = await conn.fetch(_RUNNING, request.queue, request.owner)
                return [(r["id"], r["lease"]) for r in rows]
            if isinstance(request, ops.RetryJob):
                return await self._retry_job(conn, request, now)
            if isinstance(request, ops.Discard):
                return await self._discard(conn, request, now)
            return await self._finish(conn, request, now)

        return await compound.run_async(steps, step)

    # --- workflows ---------------------------------------------------------------------

    async def _record_step(
        self, conn: asyncpg.Connection, op: ops.RecordStep, now: float
    ) -> StepWrite:
        if op.plain:  # the statement that also sends the run's change notice
            [written] = await _record_steps(conn, [op], self.changes_channel)
            return written
        status = await conn.execute(
            "UPDATE trioforge_jobs SET cancel_requested = cancel_requested AND NOT $1 "
            "WHERE id = $2 AND lease = $3 AND status = 'running'",
            op.clear_cancel, op.run_id, op.lease,
        )  # fmt: skip
        if status != "UPDATE 1":
            return StepWrite(applied=False)
        step, child_id = op.step, None
        if op.child is not None:
            [enqueued] = await self._enqueue(conn, ops.Enqueue((op.child,)), now)
            child_id = enqueued.id
            step = attrs.evolve(step, result=json.dumps(child_id))
        if op.consume_signal is not None:
            await conn.execute(
                "DELETE FROM trioforge_workflow_signals WHERE id = $1 AND run_id = $2",
                op.consume_signal, op.run_id,
            )  # fmt: skip
        await conn.execute(
            f"INSERT INTO trioforge_workflow_steps (run_id, {_STEP_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
            "ON CONFLICT (run_id, seq) DO UPDATE SET kind = excluded.kind, "
            "name = excluded.name, status = excluded.status, attempt = excluded.attempt, "
            "result = excluded.result, error = excluded.error, wake_at = excluded.wake_at, "
            "compensable = excluded.compensable, started_at = excluded.started_at, "
            "finished_at = excluded.finished_at",
            op.run_id, *step_row(step),
        )  # fmt: skip
        return StepWrite(applied=True, child_id=child_id)

    # --- from plain asyncio (trioforge.aio), and inside a caller's transaction ----------

    async def open_asyncio(self, *, migrate: bool = True) -> None:
        """:meth:`open` for a caller on asyncio itself (no trio, no crossing)."""
        self._pool = await self._connect()
        try:
            current: int = await self._run(self._read_version)
            latest = len(MIGRATIONS)
            if current > latest:
                raise SchemaError(
                    f"schema version {current} in {redact(self.url)} is newer than this "
                    f"trioforge knows ({latest}); upgrade trioforge"
                )
            if current < latest:
                if not migrate:
                    raise SchemaError(
                        f"schema version {current} in {redact(self.url)}, this trioforge "
                        f"needs {latest}; run `trioforge db migrate`"
                    )
                await self._run(self._migrate)
        except BaseException:
            await self.aclose_asyncio()
            raise

    async def aclose_asyncio(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def execute_asyncio(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        """:meth:`execute` for a caller on asyncio: the same SQL, no crossing."""
        try:
            results = await self._execute(list(batch), now)
        except Exception as exc:
            mapped = self._unavailable(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return [self._unavailable(r) if isinstance(r, Exception) else r for r in results]

    @asynccontextmanager
    async def on_asyncio(self, *, migrate: bool = True) -> AsyncIterator[AsyncioExecute]:
        """asyncpg on the caller's running loop, with a pool of its own."""
        await self.open_asyncio(migrate=migrate)
        try:
            yield self.execute_asyncio
        finally:
            await asyncio.shield(self.aclose_asyncio())

    @classmethod
    async def enqueue_in(
        cls, conn: asyncpg.Connection, op: ops.Enqueue, now: float
    ) -> list[Enqueued]:
        """Store ``op``'s jobs with the caller's connection, in whatever transaction it is
        in: a rollback leaves no job, and the wake-up notice is sent at commit."""
        return await cls._enqueue(conn, op, now)
