"""PostgreSQL statement text, and the few functions that run a statement built around it
(count deltas, bucket reads, batched workflow record writes and loads)."""

from __future__ import annotations

from trioforge._core.extras import needs_extra
from trioforge._core.flow import Bucket, RateLimit, refill
from trioforge._core.states import JobState
from trioforge.storage import _ops as ops
from trioforge.storage._changes import IDS_PER_NOTICE
from trioforge.storage._counts import Tally
from trioforge.storage._records import (
    ChildRecord,
    SignalRecord,
    StepWrite,
    WorkflowRecord,
    step_record,
    step_row,
)

with needs_extra("postgres", "PostgreSQL"):
    import asyncpg
from trioforge.storage._sql_states import PENDING, RESCUE_RETRIES, TERMINAL

#: FoldCounts: each table's delta rows summed into one row per key, in one statement (a
#: reader sees the deltas or their sum, never both); a key summing to zero goes.
_FOLD_COUNTS = """
WITH gone AS (DELETE FROM trioforge_counts RETURNING queue, state, n),
kept AS (
    INSERT INTO trioforge_counts (queue, state, n)
    SELECT queue, state, sum(n) FROM gone GROUP BY queue, state HAVING sum(n) <> 0
), finished AS (DELETE FROM trioforge_finished RETURNING second, queue, state, n)
INSERT INTO trioforge_finished (second, queue, state, n)
SELECT second, queue, state, sum(n) FROM finished
GROUP BY second, queue, state HAVING sum(n) <> 0
"""


def _count_moved(moved: str, *, finishing: bool = True) -> str:
    """CTEs adding to the counts what CTE ``moved`` did: rows of (queue, status,
    finished_at, old_status, old_at), the job's state and finish time after and before.
    Without ``finishing`` (a claim: pending jobs become running), no finish time moves."""
    counted = f"""counted AS (
    INSERT INTO trioforge_counts (queue, state, n)
    SELECT queue, state, sum(d) FROM (
        SELECT queue, status, 1 FROM {moved}
        UNION ALL SELECT queue, old_status, -1 FROM {moved} WHERE old_status IS NOT NULL
    ) AS c(queue, state, d) GROUP BY queue, state HAVING sum(d) <> 0
)"""
    if not finishing:
        return counted
    return f"""{counted}, counted_finished AS (
    INSERT INTO trioforge_finished (second, queue, state, n)
    SELECT second, queue, state, sum(d) FROM (
        SELECT floor(finished_at)::bigint, queue, status, 1 FROM {moved}
        WHERE finished_at IS NOT NULL
        UNION ALL SELECT floor(old_at)::bigint, queue, old_status, -1 FROM {moved}
        WHERE old_at IS NOT NULL
    ) AS c(second, queue, state, d) GROUP BY second, queue, state HAVING sum(d) <> 0
)"""


#: A write's net count changes, worked out in Python (``storage._counts.Tally``).
_ADD_COUNTS = """
WITH finished AS (
    INSERT INTO trioforge_finished (second, queue, state, n)
    SELECT * FROM unnest($4::bigint[], $5::text[], $6::text[], $7::bigint[])
)
INSERT INTO trioforge_counts (queue, state, n)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
"""


async def _store(conn: asyncpg.Connection, tally: Tally) -> None:
    counts, finished = tally.counts(), tally.finished()
    if counts or finished:
        await conn.execute(
            _ADD_COUNTS, *(list(c) for c in zip(*counts, strict=True)) if counts else ([],) * 3,
            *(list(c) for c in zip(*finished, strict=True)) if finished else ([],) * 4,
        )  # fmt: skip


