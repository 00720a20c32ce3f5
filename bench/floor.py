"""The floor under cross-process enqueue -> start on PostgreSQL, with no job runtime at all.

One sample: connection A inserts a row and sends a NOTIFY in one transaction (the enqueue's
commit); connection B, LISTENing, hears it and claims the row in a second transaction (the
claim's commit). Two commits and a notification, nothing else: no runtime, no codec, no
process wake-up beyond the listener's. The time from before A's transaction to after B's
commit is what any queue on this server and machine pays at least. Plain asyncpg on a
fresh database of its own; the table prints it beside the latency row.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import asyncpg
import trio_asyncio

from bench.databases import add_postgres_url, postgres_databases
from bench.harness import add_deadline, bounded, pct, say


async def samples_on(url: str, samples: int) -> list[float]:
    """``samples`` insert+NOTIFY -> LISTEN -> claim times, one every 10 ms (asyncio side)."""
    enqueuer = await asyncpg.connect(url)
    claimer = await asyncpg.connect(url)
    try:
        await enqueuer.execute(
            "CREATE TABLE floor_jobs (id bigserial PRIMARY KEY, state text NOT NULL)"
        )
        heard: asyncio.Queue[str] = asyncio.Queue()

        def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            heard.put_nowait(payload)

        await claimer.add_listener("floor", notified)
        out = []
        for _ in range(samples + 5):
            t0 = time.perf_counter()
            async with enqueuer.transaction():
                job = await enqueuer.fetchval(
                    "INSERT INTO floor_jobs (state) VALUES ('available') RETURNING id"
                )
                await enqueuer.execute("SELECT pg_notify('floor', $1)", str(job))
            await heard.get()
            await claimer.execute(
                "UPDATE floor_jobs SET state = 'running' WHERE id = ("
                "SELECT id FROM floor_jobs WHERE state = 'available' "
                "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            )
            out.append(time.perf_counter() - t0)
            await asyncio.sleep(0.01)
        return out[5:]  # the first ones warm the connections up
    finally:
        await enqueuer.close()
        await claimer.close()


async def floor(url: str, samples: int) -> list[float]:
    async with trio_asyncio.open_loop():
        result: list[float] = await trio_asyncio.aio_as_trio(samples_on)(url, samples)
        return result


async def main(url: str, samples: int) -> None:
    async with postgres_databases(url) as fresh:
        found = await floor((await fresh())[0], samples)
    say(
        "\nthe floor: insert + NOTIFY commit, LISTEN, claim commit (two connections, asyncpg)",
        f"  p50 / p99 (ms) {pct(found, 0.5) * 1000:.2f} / {pct(found, 0.99) * 1000:.2f}",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    add_postgres_url(parser)
    add_deadline(parser, 120)
    args = parser.parse_args()
    bounded("bench.floor", args.deadline, lambda: main(args.postgres_url, args.samples))
