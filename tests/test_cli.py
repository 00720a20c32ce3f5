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
from tests.postgres import URL as PG_URL
from tests.postgres import require_postgres
from trioforge import JobContext, JobState, Registry
from trioforge._cli import main
from trioforge.storage.postgres import MIGRATIONS as PG_MIGRATIONS
from trioforge.storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

registry = Registry()


@registry.job("cli:echo")
async def echo(ctx: JobContext, text: str) -> str:
    return text


def seed(url: str, texts: list[str], **options: object) -> list[int]:
    async def go() -> list[int]:
        async with trioforge.open_client(url) as client:
            return [await client.enqueue(echo, t, **options) for t in texts]  # type: ignore[arg-type]

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
    for spec in ("emails=0", "emails", "=3"):
        result = cli("worker", "tests.test_cli:registry", "--queue", spec, "--database", url)
        assert result.exit_code == 2
        assert "NAME=CONCURRENCY" in result.output
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
    )
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    shout = Registry().job("shout")(echo.handler)
    command = [sys.executable, "-m", "trioforge", "worker", "climod:registry", "--database", url]
    async with trioforge.open_client(url) as client:
        job_id = await client.enqueue(shout, "hi")
        proc = await trio.lowlevel.open_process(
            command, cwd=tmp_path, stderr=subprocess.PIPE, env={**os.environ}
        )
        assert proc.stderr is not None
        seen = b""
        with trio.fail_after(30):
            while b"ready" not in seen:
                chunk = await proc.stderr.receive_some()
                assert chunk, seen
                seen += chunk
            assert (await client.wait(job_id)).result == "HI"
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await proc.wait() == 0
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


def test_an_id_out_of_range_is_a_one_line_error(url: str) -> None:
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