def _wake_notices(new: str, now: str, channel: str) -> str:
    """CTEs sending one wake-up per queue for the jobs of CTE ``new`` (rows of queue,
    run_at, name, requiring: whether it requires capabilities), delivered at commit.

    Jobs already due go to one process alone where one can take them all: picked at
    random (``trioforge_addressee``) among those serving the queue and running every one
    of their names whose listener hears its own channel (``wake_until``, renewed at each
    heartbeat, has not passed by ``now``), on that channel as ``a:<jobs>:<run_at>:<queue>``.
    That process claims them or, if it cannot take them all, passes the wake-up on to every
    process (``WakeAll``). Otherwise (jobs due later, jobs that require capabilities, no such
    process) every listening process hears ``w:<run_at>:<queue>`` on ``channel``: each
    idle one would claim, and all but one would find nothing. A queue's due jobs and its
    later ones go apart: told of later jobs alone, one process would be the only one to
    claim them when they fall due.
    """
    return f"""due AS (
    SELECT queue, min(run_at) AS run_at, count(*) AS n, array_agg(DISTINCT name) AS names,
        bool_or(requiring) AS requiring
    FROM {new} GROUP BY queue, run_at <= {now}
), addressed AS (
    SELECT due.*, CASE WHEN run_at <= {now} AND NOT requiring
        THEN trioforge_addressee(queue, names, {now}) END AS address
    FROM due
), notified AS (
    SELECT pg_notify(
        coalesce(address, {channel}),
        CASE WHEN address IS NULL THEN 'w:' || run_at::text || ':' || queue
             ELSE 'a:' || n || ':' || run_at::text || ':' || queue END
    ) FROM addressed
)"""


#: One statement: the insert, and one wake-up notice per queue (sent at commit).
_INSERT_MANY = f"""
WITH inserted AS (
    INSERT INTO trioforge_jobs
        (name, queue, payload, priority, run_at, max_attempts, created_at, status, timeout,
         requires, rate_key, concurrency_key, parent_id, workflow, trace_context, retain)
    SELECT name, queue, payload, priority, run_at, max_attempts, $7, status, timeout,
        CASE WHEN requires IS NOT NULL
             THEN ARRAY(SELECT json_array_elements_text(requires::json)) END,
        rate_key, concurrency_key, parent_id, workflow, trace_context, retain::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::int[],
                $8::text[], $10::float8[], $11::text[], $12::text[], $13::text[],
                $14::bigint[], $15::bool[], $16::text[], $17::text[])
        WITH ORDINALITY
        AS t(name, queue, payload, priority, run_at, max_attempts, status, timeout, requires,
             rate_key, concurrency_key, parent_id, workflow, trace_context, retain, ord)
    ORDER BY ord
    RETURNING id, queue, run_at, status, finished_at, NULL AS old_status, NULL::float8 AS old_at,
        name, requires IS NOT NULL AS requiring
), {_count_moved("inserted")}, {_wake_notices("inserted", "$7", "$9")}
SELECT id FROM inserted WHERE (SELECT count(*) FROM notified) >= 0
"""

#: The wake-ups of jobs inserted one by one (keyed ones): ``$1`` the channel, ``$2`` now,
#: then each created job's queue, run_at, name and whether it requires capabilities.
_NOTIFY_DUE = f"""
WITH created AS (
    SELECT * FROM unnest($3::text[], $4::float8[], $5::text[], $6::bool[])
        AS t(queue, run_at, name, requiring)
), {_wake_notices("created", "$2", "$1")}
SELECT count(*) FROM notified
"""

_INSERT_KEYED = f"""
INSERT INTO trioforge_jobs
    (name, queue, payload, priority, run_at, max_attempts, idempotency_key, created_at, status,
     timeout, requires, rate_key, concurrency_key, parent_id, workflow, trace_context, retain)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::jsonb)
ON CONFLICT (idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status NOT IN {TERMINAL} DO NOTHING
RETURNING id
"""


#: The LISTEN/NOTIFY channel every listening process hears. Payloads: ``w:<run_at>:<queue>``
#: (work enqueued; ``a:<jobs>:<run_at>:<queue>`` on a channel one process alone hears),
#: ``c:<job id>:<schema>`` (cancel requested; see parse_notice) and ``f:<schema>`` (jobs
#: with a concurrency key stopped running: slots freed); delivered at commit.
CHANNEL = "trioforge"

