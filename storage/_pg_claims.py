"""PostgreSQL handlers of claims (plain, flow-controlled, under a queue's own rate), lease
renewals and progress, and of the maintenance writes (processes, leadership, queues,
purge and delete, count folding): each one statement or a few, with no other handler's help."""

from __future__ import annotations

from collections import Counter

import attrs

from trioforge._core.errors import InvalidStateError, JobNotFoundError
from trioforge._core.extras import needs_extra
from trioforge._core.flow import (
    FLOW_WINDOW,
    TOKEN_EPSILON,
    Bucket,
    RateLimit,
    drain,
    next_token_at,
    take_token,
)
from trioforge._core.states import TERMINAL_STATES, JobState, claim_key
from trioforge.storage import _ops as ops
from trioforge.storage._counts import Tally
from trioforge.storage._pg_sql import (
    _CLAIM,
    _CLAIM_LIMITED,
    _FOLD_COUNTS,
    _LOCK_LIMIT_KEY,
    _NOTIFY_WAKES,
    _READ_BUCKET,
    _RENEW,
    _RESUME,
    _SHARING_BUCKET,
    _STORE_BUCKET,
    CHANNEL,
    _bucket,
    _store,
    _stored,
)
from trioforge.storage._records import ClaimedJob, ClaimResult, RenewResult, not_finished

with needs_extra("postgres", "PostgreSQL"):
    import asyncpg


#: Retention's batch: each state's oldest finished jobs through its own range of the
#: trioforge_jobs_finished_by_state index (a list of states would make the planner read every
#: match and sort), then the oldest of those, deleted by primary key.
_PURGE = """
DELETE FROM trioforge_jobs WHERE id = ANY(ARRAY(
    SELECT p.id FROM unnest($1::text[]) AS s(state), LATERAL (
        SELECT id, finished_at FROM trioforge_jobs WHERE status = s.state
        AND finished_at IS NOT NULL AND finished_at < $2
        AND (CASE WHEN $3::text IS NOT NULL THEN queue = $3 ELSE queue <> ALL($4::text[]) END)
        AND (NOT $6 OR retain IS NULL)
        ORDER BY finished_at, id LIMIT $5 FOR UPDATE SKIP LOCKED
    ) AS p
    ORDER BY p.finished_at, p.id LIMIT $5
)) RETURNING id, queue, status, finished_at
"""


