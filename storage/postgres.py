"""The PostgreSQL backend: many replicas on one database.

asyncpg runs under trio-asyncio, reached only through the storage actor. Each batch is one
``aio_as_trio`` crossing into a coroutine that acquires a pooled connection, runs the batch
in one transaction and releases the connection, all on the asyncio side: a cancelled
crossing cancels that coroutine, whose ``async with`` gives the connection back. Claims use
``FOR UPDATE SKIP LOCKED`` so replicas never wait on each other's rows; multi-row writes
(enqueue, outcomes, lease renewals) are single statements over ``unnest`` arrays. The rules
are those of :mod:`trioforge._core`; the contract suite holds this backend to them.
"""

from __future__ import annotations

import contextlib
import json
import math
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio

from trioforge._core.errors import (
    DatabaseUnavailableError,
    InvalidArgumentError,
    InvalidStateError,
    JobNotFoundError,
    SchemaError,
)
from trioforge._core.extras import needs_extra
from trioforge._core.flow import (
    FLOW_WINDOW,
    TOKEN_EPSILON,
    Bucket,
    RateLimit,
    next_token_at,
    refill,
)
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
from trioforge.storage._changes import IDS_PER_NOTICE, changed_jobs, encode_ids, parse_ids
from trioforge.storage._counts import Tally
from trioforge.storage._records import (
    JOB_COLUMNS,
    AttemptRecord,
    CancelNotice,
    CancelResult,
    ChildRecord,
    ClaimedJob,
    ClaimResult,
    CronState,
    Enqueued,
    FireResult,
    JobInfo,
    Notice,
    Outcome,
    ProcessDetails,
    ProcessInfo,
    RenewResult,
    RescuedJob,
    SchemaStatus,
    SignalRecord,
    SlotsFreedNotice,
    StepRecord,
    StepWrite,
    WakeNotice,
    WorkflowRecord,
    job_info,
    names_by_queue,
    not_a_run,
    step_record,
    step_row,
)
from trioforge.storage._urls import redact

with needs_extra("postgres", "PostgreSQL"):
    import asyncpg
    import trio_asyncio

__all__ = ["PostgresBackend"]

_PENDING = "('scheduled', 'available', 'retrying')"
_TERMINAL = "('completed', 'dead', 'cancelled', 'compensated')"
#: The terminal states before workflows (the first migration's indexes name them).
_TERMINAL_V1 = "('completed', 'dead', 'cancelled')"
#: Serialises concurrent migrations across processes (any fixed 64-bit number).
_MIGRATION_LOCK = 0x7472696F666F7267

