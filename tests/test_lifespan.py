"""A registry's lifespan: opened once per runtime before the first claim, closed after the
pools drained, its value reaching every kind of handler as ``ctx.state``."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

import trioforge
from tests.support.fast import FAST
from trioforge import (
    ConfigurationError,
    CronContext,
    InvalidStateError,
    JobContext,
    JobState,
    LifespanError,
    Registry,
    Retry,
    WorkflowContext,
)
from trioforge.storage import Backend
from trioforge.testing import open_test_runtime, perform


@attrs.define
class Resources:
    """What an application's lifespan might hold: here, a name and a trail of events."""

    name: str
    events: list[str]


async def idle(ctx: JobContext) -> None:
    """A job, so that a runtime has a queue to serve (and so runs the lifespan)."""


def closing_fails() -> Registry:
    registry = Registry()

    @registry.lifespan
    async def resources() -> AsyncIterator[str]:
        try:
            yield "state"
        finally:
            raise OSError("flush failed")

    registry.job("idle")(idle)
    return registry


def tracked(events: list[str]) -> Registry[Resources]:
    """A registry whose lifespan records its opening and closing in ``events``, and whose
    job records that it ran (with the state it saw) and can be held by an event."""
    registry: Registry[Resources] = Registry()

    @registry.lifespan
    async def resources() -> AsyncIterator[Resources]:
        events.append("open")
        try:
            yield Resources("pool", events)
        finally:
            await trio.lowlevel.checkpoint()  # a real close awaits (shielded from cancels)
            events.append("close")

    return registry


def test_a_registry_has_one_lifespan_of_the_right_kind() -> None:
    registry = tracked([])

    @asynccontextmanager
    async def another() -> AsyncIterator[Resources]:
        yield Resources("another", [])

    with pytest.raises(ConfigurationError, match="already has lifespan"):
        registry.lifespan(another)

    async def not_a_generator() -> None:
        return None

    with pytest.raises(ConfigurationError, match="async generator function"):
        Registry().lifespan(not_a_generator)  # type: ignore[arg-type]


async def test_opened_before_the_first_job_and_closed_after_the_pools_drained(
    database: str | Backend,
) -> None:
    events: list[str] = []
    registry = tracked(events)
    started, release = trio.Event(), trio.Event()

    @registry.job("hold", retry=Retry(max_attempts=1))
    async def hold(ctx: JobContext[Resources], label: str) -> str:
        ctx.state.events.append(f"run {label} with {ctx.state.name}")
        started.set()
        await release.wait()
        ctx.state.events.append(f"done {label}")
        return label

    async def release_once_draining() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the block below is waiting on the job
        release.set()

    async with trio.open_nursery() as nursery:
        async with trioforge.open_runtime(
            registry, database=database, queues={"default": 1}, **FAST
        ) as rt:
            assert events == ["open"]
            job_id = await rt.enqueue(hold, "a")
            await started.wait()
            nursery.start_soon(release_once_draining)
        assert events == ["open", "run a with pool", "done a", "close"]
    async with trioforge.open_client(database) as client:
        assert (await client.get(job_id)).status is JobState.COMPLETED


async def test_every_kind_of_handler_reads_the_state(autojump_clock: trio.abc.Clock) -> None:
    events: list[str] = []
    registry = tracked(events)

    @registry.job("plain")
    async def plain(ctx: JobContext[Resources]) -> str:
        return ctx.state.name

    @registry.cron("* * * * *", name="tick")
    async def tick(ctx: CronContext[Resources]) -> None:
        ctx.state.events.append(f"tick with {ctx.state.name}")

    @registry.workflow("flow")
    async def flow(ctx: WorkflowContext[Resources], n: int) -> str:
        return f"{ctx.state.name} {n}"

    async with open_test_runtime(registry) as rt:
        first, run = await rt.enqueue(plain), await rt.enqueue(flow, 3)
        await rt.advance(61.0)
        await rt.run_until_idle()
        assert (await rt.get(first)).result == "pool"
        assert (await rt.get(run)).result == "pool 3"
        assert "tick with pool" in events
    assert events[0] == "open"
    assert events[-1] == "close"
    assert events.count("open") == events.count("close") == 1


async def test_a_client_does_not_run_it(database: str | Backend) -> None:
    events: list[str] = []
    registry = tracked(events)
    async with trioforge.open_runtime(registry, database=database, queues={}):
        pass
    async with trioforge.open_client(database, registry=registry):
        pass
    assert events == []


