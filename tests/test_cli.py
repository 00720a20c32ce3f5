"""The ``trioforge`` command on real SQLite files."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import trio
import trio_asyncio
from click.testing import CliRunner, Result

import trioforge
from tests.support.postgres import URL as PG_URL
from tests.support.postgres import require_postgres
from trioforge import JobContext, JobState, Registry
from trioforge._cli import main
from trioforge._cli_worker import WORKER_GC_THRESHOLD
from trioforge.storage.postgres import MIGRATIONS as PG_MIGRATIONS
from trioforge.storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

registry = Registry()


@registry.job("cli:echo")
async def echo(ctx: JobContext, text: str) -> str:
    return text


def seed(url: str, texts: list[str], **options: object) -> list[int]:
    async def go() -> list[int]:
        async with trioforge.open_client(url) as client:
            jobs = [await client.enqueue(echo, t, **options) for t in texts]  # type: ignore[call-overload]
            return [job.id for job in jobs]

    return trio.run(go)


def state(url: str, job_id: int) -> JobState:
    async def go() -> JobState:
        async with trioforge.open_client(url) as client:
            return (await client.get(job_id)).status

    return trio.run(go)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


def test_db_migrate_then_status(url: str) -> None:
    fresh = cli("db", "status", "--database", url)
    assert fresh.exit_code == 1
    assert "trioforge db migrate" in fresh.output
    migrated = cli("db", "migrate", "--database", url)
    assert migrated.exit_code == 0, migrated.output
    assert f"schema at version {len(SQLITE_MIGRATIONS)}" in migrated.output
    status = cli("db", "status", "--database", url)
    assert status.exit_code == 0
    assert "up to date" in status.output


def test_jobs_list_and_show(url: str) -> None:
    first, second = seed(url, ["alpha", "beta"])
    seed(url, ["later"], delay=3600)
    listed = cli("jobs", "list", "--database", url)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["3", str(second), str(first)]
    scheduled = cli("jobs", "list", "--status", "scheduled", "--json", "--database", url)
    assert [json.loads(line)["payload"] for line in scheduled.output.splitlines()] == ["later"]
    shown = cli("jobs", "show", str(first), "--database", url)
    assert shown.exit_code == 0
    assert 'payload: "alpha"' in shown.output
    assert "status: available" in shown.output


def test_cancel_retry_discard(url: str) -> None:
    job_id, other = seed(url, ["x", "y"])
    assert cli("jobs", "cancel", str(job_id), "--database", url).exit_code == 0
    assert state(url, job_id) is JobState.CANCELLED
    again = cli("jobs", "cancel", str(job_id), "--database", url)
    assert again.exit_code == 1
    assert f"job {job_id} had already finished (cancelled)" in again.output
    assert cli("jobs", "retry", str(job_id), "--database", url).exit_code == 0
    assert state(url, job_id) is JobState.AVAILABLE
    refused = cli("jobs", "retry", str(job_id), "--database", url)
    assert refused.exit_code == 1
    assert "only dead or cancelled" in refused.output
    discarded = cli("jobs", "discard", str(other), "--reason", "spam", "--database", url)
    assert discarded.exit_code == 0
    assert state(url, other) is JobState.DEAD


def test_errors_are_one_line_without_a_traceback(url: str) -> None:
    seed(url, ["x"])
    missing = cli("jobs", "show", "4242", "--database", url)
    assert (missing.exit_code, missing.output) == (1, "error: no job with id 4242\n")
    bad_url = cli("jobs", "list", "--database", "mysql://db")
    assert bad_url.exit_code == 1
    assert bad_url.output.startswith("error: unknown database scheme 'mysql'")
    assert "Traceback" not in bad_url.output


def test_queues_pause_resume_and_list(url: str) -> None:
    seed(url, ["x", "y"])
    paused = cli("queues", "pause", "default", "--database", url)
    assert (paused.exit_code, paused.output) == (0, "queue default: paused\n")
    again = cli("queues", "pause", "default", "--database", url)
    assert "(it already was)" in again.output
    listed = cli("queues", "list", "--database", url)
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split()[:4] == ["QUEUE", "STATE", "SCHEDULED", "AVAILABLE"]
    assert row.split()[:4] == ["default", "paused", "0", "2"]
    resumed = cli("queues", "resume", "default", "--database", url)
    assert (resumed.exit_code, resumed.output) == (0, "queue default: active\n")
    assert cli("queues", "list", "--database", url).output.splitlines()[1].split()[1] == "active"


def test_bad_worker_arguments_are_usage_errors(url: str) -> None:
    for spec in ("emails=-1", "emails", "=3"):
        result = cli("worker", "tests.test_cli:registry", "--queue", spec, "--database", url)
        assert result.exit_code == 2
        assert "NAME=CONCURRENCY" in result.output
    for spec in ("10000,50", "1,2,3,4", "a,b,c", "-1,10,10", "", "\u00b2,1,1"):
        result = cli("worker", "tests.test_cli:registry", "--gc-threshold", spec, "--database", url)
        assert result.exit_code == 2
        assert "G0,G1,G2" in result.output
    not_a_registry = cli("worker", "tests.test_cli:echo", "--database", url)
    assert not_a_registry.exit_code == 1
    assert "is not a trioforge.Registry" in not_a_registry.output
    missing = cli("worker", "no_such_module_here:registry", "--database", url)
    assert missing.exit_code == 1
    assert "cannot import 'no_such_module_here'" in missing.output


async def test_worker_runs_jobs_and_drains_on_sigint(tmp_path: Path) -> None:
    (tmp_path / "climod.py").write_text(
        "import trioforge\n"
        "registry = trioforge.Registry()\n"
        "@registry.job('shout')\n"
        "async def shout(ctx: trioforge.JobContext, text: str) -> str:\n"
        "    return text.upper()\n"
        "@registry.job('frozen')\n"
        "async def frozen(ctx: trioforge.JobContext) -> list[int]:\n"
        "    import gc\n"
        "    return [gc.get_freeze_count(), *gc.get_threshold()]\n"
    )
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    shout = Registry().job("shout")(echo.handler)

    async def freeze_count(ctx: JobContext) -> list[int]:
        raise AssertionError("runs in the worker process")

    frozen = Registry().job("frozen")(freeze_count)
    command = [sys.executable, "-m", "trioforge", "worker", "climod:registry", "--database", url]
    async with trioforge.open_client(url) as client:
        job_id = await client.enqueue(shout, "hi")
        proc = await trio.lowlevel.open_process(
            command, cwd=tmp_path, stderr=subprocess.PIPE, env={**os.environ}
        )
        assert proc.stderr is not None
        seen = b""
        try:
            with trio.fail_after(30):
                while b"ready" not in seen:
                    chunk = await proc.stderr.receive_some()
                    assert chunk, seen
                    seen += chunk
                assert (await client.wait(job_id)).result == "HI"
                # The heap the worker started with is out of the collector's walks, and the
                # collector runs at the worker's thresholds, not Python's (700, 10, 10).
                frozen_id = await client.enqueue(frozen)
                frozen_objects, *threshold = (await client.wait(frozen_id)).result
                assert frozen_objects > 0
                assert tuple(threshold) == WORKER_GC_THRESHOLD != (700, 10, 10)
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:  # a failed check above: leave no worker behind
                proc.kill()
    assert b"queues default=10" in seen


@pytest.fixture(params=["sqlite", "postgres"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL naming a database that does not exist yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sub' / 'new.db'}"
        return
    require_postgres()
    name = f"tf_test_db_{uuid.uuid4().hex[:10]}"
    yield PG_URL.rsplit("/", 1)[0] + "/" + name

    async def drop() -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()

    async def main() -> None:
        async with trio_asyncio.open_loop():
            await trio_asyncio.aio_as_trio(drop)()

    trio.run(main)


def test_db_create_reset_drop(new_database: str) -> None:
    created = cli("db", "create", "--database", new_database)
    assert created.exit_code == 0, created.output
    latest = len(PG_MIGRATIONS if new_database.startswith("postgres") else SQLITE_MIGRATIONS)
    assert f"database created, schema at version {latest}" in created.output
    again = cli("db", "create", "--database", new_database)
    assert "already exists" in again.output
    [job_id] = seed(new_database, ["keep?"])
    refused = CliRunner().invoke(main, ["db", "reset", "--database", new_database], input="n\n")
    assert refused.exit_code == 1  # aborted at the prompt: nothing deleted
    assert state(new_database, job_id) is JobState.AVAILABLE
    reset = cli("db", "reset", "--yes", "--database", new_database)
    assert reset.exit_code == 0, reset.output
    listed = cli("jobs", "list", "--json", "--database", new_database)
    assert listed.output == ""
    dropped = cli("db", "drop", "--yes", "--database", new_database)
    assert dropped.exit_code == 0, dropped.output
    assert cli("db", "status", "--database", new_database).exit_code == 1


def test_passwords_are_not_printed() -> None:
    result = cli("db", "status", "--database", "postgresql://me:hunter2@127.0.0.1:1/x")
    assert result.exit_code == 1
    assert "hunter2" not in result.output


cron_registry = Registry()


@cron_registry.cron("0 9 * * MON-FRI", timezone="America/New_York")
async def standup(ctx: trioforge.CronContext) -> None:
    pass


def test_cron_list_previews_ticks(url: str) -> None:
    assert cli("db", "migrate", "--database", url).exit_code == 0
    result = cli("cron", "list", "tests.test_cli:cron_registry", "--count", "2", "--database", url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "cron:standup: '0 9 * * MON-FRI' in America/New_York, last tick never"
    fires = [dt.datetime.fromisoformat(line.split()[-1]) for line in lines[1:]]
    assert len(fires) == 2
    assert all((f.hour, f.minute, f.weekday() < 5) == (9, 0, True) for f in fires)
    assert all(f.utcoffset() in (dt.timedelta(hours=-5), dt.timedelta(hours=-4)) for f in fires)


def test_cron_list_marks_a_schedule_it_cannot_plan_and_lists_the_others(url: str) -> None:
    assert cli("db", "migrate", "--database", url).exit_code == 0
    result = cli("cron", "list", "tests.test_cron:broken_cron_registry", "--database", url)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "cron:a_broken: '*/5 * * * *' in UTC, last tick never",
        "  next: unknown, its ticks cannot be computed (RuntimeError: no ticks for you)",
    ]
    assert result.output.splitlines()[2] == "cron:b_fine: '0 9 * * *' in UTC, last tick never"
    assert len([line for line in result.output.splitlines() if line.startswith("  next 2")]) == 3


def test_an_id_out_of_range_is_a_one_line_error(url: str) -> None:
    assert cli("db", "migrate", "--database", url).exit_code == 0
    result = cli("jobs", "cancel", str(10**30), "--database", url)
    assert result.exit_code == 1
    assert result.output == f"error: no job with id {10**30}\n"


def test_db_status_reports_a_missing_sqlite_file_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "not-yet" / "jobs.db"
    result = cli("db", "status", "--database", f"sqlite:///{path}")
    assert result.exit_code == 1
    assert "no database at" in result.output
    assert "trioforge db migrate" in result.output
    assert not path.parent.exists()


# --- workflows -----------------------------------------------------------------------------

flow_registry = Registry()


def fail_charge(user: str) -> None:
    raise ConnectionError(f"card of {user} declined")


@flow_registry.workflow("cli:onboard")
async def onboard(ctx: trioforge.WorkflowContext, user: str) -> str:
    greeting = await ctx.step("greet", lambda: f"hi {user}", compensate=lambda: None)
    answer = await ctx.wait_for_signal("go")
    await ctx.step("finish", lambda: "done")
    return f"{greeting}: {answer}"


@flow_registry.workflow("cli:charge")
async def charge(ctx: trioforge.WorkflowContext, user: str) -> None:
    await ctx.step("reserve", lambda: 7, compensate=lambda: None)
    await ctx.step("charge", fail_charge, user, retry=trioforge.Retry(max_attempts=1))


def run_workflows(url: str, until: dict[int, JobState]) -> None:
    """A worker for ``flow_registry`` on ``url`` until each run reaches its state."""

    async def go() -> None:
        async with trioforge.open_runtime(flow_registry, database=url, poll_interval=0.05) as rt:
            with trio.fail_after(30):
                for run_id, wanted in until.items():
                    while (await rt.get(run_id)).status is not wanted:  # noqa: ASYNC110
                        await trio.sleep(0.02)  # polling: no event says "suspended"

    trio.run(go)


def enqueue_runs(url: str, *runs: tuple[object, str]) -> list[int]:
    async def go() -> list[int]:
        async with trioforge.open_client(url) as client:
            jobs = [await client.enqueue(wf, payload) for wf, payload in runs]  # type: ignore[call-overload]
            return [job.id for job in jobs]

    return trio.run(go)


def test_workflows_list_shows_runs_only_and_filters(url: str) -> None:
    [plain] = seed(url, ["not a run"])
    first, second = enqueue_runs(url, (onboard, "ann"), (charge, "bob"))
    listed = cli("workflows", "list", "--database", url)
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.output.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "VER", "STATUS", "CREATED", "AT", "FINISHED", "AT"]
    assert [r.split()[:4] for r in rows] == [
        [str(second), "cli:charge", "1", "available"],
        [str(first), "cli:onboard", "1", "available"],
    ]
    named = cli("workflows", "list", "--name", "cli:onboard", "--json", "--database", url)
    [only] = [json.loads(line) for line in named.output.splitlines()]
    assert (only["id"], only["workflow"], only["version"]) == (first, "cli:onboard", 1)
    assert plain not in {only["id"]}
    none = cli("workflows", "list", "--status", "completed", "--database", url)
    assert none.output.splitlines()[1:] == ["(no workflow runs)"]
    limited = cli("workflows", "list", "--limit", "1", "--json", "--database", url)
    assert [json.loads(line)["id"] for line in limited.output.splitlines()] == [second]


def test_workflows_show_says_which_worker_a_pending_run_needs(url: str) -> None:
    [run_id] = enqueue_runs(url, (onboard, "ann"))
    shown = cli("workflows", "show", str(run_id), "--database", url)
    assert shown.exit_code == 0, shown.output
    assert "workflow: cli:onboard" in shown.output
    assert "version: 1" in shown.output
    assert "status: available" in shown.output
    assert (
        "waits for a worker whose registry has workflow 'cli:onboard' version 1 "
        "(job name 'cli:onboard@v1') on queue 'default'"
    ) in shown.output
    assert "(none recorded yet)" in shown.output


def test_workflows_show_signal_and_resume(url: str) -> None:
    [run_id] = enqueue_runs(url, (onboard, "ann"))
    run_workflows(url, {run_id: JobState.SCHEDULED})  # waiting for its signal
    waiting = cli("workflows", "show", str(run_id), "--database", url)
    assert waiting.exit_code == 0, waiting.output
    assert "waits for a signal or its children; then for a worker" in waiting.output
    header, *steps = waiting.output.split("steps:\n")[1].splitlines()
    assert header.split()[:5] == ["SEQ", "KIND", "NAME", "STATUS", "TRIES"]
    assert [s.split()[:5] for s in steps] == [
        ["0", "step", "greet", "completed", "1"],
        ["1", "signal", "go", "running", "1"],
    ]
    assert steps[0].endswith('result "hi ann"')
    assert steps[1].endswith("no timeout")
    waiting_json = json.loads(
        cli("workflows", "show", str(run_id), "--json", "--database", url).output
    )
    assert waiting_json["run_at"] is None  # no wake time: null (ISO 8601 strings otherwise)
    as_job = cli("jobs", "show", str(run_id), "--database", url)  # no wake time: never
    assert (as_job.exit_code, "run at: never" in as_job.output) == (0, True), as_job.output

    sent = cli(
        "workflows", "signal", str(run_id), "go", "--payload", '{"ok": 1}', "--database", url
    )
    assert sent.exit_code == 0, sent.output
    assert sent.output.startswith(f"run {run_id}: signal 'go' sent (signal id ")
    pending = cli("workflows", "show", str(run_id), "--json", "--database", url)
    view = json.loads(pending.output)
    assert dt.datetime.fromisoformat(view["steps"][0]["started_at"]).utcoffset() == dt.timedelta(0)
    assert view["created_at"].endswith("Z")
    assert view["pending_signals"] == [{"name": "go", "payload": {"ok": 1}}]
    assert [(s["kind"], s["status"]) for s in view["steps"]] == [
        ("step", "completed"), ("signal", "running"),
    ]  # fmt: skip

    run_workflows(url, {run_id: JobState.COMPLETED})
    done = cli("workflows", "show", str(run_id), "--database", url)
    assert "status: completed" in done.output
    assert "result: \"hi ann: {'ok': 1}\"" in done.output
    assert "waiting:" not in done.output
    assert 'payload {"ok": 1}' in done.output
    assert "pending signals" not in done.output
    finished = cli("workflows", "signal", str(run_id), "go", "--database", url)
    assert finished.exit_code == 1
    assert finished.output.startswith(f"error: run {run_id} has finished (completed)")


def test_workflows_show_a_compensated_run(url: str) -> None:
    [run_id] = enqueue_runs(url, (charge, "bob"))
    run_workflows(url, {run_id: JobState.COMPENSATED})
    shown = cli("workflows", "show", str(run_id), "--database", url)
    assert shown.exit_code == 0, shown.output
    assert "status: compensated" in shown.output
    [error] = [line for line in shown.output.splitlines() if line.lstrip().startswith("error:")]
    assert error.endswith(
        "StepFailed: step 'charge' failed after 1 attempt(s): card of bob declined"
    )
    steps = [s.split()[:4] for s in shown.output.split("steps:\n")[1].splitlines()[1:]]
    assert steps == [
        ["0", "step", "reserve", "compensated"],
        ["1", "step", "charge", "failed"],
        ["2", "compensating", "compensating", "completed"],
        ["3", "compensation", "reserve", "completed"],
    ]
    assert "for good; error: ConnectionError: card of bob declined" in shown.output


def test_workflows_errors_are_one_line(url: str) -> None:
    [plain] = seed(url, ["not a run"])
    [run_id] = enqueue_runs(url, (onboard, "ann"))
    missing = cli("workflows", "show", "4242", "--database", url)
    assert (missing.exit_code, missing.output) == (1, "error: no job with id 4242\n")
    not_a_run = cli("workflows", "show", str(plain), "--database", url)
    assert not_a_run.exit_code == 1
    assert not_a_run.output.startswith(f"error: job {plain} ('cli:echo') is not a workflow run")
    for args in (["4242", "go"], [str(plain), "go"]):
        refused = cli("workflows", "signal", *args, "--database", url)
        assert refused.exit_code == 1
        assert refused.output.startswith("error: ")
    bad_json = cli("workflows", "signal", str(run_id), "go", "--payload", "{yes", "--database", url)
    assert bad_json.exit_code == 1
    assert bad_json.output.startswith("error: --payload is not JSON (")
    null = cli("workflows", "signal", str(run_id), "go", "--payload", "null", "--database", url)
    assert null.exit_code == 1
    assert "payload cannot be None" in null.output
    assert "Traceback" not in bad_json.output + null.output
    shown = json.loads(cli("workflows", "show", str(run_id), "--json", "--database", url).output)
    assert shown["pending_signals"] == []  # nothing refused was stored