#: A flow-controlled claim, whole, in the server: one round trip and no explicit
#: transaction (reading limit rows into the client and writing them back took five). It
#: walks due jobs in claim order a chunk at a time (locked, skipping other claimers'), and
#: decides as FlowGate does (core/flow.py; tests/test_flow_gate_sql.py holds the two
#: to the same decisions): a job whose name has limits starts only if its concurrency key
#: has a free slot and its rate bucket a token. Each key is a transaction-scoped advisory
#: lock (nothing written; hashed with the schema): the first chunk waits for its keys in
#: lock order, so claimers on several replicas queue up behind each other; later chunks,
#: which already hold locks, only try theirs (a key another claim holds is "busy": its
#: jobs wait). Running jobs and buckets are read after the locks are granted, by a
#: statement of its own that sees every claim committed before. Returns the claimed rows,
#: then one row with a NULL id carrying the earliest future run_at, the next token time
#: and whether a job was held back.
_CLAIM_LIMITED_FUNCTION = f"""
CREATE FUNCTION trioforge_claim_limited(
    p_queue TEXT, p_now DOUBLE PRECISION, p_names TEXT[], p_caps TEXT[], p_limit INTEGER,
    p_owner TEXT, p_lease_until DOUBLE PRECISION, p_window INTEGER, p_epsilon DOUBLE PRECISION,
    l_names TEXT[], l_per_second DOUBLE PRECISION[], l_burst DOUBLE PRECISION[],
    l_concurrency INTEGER[], p_ending_ids BIGINT[], p_ending_leases BIGINT[]
) RETURNS TABLE (o_id BIGINT, o_name TEXT, o_queue TEXT, o_payload TEXT, o_priority INTEGER,
    o_run_at DOUBLE PRECISION, o_attempt INTEGER, o_max_attempts INTEGER, o_lease BIGINT,
    o_timeout DOUBLE PRECISION, o_trace_context TEXT, o_next_token_at DOUBLE PRECISION,
    o_held BOOLEAN)
LANGUAGE plpgsql
-- Every statement here looks rows up by key or id; a young table's statistics (the bench,
-- a fresh deployment) would otherwise have the claim scan every row of trioforge_jobs.
SET enable_seqscan = off
AS $f$
DECLARE
    v_paused BOOLEAN;
    v_upcoming DOUBLE PRECISION;
    v_next_token DOUBLE PRECISION;
    v_held BOOLEAN := FALSE;
    v_picked BIGINT[] := '{{}}';
    v_seen BIGINT[] := '{{}}';
    v_chunk INTEGER := p_limit;  -- then four times more per chunk, if jobs were held back
    v_first BOOLEAN := TRUE;
    c_id BIGINT[]; c_name TEXT[]; c_rate TEXT[]; c_conc TEXT[];
    v_busy TEXT[] := '{{}}';
    -- running jobs per concurrency key and buckets, as this walk left them: parallel arrays
    r_key TEXT[] := '{{}}'; r_n INTEGER[] := '{{}}';
    w_key TEXT[] := '{{}}'; w_tokens FLOAT8[] := '{{}}'; w_at FLOAT8[] := '{{}}';
    v_c RECORD;
    j INTEGER; jc INTEGER;
    v_ck TEXT; v_rk TEXT; v_tokens DOUBLE PRECISION; v_at DOUBLE PRECISION;
    v_when DOUBLE PRECISION;
BEGIN
    SELECT EXISTS (SELECT FROM trioforge_paused_queues WHERE name = p_queue), (
        SELECT min(t.run_at) FROM trioforge_jobs AS t
        WHERE t.queue = p_queue AND t.status IN {_PENDING} AND t.run_at > p_now
          AND t.name = ANY(p_names) AND (t.requires IS NULL OR t.requires <@ p_caps))
    INTO v_paused, v_upcoming;
    IF v_paused OR p_limit <= 0 THEN
        RETURN QUERY SELECT NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::INTEGER,
            NULL::DOUBLE PRECISION, NULL::INTEGER, NULL::INTEGER, NULL::BIGINT,
            NULL::DOUBLE PRECISION, NULL::TEXT, NULL::DOUBLE PRECISION, FALSE;
        RETURN;
    END IF;
    WHILE cardinality(v_picked) < p_limit AND cardinality(v_seen) < p_window LOOP
        WITH c AS (
            SELECT t.id, t.name, t.rate_key, t.concurrency_key, t.priority, t.run_at
            FROM trioforge_jobs AS t
            WHERE t.queue = p_queue AND t.status IN {_PENDING} AND t.run_at <= p_now
              AND t.name = ANY(p_names) AND (t.requires IS NULL OR t.requires <@ p_caps)
              AND t.id <> ALL(v_seen)
            ORDER BY t.priority DESC, t.run_at, t.id
            LIMIT least(v_chunk, p_window - cardinality(v_seen))
            FOR UPDATE SKIP LOCKED
        )
        SELECT array_agg(c.id ORDER BY c.priority DESC, c.run_at, c.id),
               array_agg(c.name ORDER BY c.priority DESC, c.run_at, c.id),
               array_agg(c.rate_key ORDER BY c.priority DESC, c.run_at, c.id),
               array_agg(c.concurrency_key ORDER BY c.priority DESC, c.run_at, c.id)
        INTO c_id, c_name, c_rate, c_conc FROM c;
        EXIT WHEN c_id IS NULL;
        v_seen := v_seen || c_id;
        v_chunk := v_chunk * 4;
        -- The locks of the keys of the limits this chunk's jobs have.
        IF v_first THEN
            PERFORM pg_advisory_xact_lock(k.h) FROM (
                SELECT DISTINCT hashtextextended(current_schema() || ':' || v.k, 0) AS h
                FROM unnest(c_name, c_rate, c_conc) AS c(n, r, c)
                JOIN unnest(l_names, l_per_second, l_concurrency) AS l(n, ps, lim)
                    ON l.n = c.n,
                LATERAL (VALUES (CASE WHEN l.ps IS NOT NULL THEN 'r:' || c.r END),
                                (CASE WHEN l.lim IS NOT NULL THEN 'c:' || c.c END)) AS v(k)
                WHERE v.k IS NOT NULL ORDER BY 1
            ) AS k;
        ELSE
            v_busy := v_busy || ARRAY(
                SELECT DISTINCT v.k
                FROM unnest(c_name, c_rate, c_conc) AS c(n, r, c)
                JOIN unnest(l_names, l_per_second, l_concurrency) AS l(n, ps, lim)
                    ON l.n = c.n,
                LATERAL (VALUES (CASE WHEN l.ps IS NOT NULL THEN 'r:' || c.r END),
                                (CASE WHEN l.lim IS NOT NULL THEN 'c:' || c.c END)) AS v(k)
                WHERE v.k IS NOT NULL AND NOT pg_try_advisory_xact_lock(
                    hashtextextended(current_schema() || ':' || v.k, 0))
            );
        END IF;
        v_first := FALSE;
        -- The gate, job by job in claim order (FlowGate.admit), reading (after the locks)
        -- the running count of a concurrency key and the stored bucket of a rate key the
        -- first time the walk meets it; what the walk made of them counts from then on.
        FOR v_c IN
            SELECT c.id, l.n AS limited, l.ps, l.burst, l.lim,
                CASE WHEN l.lim IS NOT NULL THEN c.ck END AS ck,
                CASE WHEN l.ps IS NOT NULL THEN c.rk END AS rk,
                CASE WHEN l.lim IS NOT NULL AND c.ck IS NOT NULL AND c.ck <> ALL(r_key) THEN (
                    SELECT count(*) FROM trioforge_jobs AS t
                    WHERE t.status = 'running' AND t.concurrency_key = c.ck
                      AND NOT EXISTS (
                          SELECT FROM unnest(p_ending_ids, p_ending_leases) AS e(id, lease)
                          WHERE e.id = t.id AND e.lease = t.lease))
                END AS running,
                b.tokens, b.at
            FROM unnest(c_id, c_name, c_rate, c_conc) WITH ORDINALITY AS c(id, n, rk, ck, ord)
            LEFT JOIN unnest(l_names, l_per_second, l_burst, l_concurrency)
                AS l(n, ps, burst, lim) ON l.n = c.n
            LEFT JOIN trioforge_limits AS b ON l.ps IS NOT NULL AND b.key = 'r:' || c.rk
            ORDER BY c.ord
        LOOP
            EXIT WHEN cardinality(v_picked) >= p_limit;
            IF v_c.limited IS NULL THEN
                v_picked := v_picked || v_c.id;
                CONTINUE;
            END IF;
            v_ck := v_c.ck;
            v_rk := v_c.rk;
            IF cardinality(v_busy) > 0
               AND (('c:' || v_ck) = ANY(v_busy) OR ('r:' || v_rk) = ANY(v_busy)) THEN
                v_held := TRUE;  -- look again soon: the other claim is about to commit
                CONTINUE;
            END IF;
            IF v_ck IS NOT NULL THEN
                jc := array_position(r_key, v_ck);
                IF jc IS NULL THEN
                    r_key := r_key || v_ck;
                    r_n := r_n || v_c.running::INTEGER;
                    jc := cardinality(r_key);
                END IF;
                IF r_n[jc] >= v_c.lim THEN
                    v_held := TRUE;
                    CONTINUE;
                END IF;
            END IF;
            IF v_rk IS NOT NULL THEN
                j := array_position(w_key, v_rk);
                IF j IS NOT NULL THEN
                    v_tokens := w_tokens[j];
                    v_at := w_at[j];
                ELSIF v_c.tokens IS NULL THEN  -- a new bucket is full
                    v_tokens := v_c.burst;
                    v_at := p_now;
                ELSE  -- refilled for the time since it was stored
                    v_tokens := v_c.tokens;
                    v_at := v_c.at;
                    IF p_now > v_at THEN
                        v_tokens := least(v_c.burst, v_tokens + (p_now - v_at) * v_c.ps);
                        v_at := p_now;
                    END IF;
                END IF;
                IF j IS NULL THEN
                    w_key := w_key || v_rk;
                    w_tokens := w_tokens || v_tokens;
                    w_at := w_at || v_at;
                    j := cardinality(w_key);
                END IF;
                IF (1.0 - v_tokens) / v_c.ps > p_epsilon THEN
                    v_when := greatest(v_at + greatest(0.0, 1.0 - v_tokens) / v_c.ps,
                                       p_now + p_epsilon);
                    v_next_token := least(coalesce(v_next_token, v_when), v_when);
                    CONTINUE;
                END IF;
                w_tokens[j] := greatest(0.0, v_tokens - 1.0);
            END IF;
            IF v_ck IS NOT NULL THEN
                r_n[jc] := r_n[jc] + 1;
            END IF;
            v_picked := v_picked || v_c.id;
        END LOOP;
    END LOOP;
    IF cardinality(w_key) > 0 THEN
        INSERT INTO trioforge_limits (key, tokens, at)
        SELECT 'r:' || b.key, b.tokens, b.at
        FROM unnest(w_key, w_tokens, w_at) AS b(key, tokens, at)
        ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at;
    END IF;
    -- The claim, and its net change to the stored counts (delta rows, see trioforge_counts).
    RETURN QUERY
    WITH claimed AS (
        UPDATE trioforge_jobs AS t
        SET status = 'running', attempt = t.attempt + 1, lease = t.lease + 1,
            lease_owner = p_owner, lease_until = p_lease_until, started_at = p_now,
            error = NULL, progress = NULL, progress_message = NULL
        FROM (SELECT o.id, o.status FROM trioforge_jobs AS o WHERE o.id = ANY(v_picked)) AS p
        WHERE t.id = p.id
        RETURNING t.id, t.name, t.queue, t.payload, t.priority, t.run_at, t.attempt,
            t.max_attempts, t.lease, t.timeout, t.trace_context, p.status AS old_status
    ), counted AS (
        INSERT INTO trioforge_counts (queue, state, n)
        SELECT d.queue, d.state, sum(d.n) FROM (
            SELECT c.queue, 'running', 1 FROM claimed AS c
            UNION ALL SELECT c.queue, c.old_status, -1 FROM claimed AS c
        ) AS d(queue, state, n) GROUP BY d.queue, d.state HAVING sum(d.n) <> 0
    )
    SELECT c.id, c.name, c.queue, c.payload, c.priority, c.run_at, c.attempt,
        c.max_attempts, c.lease, c.timeout, c.trace_context, NULL::DOUBLE PRECISION,
        NULL::BOOLEAN
    FROM claimed AS c;
    RETURN QUERY SELECT NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::INTEGER,
        v_upcoming, NULL::INTEGER, NULL::INTEGER, NULL::BIGINT, NULL::DOUBLE PRECISION,
        NULL::TEXT, v_next_token, v_held;
END
$f$;
"""

MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE trioforge_jobs (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        queue TEXT NOT NULL,
        payload TEXT NOT NULL,
        priority INTEGER NOT NULL,
        run_at DOUBLE PRECISION NOT NULL,
        max_attempts INTEGER NOT NULL,
        idempotency_key TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        lease BIGINT NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        result TEXT,
        error TEXT,
        progress DOUBLE PRECISION,
        progress_message TEXT,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX trioforge_jobs_claim ON trioforge_jobs (queue, priority DESC, run_at, id)
        WHERE status IN {_PENDING};
    CREATE INDEX trioforge_jobs_upcoming ON trioforge_jobs (queue, run_at)
        WHERE status IN {_PENDING};
    CREATE UNIQUE INDEX trioforge_jobs_idempotency ON trioforge_jobs (idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status NOT IN {_TERMINAL_V1};
    CREATE INDEX trioforge_jobs_leases ON trioforge_jobs (lease_until) WHERE status = 'running';
    """,
    """
    CREATE TABLE trioforge_processes (
        owner TEXT PRIMARY KEY,
        queues TEXT[] NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE trioforge_leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        until DOUBLE PRECISION NOT NULL
    );
    """,
    """
    CREATE TABLE trioforge_cron (
        name TEXT PRIMARY KEY,
        last_tick DOUBLE PRECISION NOT NULL,
        last_job_id BIGINT,
        skipped INTEGER NOT NULL DEFAULT 0
    );
    """,
    """
    CREATE TABLE trioforge_paused_queues (
        name TEXT PRIMARY KEY,
        paused_at DOUBLE PRECISION NOT NULL
    );
    """,
    # Per-enqueue timeouts.
    """
    ALTER TABLE trioforge_jobs ADD COLUMN timeout DOUBLE PRECISION;
    """,
    # The dashboard: pages by state and by name, counts per queue and state, throughput.
    """
    CREATE INDEX trioforge_jobs_status_id ON trioforge_jobs (status, id);
    CREATE INDEX trioforge_jobs_name_id ON trioforge_jobs (name, id);
    CREATE INDEX trioforge_jobs_queue_status ON trioforge_jobs (queue, status);
    CREATE INDEX trioforge_jobs_finished ON trioforge_jobs (finished_at)
        WHERE finished_at IS NOT NULL;
    """,
    # Flow control: required capabilities, rate and concurrency keys; one row per key in
    # trioforge_limits, locked by claims (a rate key's row is its token bucket).
    """
    ALTER TABLE trioforge_jobs ADD COLUMN requires TEXT[];
    ALTER TABLE trioforge_jobs ADD COLUMN rate_key TEXT;
    ALTER TABLE trioforge_jobs ADD COLUMN concurrency_key TEXT;
    CREATE INDEX trioforge_jobs_running_keys ON trioforge_jobs (concurrency_key)
        WHERE status = 'running' AND concurrency_key IS NOT NULL;
    CREATE TABLE trioforge_limits (
        key TEXT PRIMARY KEY,
        tokens DOUBLE PRECISION,
        at DOUBLE PRECISION
    );
    """,
    # What each process says about itself (host, pid, pools, capabilities, running jobs).
    """
    ALTER TABLE trioforge_processes ADD COLUMN details TEXT;
    """,
    # Attempt history: an error is kept when a later write replaces it; it goes with its job.
    """
    CREATE TABLE trioforge_attempts (
        seq BIGSERIAL PRIMARY KEY,
        job_id BIGINT NOT NULL REFERENCES trioforge_jobs (id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        started_at DOUBLE PRECISION,
        error TEXT NOT NULL
    );
    CREATE INDEX trioforge_attempts_job ON trioforge_attempts (job_id);
    CREATE OR REPLACE FUNCTION trioforge_keep_error() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        INSERT INTO trioforge_attempts (job_id, attempt, started_at, error)
        VALUES (OLD.id, OLD.attempt, OLD.started_at, OLD.error);
        RETURN NULL;
    END
    $f$;
    CREATE TRIGGER trioforge_jobs_keep_errors AFTER UPDATE OF error ON trioforge_jobs
    FOR EACH ROW WHEN (OLD.error IS NOT NULL AND NEW.error IS DISTINCT FROM OLD.error)
    EXECUTE FUNCTION trioforge_keep_error();
    """,
    # unique_for: a key's finished jobs, by when they finished.
    """
    CREATE INDEX trioforge_jobs_keys_finished ON trioforge_jobs (idempotency_key, finished_at)
        WHERE idempotency_key IS NOT NULL AND finished_at IS NOT NULL;
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
    CREATE INDEX trioforge_jobs_scheduled ON trioforge_jobs (id) WHERE status = 'scheduled';
    """,
    # Workflows: runs, their records and signals, child jobs and wake-ups; "compensated"
    # joins the terminal states the idempotency index leaves out.
    f"""
    ALTER TABLE trioforge_jobs ADD COLUMN parent_id BIGINT,
        ADD COLUMN workflow BOOLEAN NOT NULL DEFAULT FALSE,
        ADD COLUMN wake_requested BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX trioforge_jobs_parent ON trioforge_jobs (parent_id) WHERE parent_id IS NOT NULL;
    DROP INDEX trioforge_jobs_idempotency;
    CREATE UNIQUE INDEX trioforge_jobs_idempotency ON trioforge_jobs (idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status NOT IN {_TERMINAL};
    CREATE TABLE trioforge_workflow_steps (
        run_id BIGINT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        wake_at DOUBLE PRECISION,
        compensable BOOLEAN NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE trioforge_workflow_signals (
        id BIGSERIAL PRIMARY KEY,
        run_id BIGINT NOT NULL,
        name TEXT NOT NULL,
        payload TEXT NOT NULL,
        sent_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX trioforge_workflow_signals_run ON trioforge_workflow_signals (run_id, id);
    """,
    # Tracing: the enqueuer's trace context (JSON text), read back by every claim.
    """
    ALTER TABLE trioforge_jobs ADD COLUMN trace_context TEXT;
    """,
    # The dashboard's list of workflow runs, newest first: only runs are in it, and none of
    # its columns (id, workflow) ever changes, so updates stay HOT and claims never touch it.
    """
    CREATE INDEX trioforge_jobs_runs ON trioforge_jobs (id) WHERE workflow;
    """,
    # Counts kept as jobs change, so the dashboard and /metrics read a few rows instead of
    # scanning every job: per (queue, state), and per (second finished, queue, state) for
    # throughput. Concurrent claims and outcomes must not queue up behind one counter row,
    # so each write appends its net changes as delta rows (in the same statement where it
    # moves many jobs) and a reader sums them; the maintenance leader folds them into one
    # row per key (FoldCounts). Statement-level triggers reading transition tables did
    # the same for a quarter of the drain rate. Taken with the jobs table locked against
    # writes, then filled from the jobs already there.
    """
    LOCK TABLE trioforge_jobs IN SHARE ROW EXCLUSIVE MODE;
    CREATE TABLE trioforge_counts (
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        n BIGINT NOT NULL
    );
    CREATE TABLE trioforge_finished (
        second BIGINT NOT NULL,
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        n BIGINT NOT NULL
    );
    CREATE INDEX trioforge_finished_second ON trioforge_finished (second);
    INSERT INTO trioforge_counts (queue, state, n)
        SELECT queue, status, count(*) FROM trioforge_jobs GROUP BY queue, status;
    INSERT INTO trioforge_finished (second, queue, state, n)
        SELECT floor(finished_at)::bigint, queue, status, count(*) FROM trioforge_jobs
        WHERE finished_at IS NOT NULL GROUP BY 1, 2, 3;
    """,
    # A flow-controlled claim in one round trip: a server-side function (see _CLAIM_LIMITED);
    # it keeps the counts above.
    _CLAIM_LIMITED_FUNCTION,
    # The job names each process runs (NULL: it did not say), to find jobs nobody runs.
    """
    ALTER TABLE trioforge_processes ADD COLUMN job_names TEXT[];
    """,
)

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


#: One statement: the insert, and one wake-up notice per queue (sent at commit).
_INSERT_MANY = f"""
WITH inserted AS (
    INSERT INTO trioforge_jobs
        (name, queue, payload, priority, run_at, max_attempts, created_at, status, timeout,
         requires, rate_key, concurrency_key, parent_id, workflow, trace_context)
    SELECT name, queue, payload, priority, run_at, max_attempts, $7, status, timeout,
        CASE WHEN requires IS NOT NULL
             THEN ARRAY(SELECT json_array_elements_text(requires::json)) END,
        rate_key, concurrency_key, parent_id, workflow, trace_context
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::int[],
                $8::text[], $10::float8[], $11::text[], $12::text[], $13::text[],
                $14::bigint[], $15::bool[], $16::text[])
        WITH ORDINALITY
        AS t(name, queue, payload, priority, run_at, max_attempts, status, timeout, requires,
             rate_key, concurrency_key, parent_id, workflow, trace_context, ord)
    ORDER BY ord
    RETURNING id, queue, run_at, status, finished_at, NULL AS old_status, NULL::float8 AS old_at
), {_count_moved("inserted")}, notified AS (
    SELECT pg_notify($9, 'w:' || min(run_at)::text || ':' || queue) FROM inserted GROUP BY queue
)
SELECT id FROM inserted WHERE (SELECT count(*) FROM notified) >= 0
"""

_INSERT_KEYED = f"""
INSERT INTO trioforge_jobs
    (name, queue, payload, priority, run_at, max_attempts, idempotency_key, created_at, status,
     timeout, requires, rate_key, concurrency_key, parent_id, workflow, trace_context)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status NOT IN {_TERMINAL} DO NOTHING
RETURNING id
"""


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook: nothing to undo. Storage operations leave no session state
    (LISTEN has its own connection, leases are rows, the migration lock is per
    transaction) and asyncpg still rolls back an open transaction, so the default reset
    query, one more round trip per storage batch, is skipped."""
    del conn


#: Errors that mean the server went away or refused us (restarting, shut down, network),
#: not that an operation was wrong.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection is gone (so is every later op on it). asyncpg's
    interface and internal client errors on a connection we never share ("connection is
    closed"; "cannot switch to state", from the rollback of a transaction whose connection
    broke) are that too, but not interface errors that are also ValueErrors (bad
    arguments)."""
    if isinstance(exc, asyncpg.InternalClientError):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return not isinstance(exc, ValueError)
    return isinstance(exc, _CONNECTION_LOST)


def _bad_value(exc: BaseException) -> bool:
    """Whether ``exc`` refused one of the operation's values (text the server cannot
    encode, a number out of its column's range): trying again fails the same way."""
    if isinstance(exc, asyncpg.DataError | UnicodeError | OverflowError):
        return True
    # The driver's own DataError (an argument it cannot encode) is an InterfaceError that
    # is also a ValueError, as _lost describes.
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


#: The LISTEN/NOTIFY channel. Payloads: ``w:<run_at>:<queue>`` (work enqueued),
#: ``c:<job id>:<schema>`` (cancel requested; see parse_notice) and ``f:<schema>`` (jobs
#: with a concurrency key stopped running: slots freed); delivered at commit.
CHANNEL = "trioforge"

#: The channel of job change notices: payloads are comma-separated job ids (see
#: ``storage._changes``), sent after every batch that changed a job visibly.
CHANGES_CHANNEL = "trioforge_changes"

_NOTIFY_WAKES = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"

_KEY_HOLDER = (
    f"SELECT id FROM trioforge_jobs WHERE idempotency_key = $1 AND status NOT IN {_TERMINAL}"
)

#: One statement: the claimed rows, plus a last row (id NULL) carrying the earliest run_at
#: still in the future (the rows being claimed are due, so the snapshot cannot mislead it).
_CLAIM = f"""
WITH picked AS (
    SELECT id, status FROM trioforge_jobs
    WHERE queue = $1 AND status IN {_PENDING} AND run_at <= $2 AND name = ANY($3::text[])
      AND (requires IS NULL OR requires <@ $7::text[])
      AND NOT EXISTS (SELECT FROM trioforge_paused_queues WHERE name = $1)
    ORDER BY priority DESC, run_at, id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE trioforge_jobs AS j
    SET status = 'running', attempt = j.attempt + 1, lease = j.lease + 1, lease_owner = $5,
        lease_until = $6, started_at = $2, error = NULL, progress = NULL,
        progress_message = NULL
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.name, j.queue, j.payload, j.priority, j.run_at, j.attempt,
        j.max_attempts, j.lease, j.timeout, j.trace_context, j.status,
        picked.status AS old_status
), {_count_moved("claimed", finishing=False)}
SELECT id, name, queue, payload, priority, run_at, attempt, max_attempts, lease, timeout,
    trace_context
FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, min(run_at), NULL, NULL, NULL, NULL, NULL
FROM trioforge_jobs
WHERE queue = $1 AND status IN {_PENDING} AND run_at > $2 AND name = ANY($3::text[])
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


def _bucket(row: asyncpg.Record | None, rate: RateLimit, now: float) -> Bucket:
    """A stored bucket (None: none yet), refilled to ``now``."""
    stored = None if row is None or row["tokens"] is None else Bucket(row["tokens"], row["at"])
    return refill(stored, rate, now)


#: A flow-controlled claim (see _CLAIM_LIMITED_FUNCTION), with the claimed rows named as
#: _CLAIM's.
_CLAIM_LIMITED = """
SELECT o_id AS id, o_name AS name, o_queue AS queue, o_payload AS payload,
    o_priority AS priority, o_run_at AS run_at, o_attempt AS attempt,
    o_max_attempts AS max_attempts, o_lease AS lease, o_timeout AS timeout,
    o_trace_context AS trace_context, o_next_token_at AS next_token_at, o_held AS held
FROM trioforge_claim_limited($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
"""

#: One statement (so it needs no transaction of its own): the outcomes with their change
#: notices (sent at commit, one round trip less between an outcome and its watchers), and
#: the workflow runs whose children just ended woken (due now if waiting, with a NOTIFY to
#: their queue; flagged if running). A run suspending in this same batch is made due here
#: instead: one statement must not update its row twice.
_FINISH = f"""
WITH u AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::float8[], $5::int[],
                         $6::float8[], $7::text[], $8::text[])
        AS u(id, lease, status, run_at, released, finished_at, result, error)
), done AS (
    UPDATE trioforge_jobs AS j
    SET status = u.status, attempt = j.attempt - u.released,
        run_at = CASE
            WHEN u.status = 'scheduled' AND (j.wake_requested OR EXISTS (
                SELECT FROM u AS c JOIN trioforge_jobs AS cj ON cj.id = c.id
                WHERE cj.parent_id = j.id AND c.status IN {_TERMINAL})) THEN $9::float8
            ELSE coalesce(u.run_at, j.run_at) END,
        lease_owner = NULL, lease_until = NULL, finished_at = u.finished_at,
        result = u.result, error = u.error
    FROM u WHERE j.id = u.id AND j.status = 'running' AND j.lease = u.lease
    RETURNING j.id, j.lease, j.parent_id, j.status, j.queue, j.finished_at,
        'running' AS old_status, NULL::float8 AS old_at, j.concurrency_key
), {_count_moved("done")}, freed AS (
    SELECT pg_notify($10, $12) FROM done WHERE concurrency_key IS NOT NULL LIMIT 1
), woken AS (
    UPDATE trioforge_jobs AS p
    SET run_at = CASE WHEN p.status IN {_PENDING} AND p.run_at > $9 THEN $9 ELSE p.run_at END,
        wake_requested = p.wake_requested OR p.status = 'running'
    WHERE p.id IN (SELECT parent_id FROM done WHERE status IN {_TERMINAL})
      AND p.id NOT IN (SELECT id FROM u)
    RETURNING p.queue, p.status
), notified AS (
    SELECT pg_notify($10, 'w:' || ($9::float8)::text || ':' || queue) FROM woken
    WHERE status IN {_PENDING} GROUP BY queue
), changes AS (
    SELECT pg_notify($11, string_agg(id::text, ',')) FROM (
        SELECT id, (row_number() OVER ()) / {IDS_PER_NOTICE} AS chunk FROM done
    ) AS chunks GROUP BY chunk
)
SELECT id, lease FROM done
WHERE (SELECT count(*) FROM notified) + (SELECT count(*) FROM changes)
    + (SELECT count(*) FROM freed) >= 0
"""

#: Wake the workflow runs whose children (ids) just ended, outside a Finish.
_WAKE_PARENTS = f"""
WITH woken AS (
    UPDATE trioforge_jobs AS p
    SET run_at = CASE WHEN p.status IN {_PENDING} AND p.run_at > $1::float8 THEN $1::float8
                      ELSE p.run_at END,
        wake_requested = p.wake_requested OR p.status = 'running'
    WHERE p.id IN (SELECT parent_id FROM trioforge_jobs WHERE id = ANY($2::bigint[]))
    RETURNING p.queue, p.status
)
SELECT pg_notify($3, 'w:' || ($1::float8)::text || ':' || queue) FROM woken
WHERE status IN {_PENDING} GROUP BY queue
"""

_STEP_COLUMNS = (
    "seq, kind, name, status, attempt, result, error, wake_at, compensable, started_at, finished_at"
)

_RENEW = """
UPDATE trioforge_jobs AS j SET lease_until = $3
FROM unnest($1::bigint[], $2::bigint[]) AS u(id, lease)
WHERE j.id = u.id AND j.lease = u.lease AND j.status = 'running' AND j.lease_owner = $4
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
                      WHEN attempt < max_attempts THEN 'retrying' ELSE 'dead' END,
        finished_at = CASE WHEN (cancel_requested AND NOT workflow) OR attempt >= max_attempts
                           THEN $1 END,
        run_at = CASE WHEN NOT (cancel_requested AND NOT workflow) AND attempt < max_attempts
                      THEN $1 ELSE run_at END,
        error = CASE WHEN cancel_requested AND NOT workflow THEN error
                     ELSE 'attempt ' || attempt || ' lost: its worker stopped heartbeating' END,
        lease_owner = NULL, lease_until = NULL
    WHERE status = 'running' AND lease_until <= $1
    RETURNING id, parent_id, status, queue, finished_at, 'running' AS old_status,
        NULL::float8 AS old_at, concurrency_key, name, attempt, max_attempts
), {_count_moved("rescued")}, woken AS (
    UPDATE trioforge_jobs AS p
    SET run_at = CASE WHEN p.status IN {_PENDING} AND p.run_at > $1 THEN $1 ELSE p.run_at END,
        wake_requested = p.wake_requested OR p.status = 'running'
    WHERE p.id IN (SELECT parent_id FROM rescued WHERE status IN {_TERMINAL})
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

#: Batches of at most this many single-statement ops run without an explicit transaction.
_AUTOCOMMIT_MAX = 3


def _atomic_alone(op: ops.Op) -> bool:
    """Whether the op's writes are one statement, so it needs no explicit transaction."""
    if isinstance(op, ops.Enqueue):
        return all(j.idempotency_key is None for j in op.jobs)
    if isinstance(op, ops.Claim) and op.queue_rate is not None:
        return False
    return isinstance(
        op, ops.Claim | ops.Finish | ops.Renew | ops.Progress | ops.Get | ops.GetMany
        | ops.LatestSteps | ops.ListJobs | ops.Rescue | ops.Stats | ops.Throughput
        | ops.ThroughputSeries | ops.FoldCounts | ops.PauseQueue
        | ops.PausedQueues | ops.Beat | ops.Leave | ops.Processes | ops.Lead | ops.WaitingNames
    )  # fmt: skip


def _plain_step(op: ops.Op) -> bool:
    """A record write with nothing else in its transaction (no child, signal or cancel)."""
    return (
        isinstance(op, ops.RecordStep)
        and op.child is None
        and op.consume_signal is None
        and not op.clear_cancel
    )


#: Many runs' plain record writes in one statement, each fenced by its run's lease (the
#: run's row locked against a rescue until the commit, as an update of it would).
_RECORD_STEPS = f"""
WITH u AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::text[], $5::text[],
                         $6::text[], $7::int[], $8::text[], $9::text[], $10::float8[],
                         $11::bool[], $12::float8[], $13::float8[])
        AS u(run_id, lease, {_STEP_COLUMNS})
), fenced AS (
    SELECT u.* FROM u JOIN trioforge_jobs AS j ON j.id = u.run_id
    WHERE j.lease = u.lease AND j.status = 'running'
    FOR SHARE OF j
)
INSERT INTO trioforge_workflow_steps (run_id, {_STEP_COLUMNS})
SELECT run_id, {_STEP_COLUMNS} FROM fenced
ON CONFLICT (run_id, seq) DO UPDATE SET kind = excluded.kind, name = excluded.name,
    status = excluded.status, attempt = excluded.attempt, result = excluded.result,
    error = excluded.error, wake_at = excluded.wake_at, compensable = excluded.compensable,
    started_at = excluded.started_at, finished_at = excluded.finished_at
RETURNING run_id
"""


async def _record_steps(conn: asyncpg.Connection, steps: list[ops.RecordStep]) -> list[StepWrite]:
    rows = [(op.run_id, op.lease, *step_row(op.step)) for op in steps]
    columns = [list(column) for column in zip(*rows, strict=True)]
    written = {r["run_id"] for r in await conn.fetch(_RECORD_STEPS, *columns)}
    return [StepWrite(applied=op.run_id in written) for op in steps]


def _without(
    batch: Sequence[ops.Op], results: Sequence[object], kinds: Any
) -> tuple[list[ops.Op], list[object]]:
    """``batch`` and ``results`` less the operations of types ``kinds``."""
    kept = [(op, r) for op, r in zip(batch, results, strict=True) if not isinstance(op, kinds)]
    return [op for op, _ in kept], [r for _, r in kept]


def parse_notice(payload: str, schema: str | None = None) -> Notice | None:
    """The notice in ``payload``, for a listener on ``schema`` (None: the default tables).

    The channel is shared by every schema of the database. A cancel names its schema
    (``c:<job id>:<schema>``), since job ids repeat across schemas; a wake-up does not, as
    one meant for another schema only costs a claim that finds nothing.
    """
    kind, _, rest = payload.partition(":")
    try:
        if kind == "w":
            run_at, _, queue = rest.partition(":")
            return WakeNotice(queue, float(run_at))
        if kind == "c":
            job_id, _, scope = rest.partition(":")
            return CancelNotice(int(job_id)) if scope == (schema or "") else None
        if kind == "f":
            return SlotsFreedNotice() if rest == (schema or "") else None
    except ValueError:
        pass
    return None  # not ours: ignore


class PostgresBackend:
    """Jobs in PostgreSQL; any number of processes and machines may share it.

    ``schema`` puts the tables in that schema (created if missing) instead of the
    connection's default search path.
    """

    shared = True
    notifies = True

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.schema = schema
        self._pool_size = pool_size
        #: One batch per pooled connection (the listener has a connection of its own).
        self.max_in_flight = pool_size
        #: The NOTIFY channel of job changes (per schema: other schemas' ids mean nothing).
        self.changes_channel = CHANGES_CHANNEL + (f".{schema}" if schema else "")
        self._slots_freed = f"f:{schema or ''}"
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._handlers: dict[
            type, Callable[[asyncpg.Connection, Any, float], Awaitable[object]]
        ] = ops.handlers(self)

    # --- lifecycle (trio side) ---------------------------------------------------------

    async def _aio(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """One crossing into asyncio."""
        return await trio_asyncio.aio_as_trio(fn)(*args)

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[trio.MemoryReceiveChannel[Notice]]:
        """LISTEN on a connection of its own (a pooled one would be UNLISTENed on release).
        The channel ends when that connection drops."""
        send, receive = trio.open_memory_channel[Notice](math.inf)

        def on_notify(conn: object, pid: int, channel: str, payload: str) -> None:
            notice = parse_notice(payload, self.schema)
            if notice is not None:
                with contextlib.suppress(trio.ClosedResourceError):
                    send.send_nowait(notice)

        conn = await self._aio(self._listening, CHANNEL, on_notify, send.close, "listener")
        try:
            yield receive
        finally:
            send.close()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._aio(conn.close)

    @asynccontextmanager
    async def changes(self) -> AsyncIterator[trio.MemoryReceiveChannel[Changed]]:
        """LISTEN for job change notices on a connection of its own; the channel ends
        when that connection drops."""
        send, receive = trio.open_memory_channel[Changed](math.inf)

        def on_notify(conn: object, pid: int, channel: str, payload: str) -> None:
            ids = parse_ids(payload)
            if ids is not None:
                with contextlib.suppress(trio.ClosedResourceError):
                    send.send_nowait(ids)

        conn = await self._aio(
            self._listening, self.changes_channel, on_notify, send.close, "live feed"
        )
        try:
            yield receive
        finally:
            send.close()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._aio(conn.close)

    async def _listening(
        self,
        channel: str,
        on_notify: Callable[..., None],
        on_lost: Callable[[], None],
        role: str,
    ) -> asyncpg.Connection:
        """A connection of its own LISTENing on ``channel`` (a pooled one would be
        UNLISTENed on release); ``on_lost()`` when it drops."""
        settings = {"application_name": f"trioforge {role} {self.schema or ''}".strip()}
        if self.schema:
            settings["search_path"] = self.schema
        try:
            conn = await asyncpg.connect(
                self.url, timeout=self._connect_timeout, server_settings=settings
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailableError(
                f"cannot reach PostgreSQL at {redact(self.url)} to listen: {exc}"
            ) from None
        conn.add_termination_listener(lambda _: on_lost())
        await conn.add_listener(channel, on_notify)
        return conn

    def environment(self) -> AbstractAsyncContextManager[Any]:
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
                # An identifier cannot be a parameter: quote it as PostgreSQL does.
                await conn.execute('CREATE DATABASE "{}"'.format(name.replace('"', '""')))
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
                "DROP FUNCTION IF EXISTS trioforge_claim_limited"
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

    async def _connect(self) -> asyncpg.Pool:
        settings = {"search_path": self.schema} if self.schema else None
        try:
            if self.schema:
                conn = await asyncpg.connect(self.url, timeout=self._connect_timeout)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                finally:
                    await conn.close()
            pool: asyncpg.Pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                server_settings=settings,
                reset=_keep_session,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailableError(
                f"cannot reach PostgreSQL at {redact(self.url)}: {exc or type(exc).__name__}; "
                "check that the server is running and the URL (host, port, user, database)"
            ) from None
        return pool

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        if self._pool is None:
            raise DatabaseUnavailableError(f"PostgreSQL backend for {redact(self.url)} is not open")
        async with self._pool.acquire() as conn:
            return await fn(conn)

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
        async with self._pool.acquire() as conn:
            results = await self._batch(conn, batch, now)
            # Outcomes (also those of orphan releases) were notified by their statement.
            changed = changed_jobs(*_without(batch, results, ops.Finish | ops.ReleaseOrphans))
            if changed:
                # After the commit, one statement for the whole batch. If it fails the
                # connection is gone, and so is the listeners' (they re-read on reconnect).
                with contextlib.suppress(Exception):
                    await conn.execute(
                        _NOTIFY_WAKES, self.changes_channel, list(encode_ids(changed))
                    )
            return results

    async def _batch(
        self, conn: asyncpg.Connection, batch: list[ops.Op], now: float
    ) -> list[object]:
        if len(batch) <= _AUTOCOMMIT_MAX and all(_atomic_alone(op) for op in batch):
            # No BEGIN/COMMIT round trips for what single statements do atomically: for
            # a few ops (a claim and an outcome batch, say) they cost more than the
            # extra commits.
            return await self._each(conn, batch, now, self._autocommit)
        try:
            async with conn.transaction():
                return await self._in_transaction(conn, batch, now)
        except Exception as exc:
            if _lost(exc):  # nothing committed; the connection is gone
                return [exc] * len(batch)
        # Something failed: each op on its own, so neighbours are unaffected.
        return await self._each(conn, batch, now, self._one)

    async def _in_transaction(
        self, conn: asyncpg.Connection, batch: list[ops.Op], now: float
    ) -> list[object]:
        """The batch's ops in order, except that plain workflow steps (each of its own run:
        a run waits for one write before the next) are written by one statement first."""
        plain = [i for i, op in enumerate(batch) if _plain_step(op)]
        results: list[object] = [None] * len(batch)
        if len(plain) > 1:
            steps = [batch[i] for i in plain]
            for i, written in zip(plain, await _record_steps(conn, steps), strict=True):  # type: ignore[arg-type]
                results[i] = written
        else:
            plain = []
        done = set(plain)
        for i, op in enumerate(batch):
            if i not in done:
                results[i] = await self._handlers[type(op)](conn, op, now)
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

    async def _autocommit(self, conn: asyncpg.Connection, op: ops.Op, now: float) -> object:
        try:
            return await self._handlers[type(op)](conn, op, now)
        except Exception as exc:
            if _lost(exc):
                raise
            return exc

    async def _one(self, conn: asyncpg.Connection, op: ops.Op, now: float) -> object:
        try:
            async with conn.transaction():
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
                [j.trace_context for j in op.jobs],
            )  # fmt: skip
            return [Enqueued(job_id, created=True) for job_id in sorted(r["id"] for r in rows)]
        earliest: dict[str, float] = {}
        for j in op.jobs:
            earliest[j.queue] = min(j.run_at, earliest.get(j.queue, j.run_at))
        await conn.execute(
            _NOTIFY_WAKES, CHANNEL, [f"w:{at!r}:{queue}" for queue, at in earliest.items()]
        )
        out, inserted = [], Tally()
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
                j.parent_id, j.workflow, j.trace_context,
            )  # fmt: skip
            if job_id is not None:
                out.append(Enqueued(job_id, created=True))
                inserted.add(j.queue, state, None)
                continue
            existing = await conn.fetchval(
                _KEY_HOLDER,
                j.idempotency_key,
            )
            out.append(Enqueued(existing, created=False))
        await _store(conn, inserted)
        return out

    @staticmethod
    async def _claim(conn: asyncpg.Connection, op: ops.Claim, now: float) -> ClaimResult:
        if op.queue_rate is not None:
            return await PostgresBackend._claim_queue_limited(conn, op, op.queue_rate, now)
        if op.limits:
            return await PostgresBackend._claim_limited(conn, op, now)
        rows = await conn.fetch(
            _CLAIM, op.queue, now, sorted(op.names), max(op.limit, 0), op.owner, op.lease_until,
            sorted(op.capabilities),
        )  # fmt: skip
        jobs = sorted(
            (ClaimedJob(*row) for row in rows if row["id"] is not None),
            key=lambda j: claim_key(j.priority, j.run_at, j.id),
        )
        upcoming = next(row["run_at"] for row in rows if row["id"] is None)
        return ClaimResult(tuple(jobs), upcoming)

    @staticmethod
    async def _claim_limited(conn: asyncpg.Connection, op: ops.Claim, now: float) -> ClaimResult:
        """One statement: the server walks due jobs as FlowGate would and claims what it
        admits."""
        names = sorted(op.limits)
        rates = [op.limits[n].rate for n in names]
        concurrency = [op.limits[n].concurrency for n in names]
        ending = sorted(op.ending)
        rows = await conn.fetch(
            _CLAIM_LIMITED, op.queue, now, sorted(op.names), sorted(op.capabilities),
            max(op.limit, 0), op.owner, op.lease_until, FLOW_WINDOW, TOKEN_EPSILON, names,
            [None if r is None else r.per_second for r in rates],
            [None if r is None else float(r.burst) for r in rates],
            [None if c is None else c.limit for c in concurrency],
            [job_id for job_id, _ in ending], [lease for _, lease in ending],
        )  # fmt: skip
        jobs = sorted(
            (ClaimedJob(*row[:11]) for row in rows if row["id"] is not None),
            key=lambda j: claim_key(j.priority, j.run_at, j.id),
        )
        last = rows[-1]
        return ClaimResult(tuple(jobs), last["run_at"], last["next_token_at"], last["held"])

    @staticmethod
    async def _claim_queue_limited(
        conn: asyncpg.Connection, op: ops.Claim, rate: RateLimit, now: float
    ) -> ClaimResult:
        """In the batch's transaction, under the queue bucket's lock (the one the claim
        function takes for a rate key): the claim capped at the bucket's whole tokens, then
        a token taken for each job claimed (the function has taken those of jobs whose own
        bucket it is)."""
        key = f"r:{rate.name}"
        await conn.execute(_LOCK_LIMIT_KEY, key)
        before = _bucket(await conn.fetchrow(_READ_BUCKET, key), rate, now)
        whole = int(before.tokens + TOKEN_EPSILON * rate.per_second)
        capped = attrs.evolve(op, limit=min(op.limit, whole), queue_rate=None)
        result = await PostgresBackend._claim(conn, capped, now)
        ids = [j.id for j in result.jobs]
        shared = any(
            lim.rate is not None and lim.rate.name == rate.name for lim in op.limits.values()
        )
        own = await conn.fetchval(_SHARING_BUCKET, ids, rate.name) if ids and shared else 0
        after = _bucket(await conn.fetchrow(_READ_BUCKET, key), rate, now)
        left = Bucket(max(0.0, after.tokens - (len(ids) - own)), after.at)
        await conn.execute(_STORE_BUCKET, key, left.tokens, left.at)
        next_at = result.next_token_at
        if capped.limit < op.limit and len(ids) == capped.limit:  # the queue held jobs back
            at = max(next_token_at(left, rate), now + TOKEN_EPSILON)
            next_at = at if next_at is None else min(next_at, at)
        return attrs.evolve(result, next_token_at=next_at)

    async def _release_orphans(
        self, conn: asyncpg.Connection, op: ops.ReleaseOrphans, now: float
    ) -> list[int]:
        rows = await conn.fetch(
            "SELECT id, lease FROM trioforge_jobs WHERE queue = $1 AND status = 'running' "
            "AND lease_owner = $2",
            op.queue, op.owner,
        )  # fmt: skip
        held = set(op.held)
        orphans = tuple(
            Outcome(r["id"], r["lease"], Released())
            for r in rows
            if (r["id"], r["lease"]) not in held
        )
        applied = await self._finish(conn, ops.Finish(orphans), now) if orphans else []
        return sorted(o.job_id for o, ok in zip(orphans, applied, strict=True) if ok)

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

    @staticmethod
    async def _renew(conn: asyncpg.Connection, op: ops.Renew, now: float) -> RenewResult:
        del now
        rows = await conn.fetch(
            _RENEW, [j for j, _ in op.leases], [lease for _, lease in op.leases],
            op.lease_until, op.owner,
        )  # fmt: skip
        held = {(r["id"], r["lease"]): r["cancel_requested"] for r in rows}
        return RenewResult(
            cancel_requested=frozenset(j for (j, _), flag in held.items() if flag),
            lost=frozenset(pair for pair in op.leases if pair not in held),
        )

    @staticmethod
    async def _progress(conn: asyncpg.Connection, op: ops.Progress, now: float) -> bool:
        del now
        status = await conn.execute(
            "UPDATE trioforge_jobs SET progress = $1, progress_message = $2 "
            "WHERE id = $3 AND lease = $4 AND status = 'running'",
            op.pct, op.message, op.job_id, op.lease,
        )  # fmt: skip
        return bool(status == "UPDATE 1")

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
            f"SELECT id FROM trioforge_jobs WHERE parent_id = $1 AND status NOT IN {_TERMINAL} "
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
                raise InvalidStateError(
                    f"job {op.job_id} cannot be retried: job {holder} holds its "
                    f"idempotency key {key!r}; wait for that job or cancel it"
                )
        await conn.execute(
            "UPDATE trioforge_jobs SET status = 'available', attempt = 0, run_at = $1, "
            "finished_at = NULL, error = NULL, result = NULL, cancel_requested = FALSE "
            "WHERE id = $2",
            now, op.job_id,
        )  # fmt: skip
        old = (row["status"], row["finished_at"])
        await _store(conn, Tally().move(row["queue"], old, ("available", None)))
        return True

    async def _discard(self, conn: asyncpg.Connection, op: ops.Discard, now: float) -> bool:
        row = await self._locked(conn, op.job_id)
        status = await conn.execute(
            f"UPDATE trioforge_jobs SET status = 'dead', finished_at = $1, error = $2 "
            f"WHERE id = $3 AND status IN {_PENDING}",
            now, op.reason, op.job_id,
        )  # fmt: skip
        if status == "UPDATE 1":
            await _store(conn, Tally().move(row["queue"], (row["status"], None), ("dead", now)))
            await conn.execute(_WAKE_PARENTS, now, [op.job_id], CHANNEL)
        return bool(status == "UPDATE 1")

    async def _rescue(
        self, conn: asyncpg.Connection, op: ops.Rescue, now: float
    ) -> list[RescuedJob]:
        rows = await conn.fetch(_RESCUE, now, op.stale_before, CHANNEL, self._slots_freed)
        return sorted(
            (RescuedJob(r["id"], r["name"], r["queue"], r["attempt"], r["max_attempts"],
                        JobState(r["status"])) for r in rows),
            key=lambda r: r.id,
        )  # fmt: skip

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
    async def _fold_counts(conn: asyncpg.Connection, op: ops.FoldCounts, now: float) -> None:
        del op, now
        await conn.execute(_FOLD_COUNTS)

    @staticmethod
    async def _pause_queue(conn: asyncpg.Connection, op: ops.PauseQueue, now: float) -> bool:
        if op.paused:
            status = await conn.execute(
                "INSERT INTO trioforge_paused_queues (name, paused_at) VALUES ($1, $2) "
                "ON CONFLICT (name) DO NOTHING",
                op.queue, now,
            )  # fmt: skip
            return bool(status == "INSERT 0 1")
        # Sleeping fetchers of other processes claim at once rather than at their next poll.
        resumed = await conn.fetch(_RESUME, op.queue, CHANNEL, f"w:{now!r}:{op.queue}")
        return bool(resumed)

    @staticmethod
    async def _paused_queues(
        conn: asyncpg.Connection, op: ops.PausedQueues, now: float
    ) -> frozenset[str]:
        del op, now
        rows = await conn.fetch("SELECT name FROM trioforge_paused_queues")
        return frozenset(row["name"] for row in rows)

    @staticmethod
    async def _beat(conn: asyncpg.Connection, op: ops.Beat, now: float) -> None:
        await conn.execute(
            "INSERT INTO trioforge_processes "
            "(owner, queues, started_at, heartbeat_at, details, job_names) "
            "VALUES ($1, $2, $3, $3, $4, $5) ON CONFLICT (owner) DO UPDATE SET "
            "queues = excluded.queues, heartbeat_at = excluded.heartbeat_at, "
            "details = excluded.details, job_names = excluded.job_names",
            op.owner, list(op.queues), now,
            None if op.details is None else op.details.to_json(),
            None if op.names is None else list(op.names),
        )  # fmt: skip

    @staticmethod
    async def _leave(conn: asyncpg.Connection, op: ops.Leave, now: float) -> None:
        del now
        await conn.execute(
            "WITH gone AS (DELETE FROM trioforge_leases WHERE owner = $1) "
            "DELETE FROM trioforge_processes WHERE owner = $1",
            op.owner,
        )

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
            f"SELECT DISTINCT queue, name FROM trioforge_jobs WHERE status IN {_PENDING} "
            "AND ($1::text[] IS NULL OR queue = ANY($1::text[]))",
            None if op.queues is None else list(op.queues),
        )
        return names_by_queue((r["queue"], r["name"]) for r in rows)

    @staticmethod
    async def _lead(conn: asyncpg.Connection, op: ops.Lead, now: float) -> bool:
        holder = await conn.fetchval(
            "INSERT INTO trioforge_leases (name, owner, until) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until "
            "WHERE trioforge_leases.until <= $4 OR trioforge_leases.owner = excluded.owner "
            "RETURNING owner",
            op.name, op.owner, op.until, now,
        )  # fmt: skip
        return holder is not None

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
            f"SELECT 1 FROM trioforge_jobs WHERE id = $1 AND status NOT IN {_TERMINAL}", last_job
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

    @staticmethod
    async def _cron_states(
        conn: asyncpg.Connection, op: ops.CronStates, now: float
    ) -> dict[str, CronState]:
        del op, now
        rows = await conn.fetch("SELECT name, last_tick, last_job_id, skipped FROM trioforge_cron")
        return {r[0]: CronState(r[0], r[1], r[2], r[3]) for r in rows}

    @staticmethod
    async def _purge(conn: asyncpg.Connection, op: ops.Purge, now: float) -> list[int]:
        del now
        rows = await conn.fetch(
            "DELETE FROM trioforge_jobs WHERE id IN ("
            " SELECT id FROM trioforge_jobs WHERE status = ANY($1::text[])"
            " AND finished_at IS NOT NULL AND finished_at < $2"
            " AND (CASE WHEN $3::text IS NOT NULL THEN queue = $3"
            "  ELSE queue <> ALL($4::text[]) END)"
            " ORDER BY finished_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, queue, status, finished_at",
            [JobState(s).value for s in op.statuses], op.before, op.queue, list(op.exclude),
            max(op.limit, 0),
        )  # fmt: skip
        places = Counter((r["queue"], r["status"], r["finished_at"]) for r in rows)
        await _store(conn, Tally({place: -n for place, n in places.items()}))
        gone = [r["id"] for r in rows]  # a purged run's record goes with it
        if gone:
            for table in ("trioforge_workflow_steps", "trioforge_workflow_signals"):
                await conn.execute(f"DELETE FROM {table} WHERE run_id = ANY($1::bigint[])", gone)
        return sorted(gone)

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

    async def _retry_many(
        self, conn: asyncpg.Connection, op: ops.RetryMany, now: float
    ) -> ops.BulkResult:
        seen = await self._matching(conn, op.where, [op.status.value])
        done = []
        for job_id in seen:
            try:
                if await self._retry_job(conn, ops.RetryJob(job_id), now):
                    done.append(job_id)
            except InvalidStateError:
                continue  # its idempotency key is another unfinished job's (nothing written)
        return ops.BulkResult(tuple(done), seen[-1] if len(seen) >= op.where.limit else None)

    async def _discard_many(
        self, conn: asyncpg.Connection, op: ops.DiscardMany, now: float
    ) -> ops.BulkResult:
        statuses = ["scheduled", "available", "retrying"] if op.status is None else [op.status]
        seen = await self._matching(conn, op.where, [JobState(s).value for s in statuses])
        done = [j for j in seen if await self._discard(conn, ops.Discard(j, op.reason), now)]
        return ops.BulkResult(tuple(done), seen[-1] if len(seen) >= op.where.limit else None)

    # --- workflows ---------------------------------------------------------------------

    @staticmethod
    async def _record_of(conn: asyncpg.Connection, run_id: int) -> WorkflowRecord | None:
        row = await conn.fetchrow(
            "SELECT created_at, cancel_requested, workflow FROM trioforge_jobs WHERE id = $1",
            run_id,
        )
        if row is None:
            return None
        steps = await conn.fetch(
            f"SELECT {_STEP_COLUMNS} FROM trioforge_workflow_steps WHERE run_id = $1 ORDER BY seq",
            run_id,
        )
        signals = await conn.fetch(
            "SELECT id, name, payload, sent_at FROM trioforge_workflow_signals "
            "WHERE run_id = $1 ORDER BY id",
            run_id,
        )
        children = await conn.fetch(
            "SELECT id, name, status, result, error FROM trioforge_jobs WHERE parent_id = $1 "
            "ORDER BY id",
            run_id,
        )
        return WorkflowRecord(
            run_id=run_id,
            created_at=row["created_at"],
            cancel_requested=row["cancel_requested"],
            steps=tuple(step_record(tuple(s)) for s in steps),
            signals=tuple(SignalRecord(*s) for s in signals),
            children=tuple(
                ChildRecord(c["id"], c["name"], JobState(c["status"]), c["result"], c["error"])
                for c in children
            ),
            workflow=row["workflow"],
        )

    async def _load_workflow(
        self, conn: asyncpg.Connection, op: ops.LoadWorkflow, now: float
    ) -> WorkflowRecord | None:
        del now
        status = await conn.execute(
            "UPDATE trioforge_jobs SET wake_requested = FALSE "
            "WHERE id = $1 AND lease = $2 AND status = 'running'",
            op.run_id, op.lease,
        )  # fmt: skip
        return await self._record_of(conn, op.run_id) if status == "UPDATE 1" else None

    async def _read_workflow(
        self, conn: asyncpg.Connection, op: ops.ReadWorkflow, now: float
    ) -> WorkflowRecord | None:
        del now
        return await self._record_of(conn, op.run_id)

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

    async def _record_step(
        self, conn: asyncpg.Connection, op: ops.RecordStep, now: float
    ) -> StepWrite:
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
            f"run_at = CASE WHEN status IN {_PENDING} AND run_at > $1 THEN $1 ELSE run_at END, "
            f"wake_requested = wake_requested OR status = 'running' "
            f"WHERE id = $2 RETURNING queue",
            now, op.run_id,
        )  # fmt: skip
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"w:{now!r}:{queue}")
        return signal_id

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

    @classmethod
    async def enqueue_in(
        cls, conn: asyncpg.Connection, op: ops.Enqueue, now: float
    ) -> list[Enqueued]:
        """Store ``op``'s jobs with the caller's connection, in whatever transaction it is
        in: a rollback leaves no job, and the wake-up notice is sent at commit."""
        return await cls._enqueue(conn, op, now)