async def test_a_failing_setup_fails_open_runtime_with_the_error(
    database: str | Backend,
) -> None:
    registry = Registry()
    ran: list[str] = []

    @registry.lifespan
    async def resources() -> AsyncIterator[None]:
        raise ConnectionRefusedError("pool at db:5432 refused\nsecond line")
        yield None

    @registry.job("never")
    async def never(ctx: JobContext) -> None:
        ran.append("ran")

    async with trioforge.open_client(database) as client:
        await client.enqueue(never)
    with pytest.raises(LifespanError) as caught:
        async with trioforge.open_runtime(registry, database=database, **FAST):
            pytest.fail("the block ran without its lifespan")
    assert str(caught.value) == (
        "lifespan test_a_failing_setup_fails_open_runtime_with_the_error.<locals>.resources "
        "failed to start: ConnectionRefusedError: pool at db:5432 refused"
    )
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert ran == []
    async with trioforge.open_client(database) as client:
        assert await client.processes() == []  # it never registered as a worker


async def test_a_failing_close_after_a_clean_exit_is_raised(database: str | Backend) -> None:
    registry = closing_fails()

    with pytest.raises(LifespanError, match="failed to close: OSError: flush failed") as caught:
        async with trioforge.open_runtime(registry, database=database, **FAST):
            pass
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_failing_close_does_not_hide_why_the_runtime_stopped(
    database: str | Backend, caplog: pytest.LogCaptureFixture
) -> None:
    registry = closing_fails()

    with pytest.raises(KeyError, match="the application's own error"):
        async with trioforge.open_runtime(registry, database=database, **FAST):
            raise KeyError("the application's own error")
    [record] = [r for r in caplog.records if "failed to close" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "OSError: flush failed" in record.getMessage()


async def test_cancelled_runtime_closes_its_lifespan_shielded(database: str | Backend) -> None:
    events: list[str] = []
    registry = tracked(events)
    started = trio.Event()

    @registry.job("forever")
    async def forever(ctx: JobContext[Resources]) -> None:
        started.set()
        await trio.sleep_forever()

    with trio.CancelScope() as scope:
        async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
            await rt.enqueue(forever)
            await started.wait()
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert events == ["open", "close"]  # the close awaited despite the cancel


async def test_a_cancelled_setup_is_a_cancel_not_an_error(database: str | Backend) -> None:
    registry = Registry()
    entered = trio.Event()

    @registry.lifespan
    async def resources() -> AsyncIterator[None]:
        entered.set()
        await trio.sleep_forever()
        yield None

    registry.job("idle")(idle)

    async with trio.open_nursery() as nursery:

        async def stop_once_entered() -> None:
            await entered.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_once_entered)
        async with trioforge.open_runtime(registry, database=database, **FAST):
            pytest.fail("the block ran without its lifespan")
    assert nursery.cancel_scope.cancelled_caught


async def test_state_without_a_lifespan_names_the_fix() -> None:
    registry = Registry()

    @registry.job("reads")
    async def reads(ctx: JobContext) -> str:
        return str(ctx.state)

    with pytest.raises(InvalidStateError, match=r"declare one with @registry.lifespan"):
        await perform(reads)
    assert await perform(reads, state="given") == "given"


WORKER_APP = """
from pathlib import Path
import trioforge
registry = trioforge.Registry()
@registry.lifespan
async def resources():
    Path("trail").write_text("open\\n")
    yield {"greeting": "hello"}
    with Path("trail").open("a") as trail:
        trail.write("close\\n")
@registry.job("greet")
async def greet(ctx: trioforge.JobContext, user: str) -> str:
    with Path("trail").open("a") as trail:
        trail.write("run\\n")
    return ctx.state["greeting"] + " " + user
"""


async def greet_handler(ctx: JobContext, user: str) -> str:
    raise AssertionError("run by the worker process, not here")


@pytest.mark.slow
async def test_worker_runs_the_lifespan_around_its_jobs(tmp_path: Path) -> None:
    (tmp_path / "lifeapp.py").write_text(WORKER_APP)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    greet = Registry().job("greet")(greet_handler)
    command = [sys.executable, "-m", "trioforge", "worker", "lifeapp:registry", "--database", url]
    async with trioforge.open_client(url) as client:
        job = await client.enqueue(greet, "ada")
        proc = await trio.lowlevel.open_process(command, cwd=tmp_path, stderr=subprocess.DEVNULL)
        with trio.fail_after(30):
            assert (await client.wait(job)).result == "hello ada"
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await proc.wait() == 0
    assert (tmp_path / "trail").read_text().split() == ["open", "run", "close"]


@pytest.mark.slow
async def test_worker_reports_a_failing_setup_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "lifemod.py").write_text(
        "import trioforge\n"
        "registry = trioforge.Registry()\n"
        "@registry.lifespan\n"
        "async def resources():\n"
        "    raise ConnectionRefusedError('cache at 127.0.0.1:6379 refused')\n"
        "    yield\n"
        "@registry.job('idle')\n"
        "async def idle(ctx: trioforge.JobContext) -> None:\n"
        "    pass\n"
    )
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    command = [sys.executable, "-m", "trioforge", "worker", "lifemod:registry", "--database", url]
    with trio.fail_after(60):
        done = await trio.run_process(
            command, cwd=tmp_path, capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ},
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == [
        "error: lifespan resources failed to start: ConnectionRefusedError: cache at "
        "127.0.0.1:6379 refused"
    ]
