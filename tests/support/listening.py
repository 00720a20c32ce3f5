"""Jobs and settings for tests of what reaches a runtime from another process."""

from __future__ import annotations

from typing import Any

import trio

import trioforge

#: Polling and heartbeats far away: only a pushed notice explains a prompt reaction.
SLOW: dict[str, Any] = {"poll_interval": 60.0, "heartbeat_interval": 60.0, "lease_seconds": 120.0}


def listener_registry() -> tuple[trioforge.Registry, trio.Event, trio.Event]:
    """``quick`` returns "ran"; ``wait-here`` sets the first event once started and the
    second once its scope ended (cancelled)."""
    registry = trioforge.Registry()
    started, stopped = trio.Event(), trio.Event()

    @registry.job("wait-here")
    async def wait_here(ctx: trioforge.JobContext) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            stopped.set()

    @registry.job("quick")
    async def quick(ctx: trioforge.JobContext) -> str:
        return "ran"

    return registry, started, stopped
