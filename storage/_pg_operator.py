"""PostgreSQL handlers of the operator's writes on one job or run: cancel, retry, discard,
and a signal to a workflow run; each locks its row first."""

from __future__ import annotations

import json

from trioforge._core.errors import InvalidArgumentError, InvalidStateError, JobNotFoundError
from trioforge._core.extras import needs_extra
from trioforge._core.states import TERMINAL_STATES, JobState
from trioforge.storage import _compound as compound
from trioforge.storage import _ops as ops
from trioforge.storage._counts import Tally
from trioforge.storage._pg_listen import parse_notice as parse_notice

# Re-exported: tests read the migrations (and patch them) here.
from trioforge.storage._pg_schema import MIGRATIONS as MIGRATIONS

# Re-exported: a bench patches the outcome statement here.
from trioforge.storage._pg_sql import _FINISH as _FINISH
from trioforge.storage._pg_sql import _KEY_HOLDER, _WAKE_PARENTS, CHANNEL, _store
from trioforge.storage._records import CancelResult, not_a_run
from trioforge.storage._sql_states import PENDING, TERMINAL

with needs_extra("postgres", "PostgreSQL"):
    import asyncpg


class PostgresOperator:
    """The single-job operator handlers of
    :class:`~trioforge.storage.postgres.PostgresBackend`."""

    schema: str | None

    @staticmethod
    async def _locked(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record:
        row = await conn.fetchrow(
            "SELECT status, idempotency_key, workflow, queue, finished_at FROM trioforge_jobs "
            "WHERE id = $1 FOR UPDATE",
            job_id,
        )
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return row

    async def _cancel(self, conn: asyncpg.Connection, op: ops.Cancel, now: float) -> CancelResult:
        row = await self._locked(conn, op.job_id)
        status = JobState(row["status"])
        if status in TERMINAL_STATES:
            return CancelResult.FINISHED
        children = await conn.fetch(
            f"SELECT id FROM trioforge_jobs WHERE parent_id = $1 AND status NOT IN {TERMINAL} "
            "ORDER BY id",
            op.job_id,
        )
        for child in children:
            await self._cancel(conn, ops.Cancel(child["id"]), now)
        if status is JobState.RUNNING:
            await conn.execute(
                "UPDATE trioforge_jobs SET cancel_requested = TRUE WHERE id = $1", op.job_id
            )
            await conn.execute(
                "SELECT pg_notify($1, $2)", CHANNEL, f"c:{op.job_id}:{self.schema or ''}"
            )
            return CancelResult.REQUESTED
        if row["workflow"]:  # a waiting run goes to a worker to be undone first
            queue = await conn.fetchval(
                "UPDATE trioforge_jobs SET cancel_requested = TRUE, run_at = least(run_at, $1) "
                "WHERE id = $2 RETURNING queue",
                now, op.job_id,
            )  # fmt: skip
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"w:{now!r}:{queue}")
            return CancelResult.REQUESTED
        await conn.execute(
            "UPDATE trioforge_jobs SET status = 'cancelled', finished_at = $1 WHERE id = $2",
            now, op.job_id,
        )  # fmt: skip
        await _store(conn, Tally().move(row["queue"], (status.value, None), ("cancelled", now)))
        await conn.execute(_WAKE_PARENTS, now, [op.job_id], CHANNEL)
        return CancelResult.CANCELLED

    async def _retry_job(self, conn: asyncpg.Connection, op: ops.RetryJob, now: float) -> bool:
        row = await self._locked(conn, op.job_id)
        if JobState(row["status"]) not in (JobState.DEAD, JobState.CANCELLED):
            return False
        key = row["idempotency_key"]
        if key is not None:
            holder = await conn.fetchval(
                _KEY_HOLDER,
                key,
            )
            if holder is not None:
                raise compound.key_held(op.job_id, holder, key)
        await conn.execute(
            "UPDATE trioforge_jobs SET status = 'available', attempt = 0, run_at = $1, "
            "finished_at = NULL, error = NULL, result = NULL, cancel_requested = FALSE "
            "WHERE id = $2",
            now, op.job_id,
        )  # fmt: skip
        old = (row["status"], row["finished_at"])
        await _store(conn, Tally().move(row["queue"], old, ("available", None)))
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"w:{now!r}:{row['queue']}")
        return True

    async def _discard(self, conn: asyncpg.Connection, op: ops.Discard, now: float) -> bool:
        row = await self._locked(conn, op.job_id)
        status = await conn.execute(
            f"UPDATE trioforge_jobs SET status = 'dead', finished_at = $1, error = $2 "
            f"WHERE id = $3 AND status IN {PENDING}",
            now, op.reason, op.job_id,
        )  # fmt: skip
        if status == "UPDATE 1":
            await _store(conn, Tally().move(row["queue"], (row["status"], None), ("dead", now)))
            await conn.execute(_WAKE_PARENTS, now, [op.job_id], CHANNEL)
        return bool(status == "UPDATE 1")

    async def _send_signal(self, conn: asyncpg.Connection, op: ops.SendSignal, now: float) -> int:
        locked = await self._locked(conn, op.run_id)
        if not locked["workflow"]:
            name = await conn.fetchval("SELECT name FROM trioforge_jobs WHERE id = $1", op.run_id)
            raise InvalidArgumentError(not_a_run(op.run_id, name))
        status = JobState(locked["status"])
        if status in TERMINAL_STATES:
            raise InvalidStateError(
                f"run {op.run_id} has finished ({status}); a signal to it would never be read"
            )
        json.loads(op.payload)  # refuse anything that is not JSON text
        signal_id: int = await conn.fetchval(
            "INSERT INTO trioforge_workflow_signals (run_id, name, payload, sent_at) "
            "VALUES ($1, $2, $3, $4) RETURNING id",
            op.run_id, op.name, op.payload, now,
        )  # fmt: skip
        queue = await conn.fetchval(
            f"UPDATE trioforge_jobs SET "
            f"run_at = CASE WHEN status IN {PENDING} AND run_at > $1 THEN $1 ELSE run_at END, "
            f"wake_requested = wake_requested OR status = 'running' "
            f"WHERE id = $2 RETURNING queue",
            now, op.run_id,
        )  # fmt: skip
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"w:{now!r}:{queue}")
        return signal_id
