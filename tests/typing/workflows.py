"""Typed workflows: steps typed from their function, signals, children."""

from __future__ import annotations

import datetime as dt
from typing import assert_type

import attrs

import trioforge
from trioforge import (
    ChildHandle,
    Job,
    JobContext,
    Registry,
    WorkflowContext,
    WorkflowDefinition,
)

registry = Registry()


@attrs.frozen
class Signup:
    user: str
    email: str


@attrs.frozen
class Click:
    at: str


def make_token(user: str) -> str:
    return f"token-{user}"


async def send_mail(email: str, token: str) -> int:
    return len(email + token)


def forget(email: str, token: str) -> None:
    del email, token


@registry.job("welcome")
async def welcome(ctx: JobContext, user: str) -> int:
    return len(user)


@registry.workflow("verify", timeout=dt.timedelta(days=1), retain=trioforge.Retention(dead=None))
async def verify(ctx: WorkflowContext, req: Signup) -> str:
    token = await ctx.step("token", make_token, req.user)
    assert_type(token, str)
    sent = await ctx.step("mail", send_mail, req.email, token, compensate=forget)
    assert_type(sent, int)
    await ctx.step("mail-again", send_mail, req.email, 5)  # type: ignore[arg-type, call-arg]
    await ctx.step("token-again", make_token)  # type: ignore[arg-type, call-arg]
    click = await ctx.wait_for_signal("clicked", type=Click, timeout=dt.timedelta(hours=1))
    assert_type(click, Click | None)
    child = await ctx.start_child(welcome, req.user)
    assert_type(child, ChildHandle[int])
    await ctx.start_child(welcome, req)  # type: ignore[misc]
    assert_type(await ctx.gather(child), list[int])
    await ctx.sleep(dt.timedelta(minutes=1))
    return await ctx.step("done", make_token, req.email)  # a step's value, returned as is


@registry.workflow("no-payload", retain=dt.timedelta(hours=1))
async def no_payload(ctx: WorkflowContext) -> None:
    return None


assert_type(verify, WorkflowDefinition[Signup, str])
assert_type(no_payload, WorkflowDefinition[None, None])


async def start(client: trioforge.Client) -> None:
    run = await client.enqueue(verify, Signup("ada", "ada@example.com"))
    assert_type(run, Job[str])
    assert_type(await run.result(), str)
    await client.signal(run, "clicked", Click("now"))
    await client.workflow(run)
    await client.enqueue(verify, "ada")  # type: ignore[misc]
