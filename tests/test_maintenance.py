"""Retention (the sweeper, ``purge``) and the dead-letter tools, through the public API."""

from __future__ import annotations

import datetime as dt
import json
import os
from functools import partial
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

import trioforge
from tests.support.fast import FAST
from trioforge import (
    CronContext,
    JobContext,
    JobState,
    Queue,
    Registry,
    Retention,
    Retry,
    WorkflowContext,
)
from trioforge._cli import main
from trioforge.storage import Backend
from trioforge.testing import open_test_runtime, run

RUNS: dict[int, int] = {}


def make_registry() -> Registry:
    registry = Registry()

    @registry.job("ok")
    async def ok(ctx: JobContext, n: int) -> int:
        RUNS[n] = RUNS.get(n, 0) + 1
        return n

    @registry.job("boom", retry=Retry(max_attempts=1))
    async def boom(ctx: JobContext, n: int) -> None:
        raise ValueError(f"boom {n}")

    @registry.job("kept", queue="keep")
    async def kept(ctx: JobContext) -> None:
        pass

    return registry


def test_the_sweeper_deletes_finished_jobs_past_their_retention() -> None:
    async def main() -> None:
        retention = Retention(completed=dt.timedelta(seconds=10), cancelled=None, dead=100)
        keep = Queue(2, retention=Retention(completed=None, cancelled=None, dead=None))
        async with open_test_runtime(
            make_registry(), queues={"default": 2, "keep": keep}, retention=retention,
            sweep_interval=5,
        ) as rt:  # fmt: skip
            done = await rt.enqueue("ok", 1)
            dead = await rt.enqueue("boom", 2)
            later = await rt.enqueue("ok", 3, delay=1000)
            cancelled = await rt.enqueue("ok", 4, delay=1000)
            await rt.cancel(cancelled)
            kept = await rt.enqueue("kept")
            await rt.run_until_idle()
            await rt.advance(30)
            with pytest.raises(trioforge.JobNotFoundError):
                await rt.get(done)
            assert (await rt.get(dead)).status is JobState.DEAD
            assert (await rt.get(later)).status is JobState.SCHEDULED
            assert (await rt.get(cancelled)).status is JobState.CANCELLED  # kept forever
            assert (await rt.get(kept)).status is JobState.COMPLETED  # its queue keeps all
            await rt.advance(100)
            with pytest.raises(trioforge.JobNotFoundError):
                await rt.get(dead)

    run(main)


def test_the_sweeper_works_off_a_backlog_without_waiting_an_interval_per_pass() -> None:
    """A pass deletes at most 20 batches of 500 per state: at one pass per interval, a
    queue finishing more than 10,000 jobs an interval would outgrow its retention for
    ever. A pass that leaves a backlog is followed by the next at once."""

    async def main() -> None:
        retention = Retention(completed=dt.timedelta(seconds=10))
        async with open_test_runtime(make_registry(), retention=retention, sweep_interval=60) as rt:
            for start in range(0, 25_000, 5_000):
                await rt.enqueue_many("ok", range(start, start + 5_000))
            await rt.run_until_idle()
            assert (await rt.stats()).count("completed") == 25_000
            await rt.advance(61)  # one sweep is due
            assert (await rt.stats()).count("completed") == 0

    run(main)


