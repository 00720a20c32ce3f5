"""A big jobs table on PostgreSQL (`make bench`): does a queue stay fast at a million rows?

``drain`` (a fresh database): ``--pending`` no-op jobs (``enqueue_many`` in batches of
50,000) beside ``--finished`` completed jobs finished two days ago awaiting retention (one
server-side INSERT ... SELECT), then one process drains the pending jobs on 64 slots.
Printed: the drain rate of the first and of the last ``--window`` jobs, the claim
statement's ``EXPLAIN (ANALYZE, BUFFERS)`` at the start and before the last window, and
the retention purge deleting every finished job while the drain runs (the runtime's
``purge(status="completed")``: the sweeper's statement, 500 jobs a transaction, through
the draining runtime's own storage): how long it took and the longest gap between two
consecutive job starts meanwhile, beside the poll interval.

``future`` (fresh databases, alternating): beside 0 and beside ``--future`` rows due in a
day (half delayed jobs, half workflow runs asleep), ``--drain`` no-op jobs enqueued at
once and drained on 64 slots, then ``--trickle`` more enqueued a few at a time: CPU per
job (this process plus its PostgreSQL backends, ``bench/cpu.py``) and the claim's
``EXPLAIN (ANALYZE, BUFFERS)`` with a backlog and with nothing due.

This server's autovacuum setting is printed first. The jobs table gets the storage
parameters docs/pgbouncer.md recommends (``TABLE_SETTINGS``): autovacuum acts on them where
it runs, and ``VACUUM`` reads ``vacuum_index_cleanup`` (without it, a VACUUM finding dead
rows on under 2% of the table's pages leaves the indexes alone, claims' dead entries
included). With autovacuum off (a test server) nothing would vacuum the table during the
drain, so the bench runs ``VACUUM trioforge_jobs`` after every ``--vacuum-every`` N jobs
itself, by default every 10,000: what those settings trigger (a job leaves two dead rows
by its end, and they say every 20,000). ``--vacuum-every 0``: no VACUUM, the worst case
(dead index entries pile up in front of every claim).

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import trio
import trio_asyncio

import trioforge
from bench import counts
from bench.cpu import Meter
from bench.databases import add_postgres_url, postgres_databases
from bench.harness import add_deadline, bounded, report, say
from trioforge import JobContext, Registry, WorkflowContext
from trioforge.storage._pg_sql import _CLAIM

QUEUE = "bench"
SLOTS = 64


class Starts:
    """When each job started (perf_counter), and the moment the target count is reached."""

    def __init__(self, target: int) -> None:
        self.at: list[float] = []
        self.target = target
        self.all_done = trio.Event()
        self.marks: dict[int, trio.Event] = {}

    def one(self) -> None:
        self.at.append(time.perf_counter())
        if (mark := self.marks.get(len(self.at))) is not None:
            mark.set()
        if len(self.at) == self.target:
            self.all_done.set()

    def reached(self, count: int) -> trio.Event:
        """Set once ``count`` jobs started (at once if they have)."""
        mark = self.marks.setdefault(count, trio.Event())
        if len(self.at) >= count:
            mark.set()
        return mark


STARTS = Starts(0)
registry = Registry()


@registry.job("noop", queue=QUEUE)
async def noop(ctx: JobContext, n: int) -> None:
    STARTS.one()


@registry.workflow("asleep", queue=QUEUE)
async def asleep(ctx: WorkflowContext) -> None:
    await ctx.sleep(86400)


#: The name a run of ``asleep`` is stored under.
ASLEEP = next(n for n in registry.names() if n.startswith("asleep"))


class Sql:
    """One asyncpg connection to the bench's database, used from trio."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, url: str) -> Sql:
        return cls(await trio_asyncio.aio_as_trio(asyncpg.connect)(url))

    async def execute(self, sql: str, *args: Any) -> str:
        return str(await trio_asyncio.aio_as_trio(self.conn.execute)(sql, *args))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return list(await trio_asyncio.aio_as_trio(self.conn.fetch)(sql, *args))

    async def close(self) -> None:
        await trio_asyncio.aio_as_trio(self.conn.close)()


