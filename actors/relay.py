"""The relay: wake-ups addressed to this process alone that it cannot take, passed on to
every process.

An enqueue on PostgreSQL tells one idle process of its due jobs rather than every process
serving the queue (each of which would claim, and all but one find nothing). A fetcher
that has no free slot, or whose claim came back full with fewer jobs than were announced,
or that is stopping, hands the wake-up here without waiting; the relay sends everything
gathered meanwhile as one ``WakeAll`` (one round trip for a burst). If that fails, the
other processes find the jobs at their next poll.
"""

from __future__ import annotations

import contextlib
import logging
import math

import trio

from trioforge.actors.storage_actor import StorageHandle, log_failure
from trioforge.storage import ops

__all__ = ["Relay"]

log = logging.getLogger("trioforge.relay")


class Relay:
    def __init__(self, storage: StorageHandle) -> None:
        self._storage = storage
        self._send, self._receive = trio.open_memory_channel[tuple[str, float]](math.inf)

    def pass_on(self, queue: str, run_at: float) -> None:
        """Have every process hear that work on ``queue`` falls due at ``run_at`` (once the
        relay runs; never blocks)."""
        with contextlib.suppress(trio.ClosedResourceError):
            self._send.send_nowait((queue, run_at))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send what is handed over until cancelled; a cancel drops what is not sent yet."""
        task_status.started()
        async for queue, run_at in self._receive:
            wakes = {queue: run_at}
            while True:
                try:
                    queue, run_at = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                wakes[queue] = min(run_at, wakes.get(queue, run_at))
            try:
                await self._storage.call(ops.WakeAll(tuple(wakes.items())))
            except Exception as exc:
                log_failure(
                    log, exc, "could not pass wake-ups on for %s; other processes find "
                    "those jobs at their next poll", ", ".join(sorted(wakes)),
                )  # fmt: skip