def test_a_jobs_own_retention_overrides_its_queues() -> None:
    """``@registry.job(retain=...)`` and ``enqueue(..., retain=...)``, in virtual time."""
    registry = make_registry()

    @registry.job("brief", retain=Retention(completed=20, dead=None))
    async def brief(ctx: JobContext, fail: bool) -> None:
        if fail:
            raise trioforge.Discard("no")

    async def main() -> None:
        forever = Retention(completed=None, cancelled=None, dead=None, compensated=None)
        async with open_test_runtime(registry, retention=forever, sweep_interval=5) as rt:
            declared = await rt.enqueue(brief, False)
            kept_dead = await rt.enqueue(brief, True)
            given = await rt.enqueue(brief, False, retain=dt.timedelta(seconds=2))
            plain = await rt.enqueue("ok", 1)
            short = await rt.enqueue("ok", 2, retain=8)
            await rt.run_until_idle()
            await rt.advance(12)  # a sweep past 8 s (at 10)
            for gone in (given, short):
                with pytest.raises(trioforge.JobNotFoundError):
                    await rt.get(gone)
            assert (await rt.get(declared)).status is JobState.COMPLETED
            await rt.advance(15)  # a sweep past 20 s (at 25)
            with pytest.raises(trioforge.JobNotFoundError):
                await rt.get(declared)
            await rt.advance(10_000)
            assert (await rt.get(kept_dead)).status is JobState.DEAD  # None: kept
            assert (await rt.get(plain)).status is JobState.COMPLETED  # the queue keeps it
            with pytest.raises(trioforge.InvalidArgumentError, match="retain"):
                await rt.enqueue("ok", 3, retain=-1)
        with pytest.raises(trioforge.ConfigurationError, match="retain"):
            Registry().job("bad", retain="soon")  # type: ignore[arg-type]

    run(main)


async def test_retention_under_concurrent_enqueue_loses_no_unfinished_job(
    sqlite_url: str,
) -> None:
    RUNS.clear()
    at_once = Retention(completed=0, cancelled=0, dead=0)
    async with trioforge.open_runtime(
        make_registry(), database=sqlite_url, retention=at_once, sweep_interval=0.01, **FAST
    ) as rt:
        later = []
        for n in range(300):
            if n % 3 == 0:
                later.append(await rt.enqueue("ok", n, delay=3600))
            else:
                await rt.enqueue("ok", n)
            if n % 20 == 0:
                await trio.sleep(0.01)  # let claims and sweeps interleave with the enqueues
        with trio.fail_after(30):
            # Polling storage (the sweeper's deletes have no event), bounded by the deadline.
            while (await rt.stats()).count(JobState.COMPLETED) or len(RUNS) < 200:  # noqa: ASYNC110
                await trio.sleep(0.02)
        for job_id in later:
            assert (await rt.get(job_id)).status is JobState.SCHEDULED
    assert {n: 1 for n in range(300) if n % 3} == RUNS  # each ran once, none lost


async def test_dead_letter_tools_retry_and_discard_in_bulk(database: str | Backend) -> None:
    async with trioforge.open_runtime(make_registry(), database=database, **FAST) as rt:
        dead = [await rt.enqueue("boom", n) for n in range(3)]
        for job_id in dead:
            await rt.wait(job_id)
        assert sorted(await rt.retry_many(name="boom")) == dead
        for job_id in dead:
            info = await rt.wait(job_id)
            assert (info.status, info.attempt) == (JobState.DEAD, 1)
        assert await rt.retry_many(queue="nowhere") == []
        pending = [await rt.enqueue("ok", n, delay=3600) for n in range(3)]
        assert sorted(await rt.discard_many(status="scheduled", reason="spam")) == pending
        assert {(await rt.get(j)).error for j in pending} == {"spam"}
        assert await rt.purge(status="dead", older_than=0) == 6
        assert await rt.list(status="dead") == []
        with pytest.raises(trioforge.InvalidArgumentError, match="dead or cancelled"):
            await rt.retry_many(status="completed")
        with pytest.raises(trioforge.InvalidArgumentError, match="finished"):
            await rt.purge(status="available", older_than=0)


