"""Several runtimes on one database: the process registry and the maintenance leader."""

from __future__ import annotations

from typing import Any

import trio

import trioforge
from tests.support.fast import FAST
from trioforge import JobContext, Registry
from trioforge.actors.leases import MAINTENANCE
from trioforge.storage import ProcessInfo, backend_for_url, opened, ops


async def storage_op(url: str, op: ops.Op) -> Any:
    async with opened(backend_for_url(url)) as backend:
        [result] = await backend.execute([op], trioforge.WallClock().now())
    return result


async def test_runtimes_register_and_one_of_them_leads(shared_url: str) -> None:
    registry = Registry()

    @registry.job("noop")
    async def noop(ctx: JobContext) -> None:
        pass

    async with (
        trioforge.open_runtime(registry, database=shared_url, owner="alpha", **FAST) as alpha,
        trioforge.open_runtime(registry, database=shared_url, owner="beta", **FAST),
    ):
        # Each registers before open_runtime returns; a job proves alpha is serving.
        await alpha.wait(await alpha.enqueue("noop"))
        processes: list[ProcessInfo] = await storage_op(shared_url, ops.Processes())
        assert sorted(p.owner for p in processes) == ["alpha", "beta"]
        assert {p.queues for p in processes} == {("default",)}
        with trio.fail_after(10):
            # The reapers' first pass elects a leader; a stranger cannot take the lease.
            while await storage_op(shared_url, ops.Lead(MAINTENANCE, "stranger", 1e18)):
                await storage_op(shared_url, ops.Leave("stranger"))
                await trio.sleep(FAST["heartbeat_interval"])
    # Both left cleanly: out of the registry, and the lease is free at once.
    assert await storage_op(shared_url, ops.Processes()) == []
    assert await storage_op(shared_url, ops.Lead(MAINTENANCE, "stranger", 1e18))