#: The channel of job change notices: payloads are comma-separated job ids (see
#: ``storage._changes``), sent after every batch that changed a job visibly.
CHANGES_CHANNEL = "trioforge_changes"

_NOTIFY_WAKES = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"

_KEY_HOLDER = (
    f"SELECT id FROM trioforge_jobs WHERE idempotency_key = $1 AND status NOT IN {TERMINAL}"
)


def _changes_notice(name: str, ids: str, channel: str) -> str:
    """A change notice as a CTE called ``name`` (the statement must read it), sent at the
    statement's commit on ``channel`` (a parameter): the ids ``SELECT ids`` gives, in
    payloads of IDS_PER_NOTICE (NOTIFY refuses 8000 bytes). Nothing durable: a claim's
    lets watchers in other processes see a job that reports no progress as running from
    its start; an outcome batch's, its jobs' ends."""
    return f"""{name} AS (
    SELECT pg_notify({channel}, string_agg(id::text, ',')) FROM (
        SELECT id, (row_number() OVER ()) / {IDS_PER_NOTICE} AS chunk FROM (SELECT {ids}) AS c
    ) AS chunks GROUP BY chunk
)"""


#: One statement: the claimed rows, plus a last row (id NULL) carrying the earliest run_at
#: still in the future (the rows being claimed are due, so the snapshot cannot mislead it),
#: and their change notice.
#: The claim index orders by priority first, so it cannot stop at the first future run_at:
#: asked for more jobs than are due, the walk went on through every future row of the
#: queue (a million delayed jobs or sleeping runs: 6,000 buffers and 200 ms a claim). So
#: it asks for no more than are due, counted first through the run_at index (at most $4).
#: That count walks back from now, newest due job first: every claim leaves a dead entry
#: at the front of both indexes (a claimed job leaves their predicate), which only VACUUM
#: removes, so a count from the front read every dead entry since the last vacuum, as the
#: pick does (with a backlog: 400 of a claim's 1,100 buffers, 100,000 jobs after a VACUUM).
_CLAIM = f"""
WITH picked AS (
    SELECT id, status FROM (
        SELECT id, status FROM trioforge_jobs
        WHERE queue = $1 AND status IN {PENDING} AND run_at <= $2 AND name = ANY($3::text[])
          AND (requires IS NULL OR requires <@ $7::text[])
          AND NOT EXISTS (SELECT FROM trioforge_paused_queues WHERE name = $1)
        ORDER BY priority DESC, run_at, id
        LIMIT (SELECT count(*) FROM (
            SELECT FROM trioforge_jobs
            WHERE queue = $1 AND status IN {PENDING} AND run_at <= $2
              AND name = ANY($3::text[]) AND (requires IS NULL OR requires <@ $7::text[])
            ORDER BY run_at DESC LIMIT $4
        ) AS due)
        FOR UPDATE SKIP LOCKED
    ) AS due_first
    -- No more rows than that, but a bound the planner can read: with none it would plan
    -- the update for a tenth of the table (a merge join walking the whole primary key).
    LIMIT $4
), claimed AS (
    UPDATE trioforge_jobs AS j
    SET status = 'running', attempt = j.attempt + 1, lease = j.lease + 1, lease_owner = $5,
        lease_until = $6, started_at = $2, error = NULL, progress = NULL,
        progress_message = NULL
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.name, j.queue, j.payload, j.priority, j.run_at, j.attempt,
        j.max_attempts, j.lease, j.timeout, j.trace_context, j.status,
        picked.status AS old_status
), {_count_moved("claimed", finishing=False)}, {_changes_notice("notice", "id FROM claimed", "$8")}
SELECT id, name, queue, payload, priority, run_at, attempt, max_attempts, lease, timeout,
    trace_context
FROM claimed WHERE (SELECT count(*) FROM notice) >= 0
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, min(run_at), NULL, NULL, NULL, NULL, NULL
FROM trioforge_jobs
WHERE queue = $1 AND status IN {PENDING} AND run_at > $2 AND name = ANY($3::text[])
  AND (requires IS NULL OR requires <@ $7::text[])
  AND NOT EXISTS (SELECT FROM trioforge_paused_queues WHERE name = $1)
"""