def test_the_cli_retries_discards_and_purges_in_bulk(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def seed() -> list[int]:
        async with trioforge.open_runtime(make_registry(), database=url, **FAST) as rt:
            dead = [(await rt.enqueue("boom", n)).id for n in range(2)]
            for job_id in dead:
                await rt.wait(job_id)
            await rt.enqueue("ok", 9, delay=3600)
            return dead

    dead = trio.run(seed)
    runner = CliRunner()
    result = runner.invoke(main, ["jobs", "retry-all", "--since", "1h", "--database", url])
    assert (result.exit_code, result.output.strip()) == (0, "2 job(s) available again")
    result = runner.invoke(main, ["jobs", "discard-all", "--queue", "default", "--database", url])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "3 job(s) dead (discarded by operator)"
    args = ["jobs", "purge", "--status", "dead", "--older-than", "7d", "--database", url]
    assert runner.invoke(main, args).output.strip() == "0 job(s) deleted"
    args[5] = "0s"
    assert runner.invoke(main, args).output.strip() == "3 job(s) deleted"
    bad = runner.invoke(main, ["jobs", "purge", "--status", "dead", "--older-than", "soon"])
    assert bad.exit_code != 0
    assert "duration" in bad.output
    del dead


async def test_workers_list_shows_each_process_with_its_pools_and_running_jobs(
    sqlite_url: str,
) -> None:
    registry = Registry()
    gate = trio.Event()
    started = trio.Event()

    @registry.job("wait")
    async def wait(ctx: JobContext) -> None:
        started.set()
        await gate.wait()

    async with trioforge.open_runtime(
        registry, database=sqlite_url, queues={"default": 3}, capabilities={"gpu"},
        owner="alpha", **FAST,
    ) as rt:  # fmt: skip
        job_id = await rt.enqueue(wait)
        await started.wait()
        rt.resize("default", 5)
        with trio.fail_after(10):  # the next beats carry the new pool and the running job
            while True:  # polling the registry row: there is no event for a beat
                [me] = await rt.processes()
                if me.details is not None and me.details.pools == (("default", 5),):
                    break
                await trio.sleep(FAST["heartbeat_interval"])
        args = ["workers", "list", "--database", sqlite_url]
        result = await trio.to_thread.run_sync(lambda: CliRunner().invoke(main, args))
        gate.set()
        await rt.wait(job_id)
    assert me.details.running == 1
    assert (me.details.pid, me.details.capabilities) == (os.getpid(), ("gpu",))
    line = result.output.strip()
    assert line.startswith(f"alpha  {me.details.host} pid {os.getpid()}  queues default=5")
    assert "capabilities gpu" in line
    assert line.endswith("running 1")
    empty = await trio.to_thread.run_sync(lambda: CliRunner().invoke(main, args))
    assert empty.output.strip() == "(no workers)"


def test_jobs_show_prints_every_attempts_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    registry = Registry()

    @registry.job("flaky", retry=Retry(max_attempts=3, base_delay=0))
    async def flaky(ctx: JobContext) -> None:
        raise ConnectionError(f"attempt {ctx.attempt} failed")

    async def go() -> tuple[int, list[str]]:
        async with trioforge.open_runtime(registry, database=url, **FAST) as rt:
            job = await rt.enqueue(flaky)
            await rt.wait(job)
            return job.id, [a.error for a in await rt.attempts(job)]

    job_id, errors = trio.run(go)
    assert [e.strip().splitlines()[-1] for e in errors] == [
        f"ConnectionError: attempt {n} failed" for n in (1, 2, 3)
    ]
    output = CliRunner().invoke(main, ["jobs", "show", str(job_id), "--database", url]).output
    assert output.index("attempt 1: started") < output.index("attempt 2: started")
    assert "attempt 1 failed" in output
    assert "attempt 2 failed" in output
    assert output.rindex("error:") > output.index("attempt 2: started")
    assert output.rstrip().endswith("ConnectionError: attempt 3 failed")


def test_a_workflows_and_a_cron_schedules_own_retention() -> None:
    """``@registry.workflow(retain=...)`` and ``@registry.cron(retain=...)``, in virtual
    time: a run goes with its record and a signal it never took; each tick's job goes once
    its own retention ran out, though the queue keeps everything."""
    registry = make_registry()

    @registry.workflow("brief", retain=Retention(completed=20, compensated=None))
    async def brief(ctx: WorkflowContext, n: int) -> int:
        await ctx.wait_for_signal("go")
        return await ctx.step("double", lambda: n * 2)

    @registry.cron("* * * * *", name="minutely", retain=dt.timedelta(seconds=30))
    async def minutely(ctx: CronContext) -> None:
        pass

    async def main() -> None:
        forever = Retention(completed=None, cancelled=None, dead=None, compensated=None)
        async with open_test_runtime(registry, retention=forever, sweep_interval=5) as rt:
            run_id = (await rt.enqueue(brief, 3)).id  # at 0 s; the first tick is at 40 s
            await rt.run_until_idle()
            await rt.signal(run_id, "extra")
            await rt.signal(run_id, "go")
            await rt.run_until_idle()
            done = await rt.workflow(run_id)
            assert (done.job.status, done.job.result) == (JobState.COMPLETED, 6)
            assert [name for name, _ in done.pending_signals] == ["extra"]
            assert done.job.retain == {  # Retention's defaults for the states not given
                "completed": 20.0, "cancelled": 7 * 86400.0, "dead": 30 * 86400.0,
                "compensated": None,
            }  # fmt: skip
            await rt.advance(12)
            assert (await rt.get(run_id)).status is JobState.COMPLETED
            await rt.advance(15)  # a sweep past 20 s (at 25)
            with pytest.raises(trioforge.JobNotFoundError):
                await rt.workflow(run_id)
            await rt.advance(20)  # 47 s: the 40 s tick ran
            [tick] = await rt.list(name="minutely")
            assert tick.status is JobState.COMPLETED
            states = ["completed", "cancelled", "dead", "compensated"]
            assert tick.retain == dict.fromkeys(states, 30.0)
            await rt.advance(30)  # 77 s: a sweep past 70 s (at 75), before the next tick
            assert await rt.list(name="minutely") == []
            assert (await rt.get(await rt.enqueue("ok", 1))).retain is None

    run(main)


def test_jobs_show_prints_a_jobs_own_retention(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def go() -> tuple[int, int]:
        async with trioforge.open_client(url, registry=make_registry()) as client:
            kept = Retention(completed=90, cancelled=dt.timedelta(days=7), dead=None)
            own = await client.enqueue("ok", 1, retain=kept)
            return own.id, (await client.enqueue("ok", 2)).id

    own, plain = trio.run(go)
    show = partial(CliRunner().invoke, main)
    shown = show(["jobs", "show", str(own), "--database", url]).output
    as_json = json.loads(show(["jobs", "show", str(own), "--json", "--database", url]).output)
    plain_shown = show(["jobs", "show", str(plain), "--database", url]).output
    assert "retain: completed 90s, cancelled 7d, dead forever, compensated 30d" in shown
    assert as_json["retain"] == {
        "completed": 90.0, "cancelled": 604800.0, "dead": None, "compensated": 2592000.0,
    }  # fmt: skip
    assert "retain: its queue's retention" in plain_shown


async def test_a_declared_retention_is_stored_with_each_run(database: str | Backend) -> None:
    """A workflow's declared ``retain``, or its enqueue's, on every backend: what
    ``JobInfo.retain`` reads back is what the sweeper goes by."""
    registry = make_registry()

    @registry.workflow("checkout", retain=dt.timedelta(minutes=5))
    async def checkout(ctx: WorkflowContext) -> None:
        pass

    states = ["completed", "cancelled", "dead", "compensated"]
    async with trioforge.open_client(database, registry=registry) as client:
        declared = await client.enqueue(checkout, delay=3600)
        given = await client.enqueue("checkout", retain=Retention(dead=None), delay=3600)
        plain = await client.enqueue("ok", 1, delay=3600)
        assert (await client.get(declared)).retain == dict.fromkeys(states, 300.0)
        assert (await client.get(given)).retain == {
            "completed": 86400.0, "cancelled": 604800.0, "dead": None, "compensated": 2592000.0,
        }  # fmt: skip
        assert (await client.get(plain)).retain is None
        assert [run.retain is not None for run in await client.runs()] == [True, True]
