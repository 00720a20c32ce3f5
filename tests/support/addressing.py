"""Helpers for tests of wake-ups across runtimes: what ran where, the registry rows,
the claims a backend runs."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio

import trioforge
from trioforge import JobContext, Registry
from trioforge.storage import Backend, ProcessInfo, backend_for_url, opened, ops

#: A poll interval no test waits for: only a notice starts a job within their bounds.
SLOW_POLL = 30.0


@attrs.define
class Pool:
    """What ran where: each started job's name and the runtime it started in."""

    started: list[tuple[str, str]] = attrs.Factory(list)
    release: trio.Event = attrs.Factory(trio.Event)
    changed: trio.Event = attrs.Factory(trio.Event)

    def registry(self, who: str, names: Sequence[str] = ("hold", "work")) -> Registry:
        registry = Registry()
        for name in names:
            registry.job(name)(self.handler(who, name, self.release if name == "hold" else None))
        return registry

    def handler(self, who: str, name: str, until: trio.Event | None) -> Any:
        """A handler that notes its start, then waits for ``until`` if it is given."""

        async def handler(ctx: JobContext) -> None:
            self.started.append((name, who))
            self.changed.set()
            self.changed = trio.Event()
            if until is not None:
                await until.wait()

        return handler

    async def until(self, count: int) -> list[tuple[str, str]]:
        with trio.fail_after(10):
            while len(self.started) < count:
                await self.changed.wait()
        return sorted(self.started)


async def processes(url: str) -> list[ProcessInfo]:
    async with opened(backend_for_url(url)) as backend:
        [rows] = await backend.execute([ops.Processes()], trioforge.WallClock().now())
    assert isinstance(rows, list)
    return rows


async def advertised(url: str, count: int) -> None:
    """Until ``count`` processes advertise a channel (their listener heard its probe and a
    beat said so)."""
    with trio.fail_after(10):
        while True:
            rows = await processes(url)
            if (
                sum(p.details is not None and p.details.wake_channel is not None for p in rows)
                >= count
            ):
                return
            await trio.sleep(0.05)


class Claims:
    """The claims a backend runs, counted in the order they were sent (its ``execute``
    wrapped, and PostgreSQL's ``execute_asyncio``, which runs batches on asyncio's side):
    a test waits for one sent after a point to have come back."""

    def __init__(self, backend: Backend) -> None:
        self.sent = 0
        self._back = 0  # the latest sent of those come back
        self._changed = trio.Event()
        token = trio.lowlevel.current_trio_token()
        for method in ("execute", "execute_asyncio"):
            run = getattr(backend, method, None)
            if run is None:
                continue

            async def counting(batch: Sequence[ops.Op], now: float, run: Any = run) -> Any:
                if not any(isinstance(op, ops.Claim) for op in batch):
                    return await run(batch, now)
                self.sent += 1
                sent = self.sent
                try:
                    return await run(batch, now)
                finally:  # (on asyncio's side too: trio hears of it through its token)
                    token.run_sync_soon(self._came_back, sent)

            setattr(backend, method, counting)

    def _came_back(self, sent: int) -> None:
        self._back = max(self._back, sent)
        self._changed.set()
        self._changed = trio.Event()

    async def back_after(self, mark: int) -> None:
        """Until a claim sent after ``mark`` (a value of :attr:`sent`) has come back."""
        while self._back <= mark:
            await self._changed.wait()


async def claims_for_a_trickle(
    url: str, backends: Sequence[Backend], pool: Pool, jobs: int, settings: dict[str, Any]
) -> int:
    """A runtime on each of ``backends``, idle, and a client enqueueing ``jobs`` jobs one
    at a time, each waited for: the claims the runtimes sent meanwhile."""
    async with AsyncExitStack() as stack:
        claims = [Claims(backend) for backend in backends]
        for n, backend in enumerate(backends):
            await stack.enter_async_context(
                trioforge.open_runtime(pool.registry(f"p{n}"), database=backend, **settings)
            )
        client = await stack.enter_async_context(
            trioforge.open_client(url, registry=pool.registry("client"))
        )
        await advertised(url, len(backends))
        before = sum(c.sent for c in claims)
        for _ in range(jobs):
            with trio.fail_after(10):
                await client.wait(await client.enqueue("work"))
        return sum(c.sent for c in claims) - before
