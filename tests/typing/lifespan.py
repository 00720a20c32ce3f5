"""A lifespan's state, typed: ``Registry[State]`` checks what the lifespan yields and the
``ctx`` its handlers take; ``ctx.state`` is ``State`` in them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, assert_type

import attrs

from trioforge import CronContext, JobContext, Registry, WorkflowContext


@attrs.frozen
class State:
    pool: str


registry: Registry[State] = Registry()


@registry.lifespan
async def resources() -> AsyncIterator[State]:
    yield State("pool")


@registry.job("query")
async def query(ctx: JobContext[State], sql: str) -> str:
    assert_type(ctx.state, State)
    return ctx.state.pool + sql


@registry.job("bare")
async def bare(ctx: JobContext) -> None:
    assert_type(ctx.state, Any)  # a bare context: the state is Any


@registry.cron("0 * * * *")
async def hourly(ctx: CronContext[State]) -> None:
    assert_type(ctx.state, State)


@registry.workflow("flow")
async def flow(ctx: WorkflowContext[State], n: int) -> int:
    assert_type(ctx.state, State)
    return n


@registry.job("other")  # type: ignore[arg-type]
async def other(ctx: JobContext[int]) -> None:
    """A handler expecting another state than its registry's lifespan yields."""


@registry.lifespan  # type: ignore[arg-type]
async def wrong() -> AsyncIterator[int]:
    """A lifespan yielding another type than its registry declares."""
    yield 1


@registry.lifespan
@asynccontextmanager
async def managed() -> AsyncIterator[State]:
    """The asynccontextmanager form type-checks the same way."""
    yield State("pool")


untyped = Registry()  # Registry[Any]: any state, any lifespan


@untyped.lifespan
async def anything() -> AsyncIterator[int]:
    yield 1


@untyped.job("any")
async def any_state(ctx: JobContext[str]) -> None:
    assert_type(ctx.state, str)
