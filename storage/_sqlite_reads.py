"""SQLite handlers of the operations that only read: jobs, counts, processes, cron,
workflow records."""

from __future__ import annotations

import json
import math
import sqlite3

from trioforge._core.states import JobState
from trioforge.storage import _ops as ops
from trioforge.storage._records import (
    JOB_COLUMNS,
    AttemptRecord,
    ChildRecord,
    CronState,
    JobInfo,
    ProcessDetails,
    ProcessInfo,
    SignalRecord,
    StepRecord,
    WorkflowRecord,
    job_info,
    names_by_queue,
    step_record,
)
from trioforge.storage._sql_states import PENDING
from trioforge.storage._sqlite_sql import _STEP_COLUMNS, _status_literal


class SQLiteReads:
    """The reading handlers of :class:`~trioforge.storage.sqlite.SQLiteBackend`."""

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
    def _stats(db: sqlite3.Connection, op: ops.Stats, now: float) -> dict[str, dict[JobState, int]]:
        del op, now
        out: dict[str, dict[JobState, int]] = {}
        for queue, status, count in db.execute(
            "SELECT queue, state, n FROM trioforge_counts WHERE n <> 0"
        ):
            out.setdefault(queue, {})[JobState(status)] = count
        return out

    @staticmethod
    def _paused_queues(db: sqlite3.Connection, op: ops.PausedQueues, now: float) -> frozenset[str]:
        del op, now
        return frozenset(name for (name,) in db.execute("SELECT name FROM trioforge_paused_queues"))

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
                f"SELECT DISTINCT queue, name FROM trioforge_jobs WHERE status IN {PENDING}"
            )
        else:
            rows = db.execute(
                "SELECT DISTINCT queue, name FROM trioforge_jobs "
                f"WHERE status IN {PENDING} AND queue IN (SELECT value FROM json_each(?))",
                (json.dumps(list(op.queues)),),
            )
        return names_by_queue(rows)

    @staticmethod
    def _cron_states(
        db: sqlite3.Connection, op: ops.CronStates, now: float
    ) -> dict[str, CronState]:
        del op, now
        rows = db.execute("SELECT name, last_tick, last_job_id, skipped FROM trioforge_cron")
        return {r[0]: CronState(*r) for r in rows}

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