#: Counts of rows written straight to the table, as the counts' migration fills them.
RECOUNT = counts.RECOUNT.format(second="floor(finished_at)::bigint")


async def enqueue(db: str, count: int, batch: int = 50_000) -> float:
    """``count`` no-op jobs through the public API; jobs/s."""
    t0 = time.perf_counter()
    async with trioforge.open_client(db, registry=registry) as client:
        for start in range(0, count, batch):
            await client.enqueue_many(noop, range(start, min(count, start + batch)))
    return count / (time.perf_counter() - t0)


async def copy_rows(sql: Sql, count: int, status: str, run_at: str, finished: str) -> None:
    """``count`` copies of the first no-op job, in ``status``, by one INSERT ... SELECT."""
    await sql.execute(
        "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, max_attempts, "
        "created_at, status, attempt, finished_at, workflow) "
        f"SELECT name, queue, payload, priority, {run_at}, max_attempts, created_at, $1, "
        f"attempt, {finished}, false FROM trioforge_jobs, generate_series(1, $2) AS x "
        "WHERE id = (SELECT min(id) FROM trioforge_jobs)",
        status, count, time.time(),
    )  # fmt: skip


#: The jobs table's vacuum settings, as docs/pgbouncer.md recommends them.
TABLE_SETTINGS = (
    "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000, "
    "autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000, "
    "vacuum_index_cleanup = on"
)
#: Where no autovacuum runs, the bench VACUUMs after this many jobs: what those settings
#: trigger (each job leaves two dead rows by its end; the threshold is 20,000).
RECOMMENDED_VACUUM_EVERY = 10_000

#: The claim's parameter types, for a prepared statement of it.
CLAIM_TYPES = "text, float8, text[], bigint, text, float8, text[], text"


async def explain(sql: Sql, label: str, show: bool) -> str:
    """The claim of 64 jobs as a worker runs it, as a custom plan (for its parameters) and
    as a generic one (what a prepared statement may switch to after five runs), each run
    once and rolled back: its time, and the buffers it touched in all and to pick the
    jobs."""
    args: tuple[Any, ...] = (
        QUEUE,
        time.time(),
        sorted(registry.names()),
        SLOTS,
        "explain",
        1e12,
        [],
        "tf_explain",  # the channel of the claim's change notice: nobody listens
    )
    lines = []
    for mode in ("custom", "generic"):
        [plan] = json.loads(await _plan(sql, mode, "FORMAT JSON", args))
        top = plan["Plan"]
        picked = next(p for p in top["Plans"] if p.get("Subplan Name") == "CTE picked")
        lines.append(
            f"{mode} {plan['Execution Time']:.2f} ms, {_buffers(top)} buffers "
            f"(picking {_buffers(picked)})"
        )
        if show:
            say(f"-- {label}, {mode} plan:", *(await _plan(sql, mode, "", args)).splitlines())
    return "; ".join(lines)


def _buffers(node: dict[str, Any]) -> str:
    hit, read = node.get("Shared Hit Blocks", 0), node.get("Shared Read Blocks", 0)
    return f"{hit + read:,}" + (f" ({read:,} read)" if read else "")


def _literal(value: object) -> str:
    if isinstance(value, list):
        return f"ARRAY[{', '.join(map(_literal, value))}]::text[]"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


async def _plan(sql: Sql, mode: str, fmt: str, args: tuple[Any, ...]) -> str:
    await sql.execute("BEGIN")
    try:
        await sql.execute(f"SET LOCAL plan_cache_mode = force_{mode}_plan")
        await sql.execute(f"PREPARE tf_claim ({CLAIM_TYPES}) AS {_CLAIM}")
        # EXECUTE takes no bound parameters: the values go in as literals.
        values = ", ".join(map(_literal, args))
        rows = await sql.fetch(
            f"EXPLAIN (ANALYZE, BUFFERS, {fmt or 'FORMAT TEXT'}) EXECUTE tf_claim ({values})"
        )
    finally:
        await sql.execute("ROLLBACK")
        await sql.execute("DEALLOCATE tf_claim")
    return "\n".join(str(r[0]) for r in rows)


