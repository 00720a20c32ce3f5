"""SQLite handlers of claims (plain and flow-controlled), lease renewals and progress, and
of the maintenance writes (processes, leadership, queues, purge and delete, count
folding): each a statement or a few, with no other handler's help."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

from trioforge._core.errors import InvalidStateError, JobNotFoundError
from trioforge._core.flow import FLOW_WINDOW, Bucket, FlowGate, drain, take_token
from trioforge._core.states import TERMINAL_STATES, JobState
from trioforge.storage import _ops as ops
from trioforge.storage._counts import Tally
from trioforge.storage._records import ClaimResult, RenewResult, not_finished
from trioforge.storage._sqlite_sql import (
    _CANDIDATES,
    _CLAIM,
    _DUE_STATES,
    _ENDING,
    _PAUSED_AND_UPCOMING,
    _RENEW,
    _STORE_BUCKETS,
    _claim_ids,
    _in_claim_order,
    _store,
    _wake,
)


def _read_bucket(db: sqlite3.Connection, key: str) -> Bucket | None:
    row = db.execute("SELECT tokens, at FROM trioforge_limits WHERE key = ?", (f"r:{key}",))
    stored = row.fetchone()
    return None if stored is None or stored[0] is None else Bucket(*stored)


def _store_bucket(db: sqlite3.Connection, key: str, bucket: Bucket) -> None:
    db.execute(_STORE_BUCKETS, (json.dumps([[f"r:{key}", bucket.tokens, bucket.at]]),))


#: Retention's batch, one state at a time: its oldest finished jobs through its own range of
#: the trioforge_jobs_finished_by_state index (a list of states would have SQLite read every
#: match and sort); the handler keeps the oldest of all states' picks.
_PURGE_PICK = """
SELECT finished_at, id FROM trioforge_jobs WHERE status = ?1
AND finished_at IS NOT NULL AND finished_at < ?2
AND ((?3 IS NOT NULL AND queue = ?3) OR (?3 IS NULL
    AND queue NOT IN (SELECT value FROM json_each(?4))))
AND (NOT ?6 OR retain IS NULL)
ORDER BY finished_at, id LIMIT ?5
"""


class SQLiteClaims:
    """The claim and maintenance handlers of :class:`~trioforge.storage.sqlite.SQLiteBackend`."""

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

    @staticmethod
    def _take_token(db: sqlite3.Connection, op: ops.TakeToken, now: float) -> float | None:
        """The write lock is held, as for a claim: the bucket cannot change under us."""
        bucket, wait_until = take_token(_read_bucket(db, op.key), op.limit, now)
        if wait_until is None:
            _store_bucket(db, op.key, bucket)
        return wait_until

    @staticmethod
    def _drain_bucket(db: sqlite3.Connection, op: ops.DrainBucket, now: float) -> None:
        _store_bucket(db, op.key, drain(_read_bucket(db, op.key), op.limit, now, op.until))

    @staticmethod
    def _renew(db: sqlite3.Connection, op: ops.Renew, now: float) -> RenewResult:
        del now
        held = db.execute(_RENEW, (json.dumps(op.leases), op.lease_until, op.owner)).fetchall()
        lost = set(op.leases).difference((job_id, lease) for job_id, lease, _ in held)
        cancel = frozenset(job_id for job_id, _, cancel_requested in held if cancel_requested)
        return RenewResult(cancel, frozenset(lost))

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
    def _pause_queue(db: sqlite3.Connection, op: ops.PauseQueue, now: float) -> bool:
        if op.paused:
            cursor = db.execute(
                "INSERT INTO trioforge_paused_queues (name, paused_at) VALUES (?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (op.queue, now),
            )
        else:
            cursor = db.execute("DELETE FROM trioforge_paused_queues WHERE name = ?", (op.queue,))
            if cursor.rowcount == 1:
                _wake(db, [op.queue], now)
        return cursor.rowcount == 1

    @staticmethod
    def _wake_all(db: sqlite3.Connection, op: ops.WakeAll, now: float) -> None:
        del now
        for queue, run_at in op.wakes:
            _wake(db, [queue], run_at)

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
    def _lead(db: sqlite3.Connection, op: ops.Lead, now: float) -> bool:
        row = db.execute(
            "INSERT INTO trioforge_leases (name, owner, until) VALUES (?1, ?2, ?3) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until "
            "WHERE trioforge_leases.until <= ?4 OR trioforge_leases.owner = excluded.owner "
            "RETURNING owner",
            (op.name, op.owner, op.until, now),
        ).fetchone()
        return row is not None

    @staticmethod
    def _purge(db: sqlite3.Connection, op: ops.Purge, now: float) -> list[int]:
        del now
        picked: list[tuple[float, int]] = []
        for state in sorted({JobState(s).value for s in op.statuses}):
            picked += db.execute(
                _PURGE_PICK,
                (state, op.before, op.queue, json.dumps(list(op.exclude)), max(op.limit, 0),
                 op.keep_retained),
            ).fetchall()  # fmt: skip
        ids = [job_id for _, job_id in sorted(picked)[: max(op.limit, 0)]]
        rows = db.execute(
            "DELETE FROM trioforge_jobs WHERE id IN (SELECT value FROM json_each(?))"
            " RETURNING id, queue, status, finished_at",
            (json.dumps(ids),),
        ).fetchall()
        return _deleted(db, rows)

    @staticmethod
    def _purge_expired(db: sqlite3.Connection, op: ops.PurgeExpired, now: float) -> list[int]:
        del now
        rows = db.execute(
            "DELETE FROM trioforge_jobs WHERE id IN ("
            " SELECT id FROM trioforge_jobs WHERE retain IS NOT NULL AND finished_at IS NOT NULL"
            " AND finished_at + json_extract(retain, '$.' || status) < ?1"
            " ORDER BY finished_at + json_extract(retain, '$.' || status), id LIMIT ?2)"
            " RETURNING id, queue, status, finished_at",
            (op.at, max(op.limit, 0)),
        ).fetchall()
        return _deleted(db, rows)

    @staticmethod
    def _delete(db: sqlite3.Connection, op: ops.Delete, now: float) -> JobState:
        del now
        row = db.execute("SELECT status FROM trioforge_jobs WHERE id = ?", (op.job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job with id {op.job_id}")
        status = JobState(row[0])
        if status not in TERMINAL_STATES:
            raise InvalidStateError(not_finished(op.job_id, status))
        rows = db.execute(
            "DELETE FROM trioforge_jobs WHERE id = ? RETURNING id, queue, status, finished_at",
            (op.job_id,),
        ).fetchall()
        _deleted(db, rows)
        return status

    @staticmethod
    def _fold_counts(db: sqlite3.Connection, op: ops.FoldCounts, now: float) -> None:
        """Nothing to fold: each write adds into the one row per key (``ON CONFLICT``), since
        the single writer has no contention to avoid."""
        del db, op, now


def _deleted(db: sqlite3.Connection, rows: list[tuple[int, str, str, float]]) -> list[int]:
    """Finished jobs just deleted, as (id, queue, status, finished_at): they leave the
    counts, and a run's record and signals go with it (its attempts go by trigger). Their
    ids, ascending."""
    _store(db, Tally({(q, s, at): -n for (q, s, at), n in Counter(r[1:] for r in rows).items()}))
    gone = json.dumps([r[0] for r in rows])
    for table in ("trioforge_workflow_steps", "trioforge_workflow_signals"):
        db.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT value FROM json_each(?))", (gone,))
    return sorted(r[0] for r in rows)
