"""The listener: other processes' enqueues and cancels, pushed instead of polled.

It holds the backend's dedicated listening connection, whose driver callback hands each
notice to ``on_notice`` itself: a wake-up reaches its queue's fetcher without waking this
task (one pass of trio's scheduler less between the notice and the claim). When that
connection drops it reconnects (after ``retry_interval``) and then catches up, because
notices sent while it was away are lost: ``on_connected`` has every local fetcher claim
(and, after a reconnect, every other process hear of each queue: wake-ups addressed here
meanwhile reached no one), and cancel flags are still read by the heartbeat. Meanwhile the
runtime keeps working on its poll interval. ``on_address`` learns the channel where
notices reach this process alone while the connection lasts (None when it drops), for the
heartbeat to advertise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from trioforge.storage import Backend, Notice

__all__ = ["listener"]

log = logging.getLogger("trioforge.listener")


async def listener(
    backend: Backend,
    *,
    on_notice: Callable[[Notice], None],
    on_connected: Callable[[], None],
    retry_interval: float,
    on_address: Callable[[str | None], None] = lambda address: None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    started = False
    while True:
        try:
            async with backend.listen(on_notice) as listening:
                if not started:
                    task_status.started()
                    started = True
                on_address(listening.address)
                try:
                    on_connected()
                    await listening.lost.wait()
                finally:
                    on_address(None)
            log.warning("listening connection dropped; reconnecting")
        except Exception as exc:
            log.warning("cannot listen for notices (%s); retrying in %.1fs", exc, retry_interval)
            if not started:  # the runtime still starts; it polls until we are back
                task_status.started()
                started = True
        await trio.sleep(retry_interval)
