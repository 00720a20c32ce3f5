"""Wake-ups addressed to one process on SQLite: every process's listener sees every new
job, and of a queue's due ones each process claims only those addressed to it (the job's
id modulo the addressable processes, read from their registry rows alike); one that
cannot take its jobs passes the wake-up on to all of them (``trioforge_wakes``).

The runtimes here poll every 30 s, so a job that starts within seconds was started by a
notice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trioforge
from tests.support.addressing import SLOW_POLL, Pool, advertised, claims_for_a_trickle, processes
from trioforge.storage.sqlite import SQLiteBackend

#: Only a notice starts a job within the tests' bounds; an address lasts 2.5 beats, long
#: enough for a beat late on a busy machine.
SLOW: dict[str, Any] = {
    "heartbeat_interval": 1.0,
    "lease_seconds": 10.0,
    "poll_interval": SLOW_POLL,
}


async def test_a_trickle_of_jobs_costs_one_claim_each_however_many_processes_watch(
    tmp_path: Path,
) -> None:
    """Three idle processes, one job at a time: one claim per job in all (each process
    claiming at each new job made three, two of them for nothing)."""
    pool, jobs, path = Pool(), 10, tmp_path / "jobs.db"
    backends = [SQLiteBackend(path) for _ in range(3)]
    claims = await claims_for_a_trickle(f"sqlite:///{path}", backends, pool, jobs, SLOW)
    assert len(pool.started) == jobs
    assert jobs <= claims <= jobs + 2, claims


async def test_a_process_with_no_free_slot_passes_its_wake_up_on(tmp_path: Path) -> None:
    """A job addressed to a process whose one slot is taken reaches the other one."""
    pool, url = Pool(), f"sqlite:///{tmp_path / 'jobs.db'}"
    async with (
        trioforge.open_runtime(
            pool.registry("a"), database=url, owner="a", queues={"default": 1}, **SLOW
        ),
        trioforge.open_runtime(
            pool.registry("b"), database=url, owner="b", queues={"default": 1}, **SLOW
        ),
        trioforge.open_client(url, registry=pool.registry("client")) as client,
    ):
        await advertised(url, 2)
        first = await client.enqueue("hold")
        [(_, busy)] = await pool.until(1)
        rows = {p.owner: p.details for p in await processes(url)}
        addresses = sorted(d.wake_channel for d in rows.values() if d and d.wake_channel)
        assert len(addresses) == 2
        busy_details = rows[busy]
        assert busy_details is not None
        assert busy_details.wake_channel is not None
        # The next id goes to the busy process: an id in a queue nobody serves first if not.
        if (first.id + 1) % 2 != addresses.index(busy_details.wake_channel):
            await client.enqueue("work", queue="nowhere")
        await client.enqueue("hold")
        idle = "b" if busy == "a" else "a"
        assert await pool.until(2) == sorted([("hold", busy), ("hold", idle)])
        pool.release.set()
