"""SQLite statement text, and the few functions that run a statement built around it
(count deltas, claims by id, parent wake-ups, wake-ups for other processes)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable
from typing import Any

from trioforge._core.states import JobState, claim_key
from trioforge.storage import _ops as ops
from trioforge.storage._counts import Tally
from trioforge.storage._records import ClaimedJob, NewJob
from trioforge.storage._sql_states import PENDING, TERMINAL

_INSERT = (
    "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, max_attempts, "
    "idempotency_key, created_at, status, timeout, requires, rate_key, concurrency_key, "
    "parent_id, workflow, trace_context, retain) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _first_state(j: NewJob, now: float) -> str:
    return "scheduled" if j.run_at > now else "available"


def _insert_row(j: NewJob, key: str | None, now: float) -> tuple[object, ...]:
    return (
        j.name, j.queue, j.payload, j.priority, j.run_at, j.max_attempts, key, now,
        _first_state(j, now), j.timeout,
        json.dumps(list(j.requires)) if j.requires else None, j.rate_key, j.concurrency_key,
        j.parent_id, int(j.workflow), j.trace_context, j.retain,
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
    f"SELECT id FROM trioforge_jobs WHERE idempotency_key = ? AND status NOT IN {TERMINAL}"
)

#: The jobs a claim takes, as a subquery: due, in claim order (id last, so the order is
#: total and the same statement twice under the write lock picks the same jobs).
_DUE = f"""
    SELECT id, status FROM trioforge_jobs INDEXED BY trioforge_jobs_claim
    WHERE queue = ? AND status IN {PENDING} AND run_at <= ?
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
WHERE j.queue = ?1 AND j.status IN {PENDING} AND j.run_at <= ?2
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
     WHERE queue = ?1 AND status IN {PENDING} AND run_at > ?2
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
RETURNING id, lease, queue, status, finished_at, concurrency_key IS NOT NULL
"""

#: Every lease of a renewal in one statement (one GIL hand-off, not one per lease: 50,000
#: of those cost seconds while the event loop is busy): ?1 is [[id, lease], ...] as JSON.
_RENEW = """
WITH r AS (
    SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS lease
    FROM json_each(?1)
)
UPDATE trioforge_jobs AS j SET lease_until = ?2
FROM r WHERE j.id = r.id AND j.lease = r.lease AND j.status = 'running' AND j.lease_owner = ?3
RETURNING id, lease, cancel_requested
"""

#: The workflow runs whose children (ids as a JSON array) just ended: a waiting run is due
#: now, a running one will be when it suspends.
_WAKE_PARENTS = f"""
UPDATE trioforge_jobs
SET run_at = CASE WHEN status IN {PENDING} AND run_at > ?1 THEN ?1 ELSE run_at END,
    wake_requested = CASE WHEN status = 'running' THEN 1 ELSE wake_requested END
WHERE id IN (SELECT parent_id FROM trioforge_jobs
             WHERE id IN (SELECT value FROM json_each(?2)) AND parent_id IS NOT NULL)
RETURNING queue, status IN {PENDING}
"""

#: Tell every process's listener (storage._sqlite_watch) that a queue has jobs due at ?2.
_WAKE = (
    "INSERT INTO trioforge_wakes (kind, queue, run_at, n) VALUES ('w', ?1, ?2, 1) "
    "ON CONFLICT (kind, queue) DO UPDATE SET run_at = excluded.run_at, n = n + 1"
)
#: Tell every process's listener that jobs with a concurrency limit ended.
_SLOTS_FREED = (
    "INSERT INTO trioforge_wakes (kind, queue, run_at, n) VALUES ('f', '', 0, 1) "
    "ON CONFLICT (kind, queue) DO UPDATE SET n = n + 1"
)

_STEP_COLUMNS = (
    "seq, kind, name, status, attempt, result, error, wake_at, compensable, started_at, finished_at"
)


def _in_claim_order(rows: list[Any]) -> tuple[ClaimedJob, ...]:
    jobs = (ClaimedJob(*row) for row in rows)
    return tuple(sorted(jobs, key=lambda j: claim_key(j.priority, j.run_at, j.id)))


def _status_literal(status: JobState | None) -> list[str]:
    """``status = '<state>'`` as a literal: a partial index (``WHERE status = 'dead'``)
    serves only a condition known when the statement is prepared. The text is the
    enum's own value, never caller input."""
    return [] if status is None else [f"status = '{JobState(status).value}'"]


def _wake_parents(db: sqlite3.Connection, ended: list[int], now: float) -> None:
    woken = db.execute(_WAKE_PARENTS, (now, json.dumps(ended))).fetchall()
    _wake(db, {queue for queue, waiting in woken if waiting}, now)


def _wake(db: sqlite3.Connection, queues: Iterable[str], run_at: float) -> None:
    """Wake other processes' fetchers of ``queues`` for jobs due at ``run_at`` that no new
    row announces (a listener sees new rows by itself)."""
    db.executemany(_WAKE, [(queue, run_at) for queue in sorted(queues)])


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


#: A process's running jobs in a queue (orphans, unless it still holds them).
_RUNNING = (
    "SELECT id, lease FROM trioforge_jobs WHERE queue = ? AND status = 'running' "
    "AND lease_owner = ?"
)
