"""What PostgreSQL's job change notices cost the drain (`make bench`).

Every outcome statement sends the ids it finished on the change channel (``pg_notify``,
delivered at commit), which the live feed of any process turns into ``watch()`` /
``wait()`` updates. Measured: the drain rate of 20,000 no-op jobs with the notices as
shipped, with them left out of the outcome statement, and with them while another
process LISTENs (a client watching a job), interleaved, ``--repeats`` rounds in a
rotating order.

``--connections 1 8 32``: why the notices stay inside the statements. Plain asyncpg, that
many connections each committing one-row updates for ``--seconds``: alone, with a
``pg_notify`` in the update's transaction (the server's notify lock is then held through
each commit's flush, so notifying commits queue behind one another), and with the notice
sent after the commit in a statement of its own (``synchronous_commit`` off: it writes
nothing), which costs a round trip instead (docs/performance.md). Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import trio
import trio_asyncio

import trioforge
from bench.databases import add_postgres_url, postgres_schemas
from bench.harness import add_deadline, bounded, report
from bench.run import drain, noop
from trioforge.storage import Backend
from trioforge.storage import postgres as pg
from trioforge.storage.postgres import PostgresBackend

#: The outcome statement without its change notices (its channel parameter still read).
_CHANGES = pg._FINISH[pg._FINISH.index("changes AS (") : pg._FINISH.index(")\nSELECT id")]
QUIET_FINISH = pg._FINISH.replace(_CHANGES, "changes AS (SELECT $11::text")
assert "pg_notify($11" not in QUIET_FINISH
assert "pg_notify($11" in pg._FINISH


@asynccontextmanager
async def quiet_outcomes() -> AsyncIterator[None]:
    """Outcomes written without change notices meanwhile (the rest as shipped)."""
    shipped, pg._FINISH = pg._FINISH, QUIET_FINISH
    try:
        yield
    finally:
        pg._FINISH = shipped


#: The three ways of --connections, each one commit (or two round trips) per loop.
_WAYS = {
    "no notice": ["UPDATE bench_notify SET n = n + 1 WHERE id = $1"],
    "notice in the transaction": [
        "WITH u AS (UPDATE bench_notify SET n = n + 1 WHERE id = $1 RETURNING id) "
        "SELECT pg_notify('bench_notify', id::text) FROM u"
    ],
    "notice after the commit": [
        "UPDATE bench_notify SET n = n + 1 WHERE id = $1",
        "SELECT set_config('synchronous_commit', 'off', true), "
        "pg_notify('bench_notify', $1::int::text)",
    ],
}


async def _commit_until(
    conn: asyncpg.Connection, row: int, statements: list[str], stop: float
) -> int:
    """Commits of ``statements`` (each on its own) on ``row`` until ``stop``: how many."""
    done = 0
    while time.monotonic() < stop:
        for statement in statements:
            await conn.execute(statement, row)
        done += 1
    return done


async def commits_per_second(url: str, connections: int, seconds: float) -> dict[str, float]:
    """Each way of _WAYS on ``connections`` connections for ``seconds``: commits/s."""
    setup = await asyncpg.connect(url)
    try:
        await setup.execute(
            "CREATE TABLE IF NOT EXISTS bench_notify (id int PRIMARY KEY, n bigint);"
            "INSERT INTO bench_notify SELECT g, 0 FROM generate_series(0, 255) AS g "
            "ON CONFLICT DO NOTHING"
        )
        rates = {}
        for way, statements in _WAYS.items():
            conns = [await asyncpg.connect(url) for _ in range(connections)]
            stop = time.monotonic() + seconds
            done = await asyncio.gather(
                *(_commit_until(c, i, statements, stop) for i, c in enumerate(conns))
            )
            rates[way] = sum(done) / seconds
            for conn in conns:
                await conn.close()
        return rates
    finally:
        await setup.execute("DROP TABLE IF EXISTS bench_notify")
        await setup.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument(
        "--connections", type=int, nargs="*", help="commits/s of the notify ways instead"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="each --connections way")
    add_postgres_url(parser)
    add_deadline(parser, 300)
    args = parser.parse_args()

    async def ways() -> None:
        async with trio_asyncio.open_loop():
            for n in args.connections:
                await one_way(n)

    async def one_way(n: int) -> None:
        rates = await trio_asyncio.aio_as_trio(commits_per_second)(
            args.postgres_url, n, args.seconds
        )
        base = rates["no notice"]
        report(
            f"postgres: {n} connections committing one-row updates",
            {way: f"{rate:,.0f} commits/s ({rate / base:.0%})" for way, rate in rates.items()},
        )

    if args.connections:
        bounded("bench.notices", args.deadline, ways)
        return

    async def run() -> None:
        async with postgres_schemas(args.postgres_url) as make:

            async def fresh() -> Backend:
                return make()

            async def quiet() -> float:
                async with quiet_outcomes():
                    return await drain(fresh, args.jobs)

            async def listened() -> float:
                """The drain while a client on the same schema watches a job (LISTENing:
                every notice is queued for it and read by its connection)."""
                backend = make()
                assert isinstance(backend, PostgresBackend)
                watcher = PostgresBackend(args.postgres_url, schema=backend.schema)
                async with trioforge.open_client(watcher) as client, trio.open_nursery() as n:
                    job_id = await client.enqueue(noop, 0, queue="elsewhere")

                    async def watch() -> None:
                        async for _ in client.watch(job_id):
                            pass

                    n.start_soon(watch)

                    async def same_schema() -> Backend:
                        return PostgresBackend(args.postgres_url, schema=backend.schema)

                    rate = await drain(same_schema, args.jobs)
                    n.cancel_scope.cancel()
                    return rate

            kinds: dict[str, Callable[[], Any]] = {
                "notices (as shipped)": lambda: drain(fresh, args.jobs),
                "no notices": quiet,
                "notices, another process listening": listened,
            }
            rates: dict[str, list[float]] = {kind: [] for kind in kinds}
            names = list(kinds)
            for i in range(args.repeats):
                for kind in names[i % len(names) :] + names[: i % len(names)]:
                    rates[kind].append(await kinds[kind]())
            base = statistics.mean(rates["no notices"])
            rows = {
                f"drain {args.jobs:,}, {kind}": f"{statistics.mean(r):,.0f} jobs/s ("
                + " / ".join(f"{x:,.0f}" for x in r)
                + f"; {statistics.mean(r) / base:.0%})"
                for kind, r in rates.items()
            }
            rows["load average at the end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            report("postgres: what change notices cost the drain", rows)

    bounded("bench.notices", args.deadline, run)


if __name__ == "__main__":
    main()
