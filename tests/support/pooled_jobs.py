"""Jobs for the PgBouncer tests' worker processes: each says which process ran it."""

from __future__ import annotations

import os

import trio

import trioforge

registry = trioforge.Registry()


@registry.job("pooled:work", queue="pooled")
async def work(ctx: trioforge.JobContext, n: int) -> int:
    await trio.sleep(0.02)  # long enough that both processes get some of the drain
    return os.getpid()


@registry.job("pooled:forever", queue="pooled")
async def forever(ctx: trioforge.JobContext) -> None:
    await ctx.progress(0.5, "started")
    await trio.sleep_forever()
