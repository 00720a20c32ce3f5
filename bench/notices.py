"""What PostgreSQL's job change notices cost the drain (`make bench`).

Every batch that changes jobs visibly sends their ids on the change channel after its
commit (``storage/_pg_notices.py``), which the live feed of any process turns into
``watch()`` / ``wait()`` updates. Measured: the drain rate of 20,000 no-op jobs with the
notices as shipped, with the change notices left out, and with them while another
process LISTENs (a client watching a job), interleaved, ``--repeats`` rounds in a
rotating order.

``--connections 1 8 32``: why notices go after the commit. Plain asyncpg, that many
connections each committing one-row updates for a few seconds: alone, with a
``pg_notify`` in the update's transaction (the server's notify lock is then held through
each commit's flush, so notifying commits queue behind one another), and with the notice
sent after the commit in a statement of its own, as trioforge does. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import trio
import trio_asyncio

import trioforge
from bench.databases import add_postgres_url, postgres_schemas
from bench.harness import add_deadline, bounded, report
from bench.run import drain, noop
from trioforge.storage import Backend, _pg_notices
from trioforge.storage._pg_notices import Notice
from trioforge.storage._pg_sql import CHANGES_CHANNEL
from trioforge.storage.postgres import PostgresBackend


@asynccontextmanager
async def quiet_outcomes() -> AsyncIterator[None]:
    """Batches send no change notices meanwhile (wake-ups and the rest as shipped)."""
    shipped = _pg_notices.send

    async def without_changes(conn: Any, notices: Sequence[Notice]) -> None:
        kept = [n for n in notices if not n[0].startswith(CHANGES_CHANNEL)]
        await shipped(conn, kept)

    _pg_notices.send = without_changes
    try:
        yield
    finally:
        _pg_notices.send = shipped


#: The three ways of --connections, each one commit (or two round trips) per loop.
_WAYS = {
    "no notice": ["UPDATE bench_notify SET n = n + 1 WHERE id = $1"],
    "notice in the transaction": [
        "WITH u AS (UPDATE bench_notify SET n = n + 1 WHERE id = $1 RETURNING id) "
        "SELECT pg_notify('bench_notify', id::text) FROM u"
    ],
    "notice after the commit": [
        "UPDATE bench_notify SET n = n + 1 WHERE id = $1",
        "SELECT set_config('synchronous_commit', 'off', true), pg_notify('bench_notify', $1::text)",
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
                "no change notices": quiet,
                "notices, another process listening": listened,
            }
            rates: dict[str, list[float]] = {kind: [] for kind in kinds}
            names = list(kinds)
            for i in range(args.repeats):
                for kind in names[i % len(names) :] + names[: i % len(names)]:
                    rates[kind].append(await kinds[kind]())
            base = statistics.mean(rates["no change notices"])
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