def rate(at: list[float], first: int, last: int) -> float:
    """Jobs/s from the start of job ``first`` to that of job ``last`` (indexes into at)."""
    return (last - first) / max(at[last] - at[first], 1e-9)


async def progress(starts: Starts, every: int) -> None:
    """A line per ``every`` jobs started: the rate since the last line."""
    for end in range(every, starts.target, every):
        await starts.reached(end).wait()
        say(f"  {end:,} started: {rate(starts.at, end - every, end - 1):,.0f} jobs/s "
            f"(load {os.getloadavg()[0]:.1f})")  # fmt: skip


def longest_gap(at: list[float], since: float, until: float) -> float:
    inside = [t for t in at if since <= t <= until]
    return max((b - a for a, b in itertools.pairwise(inside)), default=0.0)


async def vacuum_every(sql: Sql, jobs: int, starts: Starts, log: list[float]) -> None:
    """VACUUM the jobs table after every ``jobs`` job starts, as autovacuum would."""
    done = 0
    while done + jobs < starts.target:
        done += jobs
        await starts.reached(done).wait()
        t0 = time.perf_counter()
        await sql.execute("VACUUM trioforge_jobs")
        log.append(time.perf_counter() - t0)


async def big_drain(args: argparse.Namespace, db: str) -> None:
    global STARTS
    sql = await Sql.connect(db)
    try:
        enqueued = await enqueue(db, args.pending)
        t0 = time.perf_counter()
        # Finished over one day, two days ago (a day's retention has passed for all).
        spread = f"$3::float8 - 172800 - x * 86400.0 / {max(args.finished, 1)}"
        await copy_rows(sql, args.finished, "completed", "run_at", spread)
        await sql.execute(RECOUNT)
        await sql.execute(f"ALTER TABLE trioforge_jobs SET ({TABLE_SETTINGS})")
        await sql.execute("VACUUM ANALYZE trioforge_jobs")
        report(
            f"a big table: {args.pending:,} pending + {args.finished:,} finished jobs",
            {
                "jobs table settings": TABLE_SETTINGS,
                "enqueue_many, batches of 50,000": f"{enqueued:,.0f} jobs/s",
                "finished rows, INSERT ... SELECT": f"{time.perf_counter() - t0:.1f} s",
                "claim at the start": await explain(sql, "start", args.plans),
            },
        )
        STARTS = starts = Starts(args.pending)
        window = min(args.window, args.pending // 4)
        vacuums: list[float] = []
        purge: dict[str, float] = {}
        async with (
            trioforge.open_runtime(
                registry, database=db, queues={QUEUE: SLOTS}, poll_interval=args.poll_interval,
                sweep_interval=10**6,
            ) as rt,
            trio.open_nursery() as nursery,
        ):  # fmt: skip
            if args.vacuum_every:
                nursery.start_soon(vacuum_every, sql, args.vacuum_every, starts, vacuums)
            await starts.reached(window).wait()
            say(f"  first {window:,} jobs: {rate(starts.at, 0, window - 1):,.0f} jobs/s")

            async def purge_all() -> None:
                # Through the draining runtime, as its sweeper would: the same storage
                # actor and connections as its claims.
                purge["start"] = time.perf_counter()
                purge["deleted"] = await rt.purge(status="completed", older_than=86400)
                purge["end"] = time.perf_counter()
                gap = longest_gap(starts.at, purge["start"], purge["end"])
                say(f"  purge: {purge['deleted']:,.0f} deleted in "
                    f"{purge['end'] - purge['start']:.1f} s, longest gap between job starts "
                    f"meanwhile {gap * 1000:.0f} ms")  # fmt: skip

            if args.finished:
                nursery.start_soon(purge_all)
            nursery.start_soon(progress, starts, args.pending // 10)
            await starts.reached(args.pending - window - 1).wait()
            explain_sql = await Sql.connect(db)
            try:
                late = await explain(explain_sql, "before the last window", args.plans)
            finally:
                await explain_sql.close()
            say(f"  claim before the last window: {late}")
            await starts.all_done.wait()
        at = starts.at
        first, last = rate(at, 0, window - 1), rate(at, len(at) - window, len(at) - 1)
        rows = {
            f"first {window:,} jobs": f"{first:,.0f} jobs/s",
            f"last {window:,} jobs": f"{last:,.0f} jobs/s",
            "last / first": f"{last / first:.2f}",
            "whole drain": f"{rate(at, 0, len(at) - 1):,.0f} jobs/s",
        }
        if "end" in purge:
            until = min(purge["end"], at[-1])
            overlap = [t for t in at if purge["start"] <= t <= until]
            gap = longest_gap(at, purge["start"], until)
            rows |= {
                "purge of the finished jobs": f"{purge['deleted']:,.0f} in "
                f"{purge['end'] - purge['start']:.1f} s "
                f"({purge['deleted'] / (purge['end'] - purge['start']):,.0f}/s)",
                "  drain meanwhile": f"{len(overlap):,} jobs, "
                f"{len(overlap) / max(until - purge['start'], 1e-9):,.0f} jobs/s",
                "  longest gap between job starts": f"{gap * 1000:.0f} ms "
                f"(poll interval {args.poll_interval * 1000:.0f} ms)",
                "  overlaps the last window": str(purge["end"] > at[len(at) - window]),
            }
        elif args.finished:
            rows["purge of the finished jobs"] = "still running when the drain ended"
        rows["longest gap between job starts, whole drain"] = (
            f"{longest_gap(at, at[0], at[-1]) * 1000:.0f} ms"
        )
        if vacuums:
            rows[f"VACUUMs, one every {args.vacuum_every:,} jobs"] = (
                f"{len(vacuums)}, {min(vacuums):.1f}-{max(vacuums):.1f} s each, "
                f"{sum(vacuums):.0f} s in all"
            )
        report(f"a big table: the drain of {args.pending:,} jobs, {SLOTS} slots", rows)
    finally:
        await sql.close()


async def future_drain(args: argparse.Namespace, db: str, name: str, future: int) -> dict[str, str]:
    """Beside ``future`` rows due in a day: ``--drain`` no-ops enqueued at once and drained
    (claims find more due jobs than they ask for), then ``--trickle`` more enqueued
    ``--trickle-batch`` at a time, each batch once the last one started (claims find fewer:
    the case of a queue that keeps up). CPU per job of each, and the claim's plans."""
    global STARTS
    jobs, trickle, batch = args.drain, args.trickle, args.trickle_batch
    sql = await Sql.connect(db)
    try:
        await enqueue(db, jobs)
        if future:
            await copy_rows(sql, future // 2, "scheduled", "$3::float8 + 86400 + x", "NULL")
            runs = future - future // 2
            await sql.execute(
                "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, "
                "max_attempts, created_at, status, attempt, workflow) "
                "SELECT $4, $1, '[]', 0, $2::float8 + 86400 + x, 1, $2, 'scheduled', 1, "
                "true FROM generate_series(1, $3) AS x",
                QUEUE, time.time(), runs, ASLEEP,
            )  # fmt: skip
            await sql.execute(RECOUNT)
        await sql.execute("VACUUM ANALYZE trioforge_jobs")
        backlog_plan = await explain(sql, f"{future:,} future rows, a backlog", args.plans)
        STARTS = starts = Starts(jobs + trickle)
        meter = Meter([os.getpid()], name)
        async with trio.open_nursery() as nursery:
            meter.start()
            nursery.start_soon(meter.poll)
            t0 = time.perf_counter()
            async with trioforge.open_runtime(
                registry, database=db, queues={QUEUE: SLOTS}, sweep_interval=10**6
            ) as rt:
                await starts.reached(jobs).wait()
                wall, cpu = time.perf_counter() - t0, sum(meter.used())
                t1 = time.perf_counter()
                for done in range(jobs, jobs + trickle, batch):
                    await rt.enqueue_many(noop, range(min(batch, jobs + trickle - done)))
                    await starts.reached(min(done + batch, jobs + trickle)).wait()
                trickled, trickle_cpu = time.perf_counter() - t1, sum(meter.used()) - cpu
            nursery.cancel_scope.cancel()
        idle_plan = await explain(sql, f"{future:,} future rows, nothing due", args.plans)
        return {
            f"beside {future:,} future rows": f"{jobs:,} at once: {jobs / wall:,.0f} jobs/s, "
            f"{cpu / jobs * 1e6:,.0f} us CPU/job; {trickle:,} by {batch}: "
            f"{trickle / trickled:,.0f} jobs/s, {trickle_cpu / max(trickle, 1) * 1e6:,.0f} us "
            "CPU/job",
            "  claim of 64, a backlog": backlog_plan,
            "  claim of 64, nothing due": idle_plan,
        }
    finally:
        await sql.close()


async def future_rows(
    args: argparse.Namespace, fresh: Callable[[], Awaitable[tuple[str, str]]]
) -> None:
    say(f"\nmany future-scheduled rows: {args.drain:,} no-op jobs, {SLOTS} slots "
        f"(load {os.getloadavg()[0]:.1f})")  # fmt: skip
    for i in range(args.pairs):
        order = (0, args.future) if i % 2 == 0 else (args.future, 0)
        for future in order:
            db, name = await fresh()
            rows = await future_drain(args, db, name, future)
            say(*(f"  pair {i + 1}: {k:30} {v}" for k, v in rows.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--parts", nargs="+", choices=["drain", "future"], default=["drain", "future"]
    )
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=20_000)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument(
        "--vacuum-every", type=int, default=None, metavar="N",
        help="VACUUM after every N jobs (default: 10000 where autovacuum is off, else 0)",
    )  # fmt: skip
    parser.add_argument("--future", type=int, default=1_000_000)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--trickle", type=int, default=2000)
    parser.add_argument("--trickle-batch", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--plans", action="store_true", help="print the claim's query plans")
    add_postgres_url(parser)
    add_deadline(parser, 1800)
    args = parser.parse_args()

    async def run() -> None:
        async with trio_asyncio.open_loop(), postgres_databases(args.postgres_url) as fresh:
            sql = await Sql.connect(args.postgres_url)
            try:
                settings = await sql.fetch(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', "
                    "'autovacuum_vacuum_scale_factor', 'autovacuum_vacuum_insert_scale_factor',"
                    " 'autovacuum_naptime', 'shared_buffers') ORDER BY name"
                )
            finally:
                await sql.close()
            if args.vacuum_every is None:  # what the recommended settings would trigger
                autovacuum = {r[0]: r[1] for r in settings}.get("autovacuum") == "on"
                args.vacuum_every = 0 if autovacuum else RECOMMENDED_VACUUM_EVERY
            vacuums = f"every {args.vacuum_every:,} jobs" if args.vacuum_every else "none"
            say(f"server: {', '.join(f'{r[0]}={r[1]}' for r in settings)}; "
                f"load {os.getloadavg()[0]:.1f}; the bench's VACUUM: {vacuums}")  # fmt: skip
            if "drain" in args.parts:
                await big_drain(args, (await fresh())[0])
            if "future" in args.parts:
                await future_rows(args, fresh)

    bounded("bench.bigtable", args.deadline, run)


if __name__ == "__main__":
    main()
