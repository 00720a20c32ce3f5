"""Typed definitions, enqueues and Job handles, as an application writes them."""

from __future__ import annotations

import datetime as dt
from typing import Any, assert_type

import attrs

import trioforge
from trioforge import Job, JobContext, JobDefinition, JobInfo, Registry, Retry
from trioforge._registry import CronTick

registry = Registry()


@attrs.frozen
class Sum:
    a: int
    b: int


@attrs.frozen
class Welcome:
    user: str


@registry.job("add", timeout=dt.timedelta(minutes=5), retry=Retry(base_delay=dt.timedelta(1)))
async def add(ctx: JobContext, p: Sum) -> int:
    return p.a + p.b


@registry.job("ping", unique_for=dt.timedelta(hours=1))
async def ping(ctx: JobContext) -> None:
    return None


@registry.job("welcome")
async def welcome(ctx: JobContext, w: Welcome) -> str:
    follow_up = await ctx.enqueue(add, Sum(1, len(w.user)))
    assert_type(follow_up, Job[int])
    await ctx.enqueue(add, w)  # type: ignore[misc]
    return w.user


@registry.cron("*/5 * * * *", retain=3600)
async def tick(ctx: trioforge.CronContext) -> None:
    return None


assert_type(add, JobDefinition[Sum, int])
assert_type(ping, JobDefinition[None, None])
assert_type(tick, JobDefinition[CronTick, None])


async def enqueue(client: trioforge.Client) -> None:
    job = await client.enqueue(add, Sum(1, 2), delay=dt.timedelta(seconds=3))
    assert_type(job, Job[int])
    assert_type(job.id, int)
    assert_type(await job.result(), int)
    assert_type(await job.result(timeout=dt.timedelta(seconds=5)), int)
    assert_type(await job.info(), JobInfo)
    assert_type(await job.cancel(), bool)
    assert_type(await client.enqueue(ping), Job[None])
    assert_type(await client.enqueue("add", {"a": 1, "b": 2}), Job[Any])
    jobs = await client.enqueue_many(add, [Sum(1, 2), Sum(3, 4)])
    assert_type(jobs, list[Job[int]])
    assert_type(await client.enqueue_many("add", [{"a": 1, "b": 2}]), list[Job[Any]])
    assert_type(client.job(add, 17), Job[int])
    # Every call that takes a job id takes the handle.
    await client.get(job)
    await client.wait(job)
    await client.attempts(job)
    await client.retry(job)
    await client.discard(job)
    await client.cancel(jobs[0])


async def wrong_calls(client: trioforge.Client) -> None:
    await client.enqueue(add, Welcome("x"))  # type: ignore[misc]
    await client.enqueue(add, "nonsense")  # type: ignore[misc]
    await client.enqueue(add)  # type: ignore[arg-type]
    await client.enqueue(ping, Sum(1, 2))  # type: ignore[misc]
    await client.enqueue_many(add, [Sum(1, 2), Welcome("y")])  # type: ignore[misc]
    await client.enqueue_many(add, [Sum(1, 2), {"a": 1, "b": 2}])  # type: ignore[misc]
    await client.enqueue_many(add, [Sum(1, 2), Sum(3, "4")])  # type: ignore[arg-type]
    job = await client.enqueue(add, Sum(1, 2))
    text: str = await job.result()  # type: ignore[assignment]
    del text