#: A queue's own rate limit (``Queue(rate_limit=)``) around a claim: its bucket's lock (the
#: advisory lock the claim function takes for a rate key), read, and stored back.
_LOCK_LIMIT_KEY = "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':' || $1, 0))"
_READ_BUCKET = "SELECT tokens, at FROM trioforge_limits WHERE key = $1"
_STORE_BUCKET = """
INSERT INTO trioforge_limits (key, tokens, at) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at
"""
#: Claimed jobs whose own bucket is the queue's (the claim function took their token).
_SHARING_BUCKET = (
    "SELECT count(*) FROM trioforge_jobs WHERE id = ANY($1::bigint[]) AND rate_key = $2"
)


def _stored(row: asyncpg.Record | None) -> Bucket | None:
    """A bucket as stored (None: none yet)."""
    return None if row is None or row["tokens"] is None else Bucket(row["tokens"], row["at"])


def _bucket(row: asyncpg.Record | None, rate: RateLimit, now: float) -> Bucket:
    """A stored bucket (None: none yet), refilled to ``now``."""
    return refill(_stored(row), rate, now)


#: A flow-controlled claim (see _CLAIM_LIMITED_FUNCTION), with the claimed rows named as
#: _CLAIM's.
_CLAIM_LIMITED = f"""
WITH claim AS (
    SELECT * FROM trioforge_claim_limited(
        $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15
    ) WITH ORDINALITY
), {_changes_notice("notice", "o_id AS id FROM claim WHERE o_id IS NOT NULL", "$16")}
SELECT o_id AS id, o_name AS name, o_queue AS queue, o_payload AS payload,
    o_priority AS priority, o_run_at AS run_at, o_attempt AS attempt,
    o_max_attempts AS max_attempts, o_lease AS lease, o_timeout AS timeout,
    o_trace_context AS trace_context, o_next_token_at AS next_token_at, o_held AS held
FROM claim WHERE (SELECT count(*) FROM notice) >= 0 ORDER BY ordinality
"""

#: One statement (so it needs no transaction of its own): the outcomes with their change
#: notices (sent at commit, one round trip less between an outcome and its watchers), and
#: the workflow runs whose children just ended woken (due now if waiting, with a NOTIFY to
#: their queue; flagged if running). A run suspending in this same batch is made due here
#: instead: one statement must not update its row twice.
#: Each outcome's job is found by its id ("was": the state it must still be in, a column
#: of u so that the planner cannot read the jobs through the running jobs' index). With
#: ``status = 'running'`` written as a constant, a generic plan believed the statistics'
#: "no job is running", walked every running job and, for each one, every outcome: when
#: outcomes piled up (3,000 outcomes, 3,000 running), 4 s instead of 0.1 s, and each
#: slower batch left a bigger one behind it (12 s, job starts stalled meanwhile).
_FINISH = f"""
WITH u AS MATERIALIZED (
    SELECT *, 'running' AS was
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::float8[], $5::int[],
                $6::float8[], $7::text[], $8::text[])
        AS u(id, lease, status, run_at, released, finished_at, result, error)
), done AS (
    UPDATE trioforge_jobs AS j
    SET status = u.status, attempt = j.attempt - u.released,
        run_at = CASE
            WHEN u.status = 'scheduled' AND (j.wake_requested OR EXISTS (
                SELECT FROM u AS c JOIN trioforge_jobs AS cj ON cj.id = c.id
                WHERE cj.parent_id = j.id AND c.status IN {TERMINAL})) THEN $9::float8
            ELSE coalesce(u.run_at, j.run_at) END,
        lease_owner = NULL, lease_until = NULL, finished_at = u.finished_at,
        result = u.result, error = u.error
    FROM u WHERE j.id = u.id AND j.status = u.was AND j.lease = u.lease
    RETURNING j.id, j.lease, j.parent_id, j.status, j.queue, j.finished_at,
        'running' AS old_status, NULL::float8 AS old_at, j.concurrency_key
), {_count_moved("done")}, freed AS (
    SELECT pg_notify($10, $12) FROM done WHERE concurrency_key IS NOT NULL LIMIT 1
), woken AS (
    UPDATE trioforge_jobs AS p
    SET run_at = CASE WHEN p.status IN {PENDING} AND p.run_at > $9 THEN $9 ELSE p.run_at END,
        wake_requested = p.wake_requested OR p.status = 'running'
    WHERE p.id IN (SELECT parent_id FROM done WHERE status IN {TERMINAL})
      AND p.id NOT IN (SELECT id FROM u)
    RETURNING p.queue, p.status
), notified AS (
    SELECT pg_notify($10, 'w:' || ($9::float8)::text || ':' || queue) FROM woken
    WHERE status IN {PENDING} GROUP BY queue
), {_changes_notice("changes", "id FROM done", "$11")}
SELECT id, lease FROM done
WHERE (SELECT count(*) FROM notified) + (SELECT count(*) FROM changes)
    + (SELECT count(*) FROM freed) >= 0
"""

