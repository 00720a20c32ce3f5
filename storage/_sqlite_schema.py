"""SQLite schema: the migrations, in order (a database's version is how many it ran), and
how a migration splits into statements. Applied migrations are never edited: their text
is built from constants only, the same at every import."""

from __future__ import annotations

import sqlite3

from trioforge.storage._sql_states import PENDING, TERMINAL, TERMINAL_V1


def _second(at: str) -> str:
    """SQL for the whole second an epoch time falls in (its floor; CAST truncates)."""
    return f"(CAST({at} AS INTEGER) - ({at} < CAST({at} AS INTEGER)))"


MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE trioforge_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        queue TEXT NOT NULL,
        payload TEXT NOT NULL,
        priority INTEGER NOT NULL,
        run_at REAL NOT NULL,
        max_attempts INTEGER NOT NULL,
        idempotency_key TEXT,
        created_at REAL NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        lease INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until REAL,
        started_at REAL,
        finished_at REAL,
        result TEXT,
        error TEXT,
        progress REAL,
        progress_message TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX trioforge_jobs_claim ON trioforge_jobs (queue, priority DESC, run_at, id)
        WHERE status IN {PENDING};
    CREATE INDEX trioforge_jobs_upcoming ON trioforge_jobs (queue, run_at)
        WHERE status IN {PENDING};
    CREATE UNIQUE INDEX trioforge_jobs_idempotency ON trioforge_jobs (idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status NOT IN {TERMINAL_V1};
    CREATE INDEX trioforge_jobs_leases ON trioforge_jobs (lease_until) WHERE status = 'running'
    """,
    """
    CREATE TABLE trioforge_processes (
        owner TEXT PRIMARY KEY,
        queues TEXT NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    CREATE TABLE trioforge_leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        until REAL NOT NULL
    )
    """,
    """
    CREATE TABLE trioforge_cron (
        name TEXT PRIMARY KEY,
        last_tick REAL NOT NULL,
        last_job_id INTEGER,
        skipped INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE trioforge_paused_queues (
        name TEXT PRIMARY KEY,
        paused_at REAL NOT NULL
    )
    """,
    # Per-enqueue timeouts.
    """
    ALTER TABLE trioforge_jobs ADD COLUMN timeout REAL
    """,
    # The dashboard: pages by state and by name, counts per queue and state, throughput.
    """
    CREATE INDEX trioforge_jobs_status_id ON trioforge_jobs (status, id);
    CREATE INDEX trioforge_jobs_name_id ON trioforge_jobs (name, id);
    CREATE INDEX trioforge_jobs_queue_status ON trioforge_jobs (queue, status);
    CREATE INDEX trioforge_jobs_finished ON trioforge_jobs (finished_at)
        WHERE finished_at IS NOT NULL
    """,
    # Flow control: required capabilities (a JSON array), rate and concurrency keys, and
    # the token buckets.
    """
    ALTER TABLE trioforge_jobs ADD COLUMN requires TEXT;
    ALTER TABLE trioforge_jobs ADD COLUMN rate_key TEXT;
    ALTER TABLE trioforge_jobs ADD COLUMN concurrency_key TEXT;
    CREATE INDEX trioforge_jobs_running_keys ON trioforge_jobs (concurrency_key)
        WHERE status = 'running' AND concurrency_key IS NOT NULL;
    CREATE TABLE trioforge_limits (
        key TEXT PRIMARY KEY,
        tokens REAL,
        at REAL
    )
    """,
    # What each process says about itself (host, pid, pools, capabilities, running jobs).
    """
    ALTER TABLE trioforge_processes ADD COLUMN details TEXT
    """,
    # Attempt history: an error is kept when a later write replaces it; it goes with its job.
    """
    CREATE TABLE trioforge_attempts (
        job_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        started_at REAL,
        error TEXT NOT NULL
    );
    CREATE INDEX trioforge_attempts_job ON trioforge_attempts (job_id);
    CREATE TRIGGER trioforge_jobs_keep_errors AFTER UPDATE OF error ON trioforge_jobs
    WHEN OLD.error IS NOT NULL AND NEW.error IS NOT OLD.error
    BEGIN
        INSERT INTO trioforge_attempts (job_id, attempt, started_at, error)
        VALUES (OLD.id, OLD.attempt, OLD.started_at, OLD.error);
    END;
    CREATE TRIGGER trioforge_jobs_forget_errors AFTER DELETE ON trioforge_jobs
    BEGIN
        DELETE FROM trioforge_attempts WHERE job_id = OLD.id;
    END
    """,
    # unique_for: a key's finished jobs, by when they finished.
    """
    CREATE INDEX trioforge_jobs_keys_finished ON trioforge_jobs (idempotency_key, finished_at)
        WHERE idempotency_key IS NOT NULL AND finished_at IS NOT NULL
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
    CREATE INDEX trioforge_jobs_scheduled ON trioforge_jobs (id) WHERE status = 'scheduled'
    """,
    # Workflows: runs, their records and signals, child jobs and wake-ups; "compensated"
    # joins the terminal states the idempotency index leaves out.
    f"""
    ALTER TABLE trioforge_jobs ADD COLUMN parent_id INTEGER;
    ALTER TABLE trioforge_jobs ADD COLUMN workflow INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE trioforge_jobs ADD COLUMN wake_requested INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX trioforge_jobs_parent ON trioforge_jobs (parent_id) WHERE parent_id IS NOT NULL;
    DROP INDEX trioforge_jobs_idempotency;
    CREATE UNIQUE INDEX trioforge_jobs_idempotency ON trioforge_jobs (idempotency_key)
        WHERE idempotency_key IS NOT NULL AND status NOT IN {TERMINAL};
    CREATE TABLE trioforge_workflow_steps (
        run_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        wake_at REAL,
        compensable INTEGER NOT NULL,
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE trioforge_workflow_signals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        payload TEXT NOT NULL,
        sent_at REAL NOT NULL
    );
    CREATE INDEX trioforge_workflow_signals_run ON trioforge_workflow_signals (run_id, id)
    """,
    # Tracing: the enqueuer's trace context (JSON text), read back by every claim.
    """
    ALTER TABLE trioforge_jobs ADD COLUMN trace_context TEXT
    """,
    # The dashboard's list of workflow runs, newest first: only runs are in it, and none of
    # its columns (id, workflow) ever changes, so claims and outcomes never rewrite it.
    """
    CREATE INDEX trioforge_jobs_runs ON trioforge_jobs (id) WHERE workflow = 1
    """,
    # Counts kept as jobs change, so the dashboard and /metrics read a few rows instead of
    # scanning every job: per (queue, state), and per (second finished, queue, state) for
    # throughput; filled here from the jobs already stored. Each write of jobs adds its net
    # changes in its own transaction (storage._counts: one statement per operation, not
    # per job): row triggers doing the same cost a claim and an outcome about 10
    # microseconds per job, a fifth of the drain rate.
    f"""
    CREATE TABLE trioforge_counts (
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (queue, state)
    ) WITHOUT ROWID;
    CREATE TABLE trioforge_finished (
        second INTEGER NOT NULL,
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (second, queue, state)
    ) WITHOUT ROWID;
    INSERT INTO trioforge_counts (queue, state, n)
        SELECT queue, status, count(*) FROM trioforge_jobs GROUP BY queue, status;
    INSERT INTO trioforge_finished (second, queue, state, n)
        SELECT {_second("finished_at")}, queue, status, count(*) FROM trioforge_jobs
        WHERE finished_at IS NOT NULL GROUP BY 1, 2, 3
    """,
    # The job names each process runs (a JSON array; NULL: it did not say), to find jobs
    # that nobody runs.
    """
    ALTER TABLE trioforge_processes ADD COLUMN job_names TEXT
    """,
    # A job's own retention (enqueue's or its declaration's ``retain``): a JSON object of
    # seconds per final state, null to keep it; NULL: its queue's. The sweeper finds
    # expired ones by when they expire, through an index that holds only such jobs once
    # finished.
    """
    ALTER TABLE trioforge_jobs ADD COLUMN retain TEXT;
    CREATE INDEX trioforge_jobs_retained
        ON trioforge_jobs (finished_at + json_extract(retain, '$.' || status))
        WHERE retain IS NOT NULL AND finished_at IS NOT NULL
    """,
    # Retention's purge: a state's finished jobs by when they finished, so each batch reads
    # its own rows rather than scanning the table and sorting. Only a finished job has an
    # entry (one insert, at its outcome); claims never touch it.
    """
    CREATE INDEX trioforge_jobs_finished_by_state ON trioforge_jobs (status, finished_at, id)
        WHERE finished_at IS NOT NULL
    """,
    # The running jobs whose cancel was asked for, read by every process's listener each
    # time the file changes (storage._sqlite_watch): without it that read visits every
    # running job. Usually empty; a job enters it at its cancel and leaves at its outcome.
    """
    CREATE INDEX trioforge_jobs_cancel_asked ON trioforge_jobs (id)
        WHERE status = 'running' AND cancel_requested
    """,
    # What other processes must hear of that adds no job (a new id is seen by itself): a
    # queue's jobs made due (a workflow run woken, a job retried, a queue resumed, a
    # relay's WakeAll) as kind 'w', and concurrency slots freed as kind 'f' (queue '').
    # One row per kind and queue, its count raised by each write: every process's listener
    # reads the sum when the file changes (storage._sqlite_watch), the rows when it moved.
    """
    CREATE TABLE trioforge_wakes (
        kind TEXT NOT NULL,
        queue TEXT NOT NULL,
        run_at REAL NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (kind, queue)
    ) WITHOUT ROWID
    """,
)

_TABLES = (
    "trioforge_jobs", "trioforge_processes", "trioforge_leases", "trioforge_cron",
    "trioforge_paused_queues", "trioforge_limits", "trioforge_attempts",
    "trioforge_workflow_steps", "trioforge_workflow_signals", "trioforge_counts",
    "trioforge_finished", "trioforge_wakes", "trioforge_schema",
)  # fmt: skip


def _statements(script: str) -> list[str]:
    """A migration's statements (a trigger's body holds semicolons of its own)."""
    out, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending)
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending)
    return out
