"""PostgreSQL schema: the migrations, in order (a database's version is how many it ran),
and the PL/pgSQL claim function one of them creates. Applied migrations are never edited:
their text is built from constants only, the same at every import."""

from __future__ import annotations

from trioforge.storage._sql_states import PENDING, TERMINAL, TERMINAL_V1

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
#: and whether a job was held back. Migration 16's text, kept as applied; migration 20
#: replaces the function with _CLAIM_LIMITED_FUNCTION_DUE.
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
        WHERE t.queue = p_queue AND t.status IN {PENDING} AND t.run_at > p_now
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
            WHERE t.queue = p_queue AND t.status IN {PENDING} AND t.run_at <= p_now
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


def _replaced(text: str, *changes: tuple[str, str]) -> str:
    """``text`` with each (old, new) change made, where ``old`` occurs exactly once."""
    for old, new in changes:
        if text.count(old) != 1:
            raise AssertionError(f"{old!r} occurs {text.count(old)} times, not once")
        text = text.replace(old, new)
    return text


#: The flow-controlled claim as it is now: each chunk asks for no more jobs than are due
#: (counted back from now, as the plain claim counts them, see _CLAIM). The claim index
#: orders by priority first, so a chunk asking for more than are due walked every future
#: row of the queue (a million delayed jobs: thousands of buffers a claim).
_CLAIM_LIMITED_FUNCTION_DUE = _replaced(
    _CLAIM_LIMITED_FUNCTION,
    ("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"),
    ("    v_first BOOLEAN := TRUE;\n", "    v_first BOOLEAN := TRUE;\n    v_take INTEGER;\n"),
    (
        "        WITH c AS (\n",
        f"""        SELECT count(*) INTO v_take FROM (
            SELECT FROM trioforge_jobs AS t
            WHERE t.queue = p_queue AND t.status IN {PENDING} AND t.run_at <= p_now
              AND t.name = ANY(p_names) AND (t.requires IS NULL OR t.requires <@ p_caps)
              AND t.id <> ALL(v_seen)
            ORDER BY t.run_at DESC LIMIT least(v_chunk, p_window - cardinality(v_seen))
        ) AS due;
        EXIT WHEN v_take = 0;
        WITH c AS (
""",
    ),
    (
        "            LIMIT least(v_chunk, p_window - cardinality(v_seen))\n",
        "            LIMIT v_take\n",
    ),
)

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
        WHERE status IN {PENDING};
    CREATE INDEX trioforge_jobs_upcoming ON trioforge_jobs (queue, run_at)
        WHERE status IN {PENDING};
    CREATE UNIQUE INDEX trioforge_jobs_idempotency ON trioforge_jobs (idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status NOT IN {TERMINAL_V1};
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
        WHERE idempotency_key IS NOT NULL AND status NOT IN {TERMINAL};
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
    # A job's own retention (enqueue's or its declaration's ``retain``): seconds per final
    # state, null to keep it; NULL: its queue's. The sweeper finds expired ones by when they
    # expire, through an index that holds only such jobs once finished, and skips jobs
    # kept forever (their expression is NULL).
    """
    ALTER TABLE trioforge_jobs ADD COLUMN retain JSONB;
    CREATE INDEX trioforge_jobs_retained
        ON trioforge_jobs ((finished_at + (retain ->> status)::float8))
        WHERE retain IS NOT NULL AND finished_at IS NOT NULL;
    """,
    # Retention's purge: a state's finished jobs by when they finished, so each batch reads
    # its own rows rather than scanning the table and sorting (two seconds a batch at a
    # million finished jobs). Only a finished job has an entry (one insert, at its
    # outcome); claims never touch it. IF NOT EXISTS: on a big table an operator may build
    # it first with CREATE INDEX CONCURRENTLY, which blocks no writes (docs/deploy.md).
    """
    CREATE INDEX IF NOT EXISTS trioforge_jobs_finished_by_state
        ON trioforge_jobs (status, finished_at, id) WHERE finished_at IS NOT NULL;
    """,
    # A flow-controlled claim no longer walks the queue's future rows (see the function).
    _CLAIM_LIMITED_FUNCTION_DUE,
    # Where an enqueue may address its wake-up to one process alone, and until when
    # (ProcessDetails.wake_channel; NULL: nowhere, as for an older trioforge), and the pick
    # of that process. A function, not a subquery of the enqueue: with one, PostgreSQL kept
    # planning the enqueue anew each time (half a millisecond of its CPU per enqueue).
    """
    ALTER TABLE trioforge_processes ADD COLUMN wake_channel TEXT,
        ADD COLUMN wake_until DOUBLE PRECISION;
    CREATE FUNCTION trioforge_addressee(p_queue TEXT, p_names TEXT[], p_now DOUBLE PRECISION)
    RETURNS TEXT LANGUAGE plpgsql VOLATILE AS $f$
    BEGIN
        RETURN (SELECT wake_channel FROM trioforge_processes
                WHERE wake_until > p_now AND p_queue = ANY (queues) AND job_names @> p_names
                ORDER BY random() LIMIT 1);
    END
    $f$;
    """,
)
