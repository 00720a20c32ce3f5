"""PostgreSQL handlers of the operations that only read: jobs, counts, processes, cron,
workflow records (whose statements are in ``_pg_sql``, beside the record writes)."""

from __future__ import annotations

import math

from trioforge._core.extras import needs_extra
from trioforge._core.states import JobState
from trioforge.storage import _ops as ops
from trioforge.storage._pg_sql import _STEP_COLUMNS, _load_records, _read_record
from trioforge.storage._records import (
    JOB_COLUMNS,
    AttemptRecord,
    CronState,
    JobInfo,
    ProcessDetails,
    ProcessInfo,
    StepRecord,
    WorkflowRecord,
    job_info,
    names_by_queue,
    step_record,
)
from trioforge.storage._sql_states import PENDING

with needs_extra("postgres", "PostgreSQL"):
    import asyncpg


class PostgresReads:
    """The reading handlers of :class:`~trioforge.storage.postgres.PostgresBackend`."""

    @staticmethod
    async def _get(conn: asyncpg.Connection, op: ops.Get, now: float) -> JobInfo | None:
        del now
        row = await conn.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM trioforge_jobs WHERE id = $1", op.job_id
        )
        return None if row is None else job_info(row)

    @staticmethod
    async def _get_many(
        conn: asyncpg.Connection, op: ops.GetMany, now: float
    ) -> dict[int, JobInfo]:
        del now
        rows = await conn.fetch(
            f"SELECT {JOB_COLUMNS} FROM trioforge_jobs WHERE id = ANY($1::bigint[])",
            list(op.job_ids),
        )
        return {info.id: info for info in map(job_info, rows)}

    @staticmethod
    async def _list_jobs(conn: asyncpg.Connection, op: ops.ListJobs, now: float) -> list[JobInfo]:
        del now
        # Only the filters given (a generic plan of "$1 IS NULL OR ..." would use no index);
        # fixed fragments, every value a parameter but the state's.
        filters = {
            "queue = ": op.queue,
            "name = ": op.name,
            "id < ": op.before,
        }
        given = {sql: value for sql, value in filters.items() if value is not None}
        conditions = [f"{sql}${i}" for i, sql in enumerate(given, start=1)]
        values: list[object] = list(given.values())
        # The state as a literal of the enum: a partial index (WHERE status = 'dead')
        # serves only a condition known at plan time. Never caller text.
        if op.status is not None:
            conditions.append(f"status = '{JobState(op.status).value}'")
        if op.runs_only or op.workflow is not None:
            conditions.append("workflow")
        if op.workflow is not None:  # every version: job names "<workflow>@v<N>"
            values.append(op.workflow)
            n = len(values)
            conditions.append(f"left(name, length(${n}) + 2) = ${n} || '@v'")
        where = " AND ".join(conditions) or "TRUE"
        rows = await conn.fetch(
            f"SELECT {JOB_COLUMNS} FROM trioforge_jobs WHERE {where} "
            f"ORDER BY id DESC LIMIT ${len(values) + 1}",
            *values, op.limit,
        )  # fmt: skip
        return [job_info(row) for row in rows]

    @staticmethod
    async def _throughput(
        conn: asyncpg.Connection, op: ops.Throughput, now: float
    ) -> dict[str, dict[JobState, int]]:
        del now
        out: dict[str, dict[JobState, int]] = {}
        rows = await conn.fetch(
            "SELECT queue, state, sum(n)::bigint AS n FROM trioforge_finished "
            "WHERE second >= $1 GROUP BY queue, state HAVING sum(n) <> 0",
            math.floor(op.since),
        )
        for row in rows:
            out.setdefault(row["queue"], {})[JobState(row["state"])] = row["n"]
        return out

    @staticmethod
    async def _throughput_series(
        conn: asyncpg.Connection, op: ops.ThroughputSeries, now: float
    ) -> dict[str, dict[JobState, dict[int, int]]]:
        del now
        out: dict[str, dict[JobState, dict[int, int]]] = {}
        rows = await conn.fetch(
            "SELECT queue, state, second - second % $2::bigint AS start, sum(n)::bigint AS n "
            "FROM trioforge_finished WHERE second >= $1 GROUP BY queue, state, start "
            "HAVING sum(n) <> 0",
            math.floor(op.since), op.step,
        )  # fmt: skip
        for row in rows:
            steps = out.setdefault(row["queue"], {}).setdefault(JobState(row["state"]), {})
            steps[row["start"]] = row["n"]
        return out

    @staticmethod
    async def _stats(
        conn: asyncpg.Connection, op: ops.Stats, now: float
    ) -> dict[str, dict[JobState, int]]:
        del op, now
        out: dict[str, dict[JobState, int]] = {}
        rows = await conn.fetch(
            "SELECT queue, state, sum(n)::bigint AS n FROM trioforge_counts "
            "GROUP BY queue, state HAVING sum(n) <> 0"
        )
        for row in rows:
            out.setdefault(row["queue"], {})[JobState(row["state"])] = row["n"]
        return out

    @staticmethod
    async def _paused_queues(
        conn: asyncpg.Connection, op: ops.PausedQueues, now: float
    ) -> frozenset[str]:
        del op, now
        rows = await conn.fetch("SELECT name FROM trioforge_paused_queues")
        return frozenset(row["name"] for row in rows)

    @staticmethod
    async def _processes_list(
        conn: asyncpg.Connection, op: ops.Processes, now: float
    ) -> list[ProcessInfo]:
        del op, now
        rows = await conn.fetch(
            "SELECT owner, queues, started_at, heartbeat_at, details, job_names "
            "FROM trioforge_processes ORDER BY started_at, owner"
        )
        return [
            ProcessInfo(r[0], tuple(r[1]), r[2], r[3], ProcessDetails.from_json(r[4]),
                        None if r[5] is None else tuple(r[5]))
            for r in rows
        ]  # fmt: skip

    @staticmethod
    async def _waiting_names(
        conn: asyncpg.Connection, op: ops.WaitingNames, now: float
    ) -> dict[str, frozenset[str]]:
        del now
        rows = await conn.fetch(
            f"SELECT DISTINCT queue, name FROM trioforge_jobs WHERE status IN {PENDING} "
            "AND ($1::text[] IS NULL OR queue = ANY($1::text[]))",
            None if op.queues is None else list(op.queues),
        )
        return names_by_queue((r["queue"], r["name"]) for r in rows)

    @staticmethod
    async def _cron_states(
        conn: asyncpg.Connection, op: ops.CronStates, now: float
    ) -> dict[str, CronState]:
        del op, now
        rows = await conn.fetch("SELECT name, last_tick, last_job_id, skipped FROM trioforge_cron")
        return {r[0]: CronState(r[0], r[1], r[2], r[3]) for r in rows}

    @staticmethod
    async def _attempts(
        conn: asyncpg.Connection, op: ops.Attempts, now: float
    ) -> list[AttemptRecord]:
        del now
        rows = await conn.fetch(
            "SELECT attempt, started_at, error, 0 AS current, seq FROM trioforge_attempts "
            "WHERE job_id = $1 UNION ALL SELECT attempt, started_at, error, 1, 0 "
            "FROM trioforge_jobs WHERE id = $1 AND error IS NOT NULL ORDER BY 4, 5",
            op.job_id,
        )
        return [AttemptRecord(r["attempt"], r["started_at"], r["error"]) for r in rows]

    @staticmethod
    async def _matching(
        conn: asyncpg.Connection, where: ops.JobFilter, statuses: list[str]
    ) -> list[int]:
        rows = await conn.fetch(
            "SELECT id FROM trioforge_jobs WHERE id > $1 AND status = ANY($2::text[])"
            " AND ($3::text IS NULL OR queue = $3) AND ($4::text IS NULL OR name = $4)"
            " AND ($5::float8 IS NULL OR coalesce(finished_at, created_at) >= $5)"
            " ORDER BY id LIMIT $6",
            where.after_id, statuses, where.queue, where.name, where.since,
            max(where.limit, 0),
        )  # fmt: skip
        return [r["id"] for r in rows]

    @staticmethod
    async def _load_workflow(
        conn: asyncpg.Connection, op: ops.LoadWorkflow, now: float
    ) -> WorkflowRecord | None:
        del now
        [record] = await _load_records(conn, [op])
        return record

    @staticmethod
    async def _read_workflow(
        conn: asyncpg.Connection, op: ops.ReadWorkflow, now: float
    ) -> WorkflowRecord | None:
        del now
        return await _read_record(conn, op.run_id)

    @staticmethod
    async def _latest_steps(
        conn: asyncpg.Connection, op: ops.LatestSteps, now: float
    ) -> dict[int, StepRecord]:
        del now
        rows = await conn.fetch(
            f"SELECT DISTINCT ON (run_id) run_id, {_STEP_COLUMNS} FROM trioforge_workflow_steps "
            "WHERE run_id = ANY($1::bigint[]) ORDER BY run_id, seq DESC",
            list(op.run_ids),
        )
        return {row["run_id"]: step_record(tuple(row)[1:]) for row in rows}