#: Wake the workflow runs whose children (ids) just ended, outside a Finish.
_WAKE_PARENTS = f"""
WITH woken AS (
    UPDATE trioforge_jobs AS p
    SET run_at = CASE WHEN p.status IN {PENDING} AND p.run_at > $1::float8 THEN $1::float8
                      ELSE p.run_at END,
        wake_requested = p.wake_requested OR p.status = 'running'
    WHERE p.id IN (SELECT parent_id FROM trioforge_jobs WHERE id = ANY($2::bigint[]))
    RETURNING p.queue, p.status
)
SELECT pg_notify($3, 'w:' || ($1::float8)::text || ':' || queue) FROM woken
WHERE status IN {PENDING} GROUP BY queue
"""

_STEP_COLUMNS = (
    "seq, kind, name, status, attempt, result, error, wake_at, compensable, started_at, finished_at"
)

#: Each held job found by its id, as _FINISH finds its jobs: with the state and owner as
#: constants, the plans took 3.9 s (generic) and 4.9 s (custom, reading the whole table) to
#: renew 3,000 held jobs, 0.06 s now.
_RENEW = """
WITH u AS MATERIALIZED (
    SELECT *, 'running' AS was, $4::text AS owner
    FROM unnest($1::bigint[], $2::bigint[]) AS u(id, lease)
)
UPDATE trioforge_jobs AS j SET lease_until = $3
FROM u
WHERE j.id = u.id AND j.lease = u.lease AND j.status = u.was AND j.lease_owner = u.owner
RETURNING j.id, j.lease, j.cancel_requested
"""

