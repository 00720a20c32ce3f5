"""A durable workflow on an embedded SQLite file: verify two new accounts by email.

Run it with `make demo` (or `python examples/workflow_verification.py`). Each run makes a
token, stores it (undone by deleting it if the run fails), mails it through a flaky mail
server (the step is retried), then waits for the "email_clicked" signal with a timeout.
Ada's click is sent by this program from another task a moment later: her run sleeps
durably for a second, starts three child jobs and gathers their results. Nobody clicks
Bob's link: his wait times out, the run raises Discard and its stored token is deleted,
so it ends ``compensated``. The program prints what happens, then each run's record as
``client.workflow(run_id)`` returns it, and exits 0 in a few seconds.

The workflow's own code runs again from the top every time the run resumes (after the
retry's backoff, the signal, the sleep, the children), and the record answers the calls
already made: that is why the printing happens inside steps, whose functions run once.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sys
from pathlib import Path

import attrs
import trio

import trioforge
from trioforge import JobContext, JobState, Retry, WorkflowContext

registry = trioforge.Registry()
mail_sent: dict[str, trio.Event] = {"ada": trio.Event(), "bob": trio.Event()}
tokens: dict[str, str] = {}  # the "token table" the store step writes and its undo clears
mail_attempts: dict[str, int] = {}


@attrs.frozen
class VerifyRequest:
    user: str
    email: str


@attrs.frozen
class Welcome:
    user: str
    part: str


def say(text: str) -> None:
    print(f"  {text}", flush=True)


def make_token(user: str) -> str:
    # Random values are read inside a step: the replay gets the recorded token back.
    token = secrets.token_hex(4)
    say(f"[{user}] token {token} made")
    return token


def store_token(user: str, token: str) -> None:
    tokens[user] = token
    say(f"[{user}] token stored")


def delete_token(user: str, token: str) -> None:
    tokens.pop(user, None)
    say(f"[{user}] compensation: token {token} deleted")


async def send_mail(user: str, email: str, token: str, key: str, attempt: int) -> str:
    mail_attempts[user] = mail_attempts.get(user, 0) + 1
    if attempt == 1:
        say(f"[{user}] mail server busy (attempt 1); the step will be retried")
        raise ConnectionError("mail server busy")
    # `key` is ctx.step_key: the same on every attempt, so the mail service can drop repeats.
    say(f"[{user}] mailed {token} to {email} (attempt {attempt}, key {key})")
    mail_sent[user].set()
    return f"mail-{user}"


@registry.job("accounts:welcome")
async def welcome(ctx: JobContext, w: Welcome) -> str:
    say(f"[{w.user}] child job {ctx.job_id}: {w.part}")
    return f"{w.part} done"


@registry.workflow("accounts:verify", version=1, timeout=dt.timedelta(minutes=1))
async def verify(ctx: WorkflowContext, req: VerifyRequest) -> str:
    token = await ctx.step("generate_token", make_token, req.user)
    await ctx.step("store_token", store_token, req.user, token, compensate=delete_token)
    await ctx.step(
        "send_email",
        lambda: send_mail(req.user, req.email, token, ctx.step_key, ctx.step_attempt),
        retry=Retry(max_attempts=3, base_delay=0.2),
    )
    clicked = await ctx.wait_for_signal("email_clicked", timeout=dt.timedelta(seconds=1.5))
    if clicked is None:
        raise trioforge.Discard("link never clicked")  # runs the compensations
    await ctx.step("confirm", say, f"[{req.user}] clicked at {clicked['at']}; sleeping 1 s")
    await ctx.sleep(dt.timedelta(seconds=1))  # durable: the run holds no worker meanwhile
    parts = ["profile", "newsletter", "tour"]
    children = [await ctx.start_child(welcome, Welcome(req.user, part)) for part in parts]
    results = await ctx.gather(*children)  # fan-in, durable
    await ctx.step("report", say, f"[{req.user}] children finished: {results}")
    return "verified"


async def click_later(rt: trioforge.Client, user: str, run: trioforge.Job[str]) -> None:
    """The user opens the mail a moment after it was sent and clicks the link."""
    await mail_sent[user].wait()
    await trio.sleep(0.3)  # the user reading the mail
    say(f"[{user}] clicks the link: signal sent to run {run.id}")
    await rt.signal(run, "email_clicked", {"at": dt.datetime.now(dt.UTC).strftime("%T")})


def print_record(view: trioforge.WorkflowInfo) -> None:
    print(f"run {view.job.id} ({view.name} v{view.version}): {view.status}")
    for s in view.steps:
        detail = s.error.strip().splitlines()[-1] if s.error else s.result
        if s.kind in ("sleep", "signal") and s.wake_at is not None:
            due = dt.datetime.fromtimestamp(s.wake_at, dt.UTC).strftime("%T")
            detail = f"{detail} (due {due})"
        print(f"  {s.seq:>2} {s.kind:12} {s.name:16} {s.status:11} x{s.attempts}  {detail}")


async def main() -> int:
    database = Path("workflow_verification.db")
    for leftover in database.parent.glob(database.name + "*"):
        leftover.unlink()  # start from an empty file so every run shows the same story
    print(f"trioforge workflow demo on sqlite:///{database}")
    async with trioforge.open_runtime(
        registry, database=f"sqlite:///{database}", queues={"default": 4}
    ) as rt:
        runs = {
            "ada": await rt.enqueue(verify, VerifyRequest("ada", "ada@example.com")),
            "bob": await rt.enqueue(verify, VerifyRequest("bob", "bob@example.com")),
        }
        print(f"started runs { ({user: run.id for user, run in runs.items()}) }")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(click_later, rt, "ada", runs["ada"])
                ends = {user: await rt.wait(run_id) for user, run_id in runs.items()}
        print("records:")
        for run_id in runs.values():
            print_record(await rt.workflow(run_id))
    outcomes = {user: (info.status, info.result) for user, info in ends.items()}
    expected = {"ada": (JobState.COMPLETED, "verified"), "bob": (JobState.COMPENSATED, None)}
    if outcomes != expected or "bob" in tokens or mail_attempts != {"ada": 2, "bob": 2}:
        print(f"unexpected: {outcomes}, tokens {tokens}, mails {mail_attempts}", file=sys.stderr)
        return 1
    print("ada is verified; bob's run was undone (compensated)")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