class PostgresClaims:
    """The claim and maintenance handlers of
    :class:`~trioforge.storage.postgres.PostgresBackend`."""

    #: Where claims send their change notice (the claimed ids).
    changes_channel: str

    async def _claim(self, conn: asyncpg.Connection, op: ops.Claim, now: float) -> ClaimResult:
        if op.queue_rate is not None:
            return await self._claim_queue_limited(conn, op, op.queue_rate, now)
        if op.limits:
            return await self._claim_limited(conn, op, now)
        rows = await conn.fetch(
            _CLAIM, op.queue, now, sorted(op.names), max(op.limit, 0), op.owner, op.lease_until,
            sorted(op.capabilities), self.changes_channel,
        )  # fmt: skip
        jobs = sorted(
            (ClaimedJob(*row) for row in rows if row["id"] is not None),
            key=lambda j: claim_key(j.priority, j.run_at, j.id),
        )
        upcoming = next(row["run_at"] for row in rows if row["id"] is None)
        return ClaimResult(tuple(jobs), upcoming)

    async def _claim_limited(
        self, conn: asyncpg.Connection, op: ops.Claim, now: float
    ) -> ClaimResult:
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
            self.changes_channel,
        )  # fmt: skip
        jobs = sorted(
            (ClaimedJob(*row[:11]) for row in rows if row["id"] is not None),
            key=lambda j: claim_key(j.priority, j.run_at, j.id),
        )
        last = rows[-1]
        return ClaimResult(tuple(jobs), last["run_at"], last["next_token_at"], last["held"])

    async def _claim_queue_limited(
        self, conn: asyncpg.Connection, op: ops.Claim, rate: RateLimit, now: float
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
        result = await self._claim(conn, capped, now)
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

    @staticmethod
    async def _take_token(conn: asyncpg.Connection, op: ops.TakeToken, now: float) -> float | None:
        """Under the bucket's lock, the one a claim takes for it."""
        key = f"r:{op.key}"
        await conn.execute(_LOCK_LIMIT_KEY, key)
        bucket, wait_until = take_token(
            _stored(await conn.fetchrow(_READ_BUCKET, key)), op.limit, now
        )
        if wait_until is None:
            await conn.execute(_STORE_BUCKET, key, bucket.tokens, bucket.at)
        return wait_until

    @staticmethod
    async def _drain_bucket(conn: asyncpg.Connection, op: ops.DrainBucket, now: float) -> None:
        key = f"r:{op.key}"
        await conn.execute(_LOCK_LIMIT_KEY, key)
        stored = _stored(await conn.fetchrow(_READ_BUCKET, key))
        bucket = drain(stored, op.limit, now, op.until)
        await conn.execute(_STORE_BUCKET, key, bucket.tokens, bucket.at)

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
    async def _beat(conn: asyncpg.Connection, op: ops.Beat, now: float) -> None:
        details = op.details
        await conn.execute(
            "INSERT INTO trioforge_processes "
            "(owner, queues, started_at, heartbeat_at, details, job_names, wake_channel, "
            "wake_until) VALUES ($1, $2, $3, $3, $4, $5, $6, $7) ON CONFLICT (owner) DO "
            "UPDATE SET queues = excluded.queues, heartbeat_at = excluded.heartbeat_at, "
            "details = excluded.details, job_names = excluded.job_names, "
            "wake_channel = excluded.wake_channel, wake_until = excluded.wake_until",
            op.owner, list(op.queues), now, None if details is None else details.to_json(),
            None if op.names is None else list(op.names),
            None if details is None else details.wake_channel,
            None if details is None else details.wake_until,
        )  # fmt: skip

    @staticmethod
    async def _wake_all(conn: asyncpg.Connection, op: ops.WakeAll, now: float) -> None:
        del now
        await conn.execute(
            _NOTIFY_WAKES, CHANNEL, [f"w:{run_at!r}:{queue}" for queue, run_at in op.wakes]
        )

    @staticmethod
    async def _leave(conn: asyncpg.Connection, op: ops.Leave, now: float) -> None:
        del now
        await conn.execute(
            "WITH gone AS (DELETE FROM trioforge_leases WHERE owner = $1) "
            "DELETE FROM trioforge_processes WHERE owner = $1",
            op.owner,
        )

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

    @staticmethod
    async def _purge(conn: asyncpg.Connection, op: ops.Purge, now: float) -> list[int]:
        del now
        rows = await conn.fetch(
            _PURGE,
            [JobState(s).value for s in op.statuses], op.before, op.queue, list(op.exclude),
            max(op.limit, 0), op.keep_retained,
        )  # fmt: skip
        return await _deleted(conn, rows)

    @staticmethod
    async def _purge_expired(
        conn: asyncpg.Connection, op: ops.PurgeExpired, now: float
    ) -> list[int]:
        del now
        rows = await conn.fetch(
            "DELETE FROM trioforge_jobs WHERE id IN ("
            " SELECT id FROM trioforge_jobs WHERE retain IS NOT NULL"
            " AND finished_at IS NOT NULL AND (finished_at + (retain ->> status)::float8) < $1"
            " ORDER BY (finished_at + (retain ->> status)::float8), id LIMIT $2"
            " FOR UPDATE SKIP LOCKED) RETURNING id, queue, status, finished_at",
            op.at, max(op.limit, 0),
        )  # fmt: skip
        return await _deleted(conn, rows)

    @staticmethod
    async def _delete(conn: asyncpg.Connection, op: ops.Delete, now: float) -> JobState:
        del now
        status = await conn.fetchval(
            "SELECT status FROM trioforge_jobs WHERE id = $1 FOR UPDATE", op.job_id
        )
        if status is None:
            raise JobNotFoundError(f"no job with id {op.job_id}")
        if JobState(status) not in TERMINAL_STATES:
            raise InvalidStateError(not_finished(op.job_id, JobState(status)))
        rows = await conn.fetch(
            "DELETE FROM trioforge_jobs WHERE id = $1 RETURNING id, queue, status, finished_at",
            op.job_id,
        )
        await _deleted(conn, rows)
        return JobState(status)

    @staticmethod
    async def _fold_counts(conn: asyncpg.Connection, op: ops.FoldCounts, now: float) -> None:
        del op, now
        await conn.execute(_FOLD_COUNTS)


async def _deleted(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[int]:
    """Finished jobs just deleted (id, queue, status, finished_at): they leave the counts,
    and a run's record and signals go with it (its attempts go by cascade). Their ids,
    ascending."""
    places = Counter((r["queue"], r["status"], r["finished_at"]) for r in rows)
    await _store(conn, Tally({place: -n for place, n in places.items()}))
    gone = [r["id"] for r in rows]
    if gone:
        for table in ("trioforge_workflow_steps", "trioforge_workflow_signals"):
            await conn.execute(f"DELETE FROM {table} WHERE run_id = ANY($1::bigint[])", gone)
    return sorted(gone)