#: One statement: forget processes that stopped beating, rescue jobs whose lease expired.
#: A workflow run asked to cancel goes on to be undone, as any lost attempt; the parents of
#: jobs that end here are woken.
_RESCUE = f"""
WITH forgotten AS (DELETE FROM trioforge_processes WHERE heartbeat_at < $2),
rescued AS (
    UPDATE trioforge_jobs SET
        status = CASE WHEN cancel_requested AND NOT workflow THEN 'cancelled'
                      WHEN {RESCUE_RETRIES} THEN 'retrying' ELSE 'dead' END,
        finished_at = CASE WHEN (cancel_requested AND NOT workflow) OR NOT {RESCUE_RETRIES}
                           THEN $1 END,
        run_at = CASE WHEN NOT (cancel_requested AND NOT workflow) AND {RESCUE_RETRIES}
                      THEN $1 ELSE run_at END,
        error = CASE WHEN cancel_requested AND NOT workflow THEN error
                     ELSE 'attempt ' || attempt || ' lost: its worker stopped heartbeating' END,
        lease_owner = NULL, lease_until = NULL
    WHERE status = 'running' AND lease_until <= $1
    RETURNING id, parent_id, status, queue, finished_at, 'running' AS old_status,
        NULL::float8 AS old_at, concurrency_key, name, attempt, max_attempts
), {_count_moved("rescued")}, woken AS (
    UPDATE trioforge_jobs AS p
    SET run_at = CASE WHEN p.status IN {PENDING} AND p.run_at > $1 THEN $1 ELSE p.run_at END,
        wake_requested = p.wake_requested OR p.status = 'running'
    WHERE p.id IN (SELECT parent_id FROM rescued WHERE status IN {TERMINAL})
      AND p.id NOT IN (SELECT id FROM rescued)
), freed AS (
    SELECT pg_notify($3, $4) FROM rescued WHERE concurrency_key IS NOT NULL LIMIT 1
)
SELECT id, name, queue, attempt, max_attempts, status FROM rescued
WHERE (SELECT count(*) FROM freed) >= 0
"""


#: Resume a queue and, in the same statement, send the usual wake-up notice for it.
_RESUME = """
WITH resumed AS (DELETE FROM trioforge_paused_queues WHERE name = $1 RETURNING name)
SELECT pg_notify($2, $3) FROM resumed
"""


#: Many runs' plain record writes in one statement, each fenced by its run's lease (the
#: run's row locked against a rescue until the commit, as an update of it would), with the
#: change notice of the runs written (sent at commit): no round trip of its own after it.
_RECORD_STEPS = f"""
WITH u AS MATERIALIZED (
    SELECT *, 'running' AS was
    FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[],
                $7::int[], $8::text[], $9::text[], $10::float8[], $11::bool[], $12::float8[],
                $13::float8[])
        AS u(run_id, lease, {_STEP_COLUMNS})
), fenced AS (
    SELECT u.* FROM u JOIN trioforge_jobs AS j ON j.id = u.run_id
    WHERE j.lease = u.lease AND j.status = u.was
    FOR SHARE OF j
), written AS (
    INSERT INTO trioforge_workflow_steps (run_id, {_STEP_COLUMNS})
    SELECT run_id, {_STEP_COLUMNS} FROM fenced
    ON CONFLICT (run_id, seq) DO UPDATE SET kind = excluded.kind, name = excluded.name,
        status = excluded.status, attempt = excluded.attempt, result = excluded.result,
        error = excluded.error, wake_at = excluded.wake_at, compensable = excluded.compensable,
        started_at = excluded.started_at, finished_at = excluded.finished_at
    RETURNING run_id
), {_changes_notice("notice", "DISTINCT run_id AS id FROM written", "$14")}
SELECT run_id FROM written WHERE (SELECT count(*) FROM notice) >= 0
"""


async def _record_steps(
    conn: asyncpg.Connection, steps: list[ops.RecordStep], channel: str
) -> list[StepWrite]:
    """Plain record writes (no child, signal or cancel), of any runs, as one statement that
    also sends their change notice on ``channel``."""
    # One write per entry, the last (a step shown running may end in the same batch): one
    # statement cannot write a row twice.
    last = {(op.run_id, op.step.seq): op for op in steps}
    rows = [(op.run_id, op.lease, *step_row(op.step)) for op in last.values()]
    columns = [list(column) for column in zip(*rows, strict=True)]
    written = {r["run_id"] for r in await conn.fetch(_RECORD_STEPS, *columns, channel)}
    return [StepWrite(applied=op.run_id in written) for op in steps]


