"""What PostgreSQL's job change notices cost the drain (`make bench`).

Every outcome statement sends the ids it finished on the change channel (``pg_notify``,
delivered at commit), which the live feed of any process turns into ``watch()`` /
``wait()`` updates. Measured: the drain rate of 20,000 no-op jobs with the notices as
shipped, with them left out of the outcome statement, and with them while another
process LISTENs (a client watching a job), interleaved, ``--repeats`` rounds in a
rotating order. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=4)
    add_postgres_url(parser)
    add_deadline(parser, 300)
    args = parser.parse_args()

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