def _records(runs: str) -> str:
    """Each run of CTE ``runs`` (its id, lease, created_at, cancel_requested, workflow)
    with its whole record (steps, pending signals, children) as arrays of rows: one
    statement, one snapshot, however many runs."""
    return f"""
SELECT r.id, r.lease, r.created_at, r.cancel_requested, r.workflow,
    ARRAY(SELECT ROW({_STEP_COLUMNS}) FROM trioforge_workflow_steps
          WHERE run_id = r.id ORDER BY seq) AS steps,
    ARRAY(SELECT ROW(id, name, payload, sent_at) FROM trioforge_workflow_signals
          WHERE run_id = r.id ORDER BY id) AS signals,
    ARRAY(SELECT ROW(id, name, status, result, error) FROM trioforge_jobs
          WHERE parent_id = r.id ORDER BY id) AS children
FROM {runs} AS r
"""


#: One run's record, a look changing nothing.
_READ_RECORD = f"""
WITH run AS (
    SELECT id, lease, created_at, cancel_requested, workflow FROM trioforge_jobs WHERE id = $1
){_records("run")}"""

#: Many runs' wake-up flags cleared as their attempts begin, each fenced by its lease: a
#: signal or child end after this wakes the run again. Only flags that are set are
#: written, so in the usual case (none set) nothing is, and its commit waits for no WAL
#: flush. The records are read by the next statement (_FENCED_RECORDS), not in this one:
#: its snapshot would miss a signal whose commit this statement waited for, and clear the
#: flag that signal set: a wake-up lost.
#: The state runs must be in is a column of the runs (as in _FINISH), so no plan reaches
#: them through the running jobs' index.
_CLEAR_WAKES = """
WITH u AS MATERIALIZED (
    SELECT *, 'running' AS was FROM unnest($1::bigint[], $2::bigint[]) AS u(id, lease)
)
UPDATE trioforge_jobs AS j SET wake_requested = FALSE
FROM u WHERE j.id = u.id AND j.lease = u.lease AND j.status = u.was AND j.wake_requested
"""

#: Many runs' records, each only if its lease is the run's current one.
_FENCED_RECORDS = f"""
WITH u AS MATERIALIZED (
    SELECT *, 'running' AS was FROM unnest($1::bigint[], $2::bigint[]) AS u(id, lease)
), run AS (
    SELECT j.id, j.lease, j.created_at, j.cancel_requested, j.workflow
    FROM trioforge_jobs AS j JOIN u ON j.id = u.id AND j.lease = u.lease AND j.status = u.was
){_records("run")}"""


def _record(row: asyncpg.Record) -> WorkflowRecord:
    """A run's record from a row of :func:`_records`."""
    return WorkflowRecord(
        run_id=row["id"],
        created_at=row["created_at"],
        cancel_requested=row["cancel_requested"],
        steps=tuple(step_record(s) for s in row["steps"]),
        signals=tuple(SignalRecord(*s) for s in row["signals"]),
        children=tuple(
            ChildRecord(c[0], c[1], JobState(c[2]), c[3], c[4]) for c in row["children"]
        ),
        workflow=row["workflow"],
    )


async def _read_record(conn: asyncpg.Connection, run_id: int) -> WorkflowRecord | None:
    """Run ``run_id``'s record (None: no such job)."""
    row = await conn.fetchrow(_READ_RECORD, run_id)
    return None if row is None else _record(row)


async def _load_records(
    conn: asyncpg.Connection, loads: list[ops.LoadWorkflow]
) -> list[WorkflowRecord | None]:
    """Each load's record, None where its lease is not the run's current one: two
    statements for any number of runs (a queue's runs claimed together load together),
    not four or five a run."""
    runs = [op.run_id for op in loads], [op.lease for op in loads]
    await conn.execute(_CLEAR_WAKES, *runs)
    loaded = {(r["id"], r["lease"]): _record(r) for r in await conn.fetch(_FENCED_RECORDS, *runs)}
    return [loaded.get((op.run_id, op.lease)) for op in loads]


#: A process's running jobs in a queue (orphans, unless it still holds them).
_RUNNING = (
    "SELECT id, lease FROM trioforge_jobs WHERE queue = $1 AND status = 'running' "
    "AND lease_owner = $2"
)
