"""A CLI that never surprises: read-only commands create nothing, every error is one line
(exit 1, 2 for usage), every listing speaks JSON with ISO 8601 times, every option says
what it does. Real SQLite files; PostgreSQL where the case is about it."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import click
import pytest
import trio
from click.testing import CliRunner, Result

import trioforge
from tests.support.fast import FAST
from tests.support.postgres import schema_url
from trioforge import JobContext, JobState, Registry
from trioforge._cli import main
from trioforge._timestamps import iso_utc, with_iso_times
from trioforge.storage import NEVER

registry = Registry()


@registry.job("cli:echo")
async def echo(ctx: JobContext, text: str) -> str:
    return text


@registry.job("cli:boom", retry=trioforge.Retry(max_attempts=1))
async def boom(ctx: JobContext) -> None:
    raise ValueError("it broke")


@registry.cron("0 9 * * *")
async def daily(ctx: trioforge.CronContext) -> None:
    pass


REGISTRY = "tests.test_cli_contract:registry"


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def one_error_line(result: Result, code: int = 1) -> str:
    """The single ``error:`` line a failed command printed on stderr (stdout empty)."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    assert cli("db", "migrate", "--database", url).exit_code == 0
    return url


def enqueued(url: str, *texts: str) -> list[int]:
    async def go() -> list[int]:
        async with trioforge.open_client(url) as client:
            return [(await client.enqueue(echo, text)).id for text in texts]

    return trio.run(go)


# --- read-only commands create nothing ------------------------------------------------------

READ_ONLY = [
    ["jobs", "list"],
    ["jobs", "show", "1"],
    ["queues", "list"],
    ["workers", "list"],
    ["workflows", "list"],
    ["workflows", "show", "1"],
    ["cron", "list", "--registry", REGISTRY],
    ["healthcheck"],
]


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
@pytest.mark.parametrize("where", ["missing file", "missing directory"])
def test_read_only_commands_never_create_a_database(
    tmp_path: Path, command: list[str], where: str
) -> None:
    path = tmp_path / "x.db" if where == "missing file" else tmp_path / "no" / "sub" / "x.db"
    line = one_error_line(cli(*command, "--database", f"sqlite:///{path}"))
    assert line.startswith(f"error: no database at {str(path)!r}")
    assert line.endswith("create it with `trioforge db migrate`")
    assert list(tmp_path.iterdir()) == []


def test_a_url_with_options_creates_no_file_named_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for command in (["jobs", "list"], ["db", "migrate"]):
        line = one_error_line(cli(*command, "--database", "sqlite:///cli.db?mode=ro"))
        assert "has a query or fragment" in line
    assert list(tmp_path.iterdir()) == []


def test_an_empty_database_option_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("jobs", "list", "--database", "")
    assert result.exit_code == 2
    assert "--database" in result.stderr
    assert "is empty" in result.stderr


# --- every error is one line ----------------------------------------------------------------


@pytest.mark.parametrize("port", ["notaport", "99999", "0"])
@pytest.mark.parametrize("command", [["jobs", "list"], ["db", "status"], ["db", "migrate"]])
def test_a_malformed_postgres_url_is_one_line(port: str, command: list[str]) -> None:
    url = f"postgresql://me:secret@127.0.0.1:{port}/x"
    line = one_error_line(cli(*command, "--database", url))
    assert line == (
        f"error: database URL 'postgresql://me:***@127.0.0.1:{port}/x' has a bad port; use a "
        "number from 1 to 65535 (postgresql://user@host:5432/db)"
    )


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A fresh importable module name (and its file) in a working directory of its own."""
    monkeypatch.chdir(tmp_path)
    name = f"cli_app_{uuid.uuid4().hex[:8]}"
    yield name, tmp_path / f"{name}.py"
    sys.modules.pop(name, None)
    while str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


BROKEN_MODULES = {
    "raises": (
        "import trioforge\nregistry = trioforge.Registry()\nraise RuntimeError('no config')\n",
        3, "RuntimeError: no config",
    ),
    "syntax": ("import trioforge\nregistry = trioforge.Registry(\ndef x(:\n", 3, "SyntaxError: "),
    "bad zone": (
        "import trioforge\nregistry = trioforge.Registry()\n"
        "@registry.cron('0 9 * * *', timezone='Mars/Olympus')\n"
        "async def tick(ctx: trioforge.CronContext) -> None: ...\n",
        3, "Mars/Olympus",
    ),
    "bad cron": (
        "import trioforge\nregistry = trioforge.Registry()\n"
        "@registry.cron('61 * * * *')\n"
        "async def tick(ctx: trioforge.CronContext) -> None: ...\n",
        3, "61 * * * *",
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", BROKEN_MODULES)
@pytest.mark.parametrize("command", [["worker"], ["cron", "list"], ["enqueue", "x"], ["web"]])
def test_a_registry_module_that_fails_to_import_is_its_own_file_line_error(
    app_module: tuple[str, Path], kind: str, command: list[str]
) -> None:
    name, path = app_module
    source, line_number, what = BROKEN_MODULES[kind]
    path.write_text(source)
    url = f"sqlite:///{path.parent / 'jobs.db'}"
    line = one_error_line(cli(*command, "--registry", f"{name}:registry", "--database", url))
    assert line.startswith(f"error: cannot import {name!r}: {path}:{line_number}: ")
    assert what in line


def test_debug_shows_the_traceback(app_module: tuple[str, Path]) -> None:
    name, path = app_module
    path.write_text(BROKEN_MODULES["raises"][0])
    result = cli("--debug", "worker", f"{name}:registry")
    assert result.exit_code == 1
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    assert result.stderr.splitlines()[-1].startswith(f"error: cannot import {name!r}: ")
    assert len(result.stderr.splitlines()) > 3


@pytest.mark.parametrize("command", [["db", "status"], ["db", "migrate"], ["jobs", "list"]])
def test_an_unset_password_variable_is_one_line(command: list[str]) -> None:
    variable = f"TF_UNSET_{uuid.uuid4().hex[:8].upper()}"
    env = {"TRIOFORGE_PASSWORD_ENV": variable}
    result = cli(*command, "--database", "postgresql://me@127.0.0.1:5432/x", env=env)
    assert one_error_line(result) == (
        f"error: the database password comes from ${variable} (password_env), which is not "
        "set; export it, or remove password_env from the settings"
    )


@pytest.mark.parametrize(
    ("command", "option"), [(["worker", REGISTRY], "--metrics-port"), (["web"], "--port")]
)
def test_a_port_in_use_is_one_line(tmp_path: Path, command: list[str], option: str) -> None:
    url = migrated(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(*command, option, str(port), "--database", url)
    line = one_error_line(result)
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port} (")
    assert line.endswith(f"choose another {option}")


def test_unknown_settings_keys_are_refused_with_the_closest_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRIOFORGE_DATABASE_URL", raising=False)
    (tmp_path / "trioforge.toml").write_text('databse = "sqlite:///typo.db"\n')
    line = one_error_line(cli("jobs", "list"))
    assert line == (
        f"error: unknown key 'databse' in {tmp_path / 'trioforge.toml'}; did you mean 'database'?"
    )
    (tmp_path / "pyproject.toml").write_text('[tool.trioforge]\npasword_env = "PW"\n')
    line = one_error_line(cli("db", "status"))
    assert "unknown key 'pasword_env' in [tool.trioforge] in" in line
    assert line.endswith("did you mean 'password_env'?")
    (tmp_path / "pyproject.toml").write_text("[tool.trioforge]\nzzz = 1\n")
    assert one_error_line(cli("jobs", "list")).endswith(
        "known keys: database, password_env, listen_url"
    )
    assert not (tmp_path / "typo.db").exists()


# --- queues --------------------------------------------------------------------------------


def test_pausing_an_unknown_queue_names_the_known_ones(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    enqueued(url, "x")
    line = one_error_line(cli("queues", "pause", "defualt", "--database", url))
    assert line == (
        "error: no queue 'defualt' has jobs or workers (known queues: 'default'); pass --force "
        "to pause it before its first use"
    )
    assert [json.loads(q)["name"] for q in cli("queues", "list", "--json", "--database", url)
            .output.splitlines()] == ["default"]  # fmt: skip
    forced = cli("queues", "pause", "later", "--force", "--database", url)
    assert (forced.exit_code, forced.output) == (0, "queue later: paused\n")
    listed = [
        json.loads(q)
        for q in cli("queues", "list", "--json", "--database", url).output.splitlines()
    ]
    assert {q["name"]: q["paused"] for q in listed} == {"default": False, "later": True}
    assert listed[0]["counts"]["available"] == 1 or listed[1]["counts"]["available"] == 1


STANDBY_APP = """
import trioforge
registry = trioforge.Registry()

@registry.job("shout")
async def shout(ctx: trioforge.JobContext, text: str) -> str:
    return text.upper()
"""


async def test_a_standby_pool_claims_nothing_and_a_stray_queue_warns(tmp_path: Path) -> None:
    (tmp_path / "standbyapp.py").write_text(STANDBY_APP)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    shout = Registry().job("shout")(echo.handler)
    command = [sys.executable, "-m", "trioforge", "worker", "--registry", "standbyapp:registry",
               "-q", "default=0", "-q", "emials=2", "--database", url]  # fmt: skip
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
        [process] = await client.processes()
        assert process.details is not None
        assert dict(process.details.pools) == {"default": 0, "emials": 2}
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await proc.wait() == 0
        assert (await client.get(job_id)).status is JobState.AVAILABLE
    text = seen.decode()
    assert "queues default=0, emials=2" in text
    assert (
        "warning: no job in standbyapp:registry declares queue 'emials' (its queues: default); "
        "the pool runs only jobs enqueued to it with queue="
    ) in text


# --- JSON everywhere, times in ISO 8601 UTC -----------------------------------------------------


def utc(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    assert text.endswith("Z"), text
    assert moment.utcoffset() == dt.timedelta(0), text
    return moment


def test_iso_times() -> None:
    assert iso_utc(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_800_000_000.1234) == "2027-01-15T08:00:00.123Z"
    assert iso_utc(None) is None
    assert iso_utc(NEVER) is None  # a run waiting for a signal: no time
    view = {"id": 1, "created_at": 0.0, "result": 5.0, "steps": [{"wake_at": 60.0}]}
    assert with_iso_times(view) == {
        "id": 1, "created_at": "1970-01-01T00:00:00.000Z", "result": 5.0,
        "steps": [{"wake_at": "1970-01-01T00:01:00.000Z"}],
    }  # fmt: skip


def test_every_listing_and_show_speaks_json_with_iso_times(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    [job_id] = enqueued(url, "alpha")
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)

    def lines(*args: str) -> list[dict[str, object]]:
        result = cli(*args, "--json", "--database", url)
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    [listed] = lines("jobs", "list")
    [shown] = lines("jobs", "show", str(job_id))
    for job in (listed, shown):
        assert (job["id"], job["payload"], job["status"]) == (job_id, "alpha", "available")
        assert utc(str(job["created_at"])) > before
        assert utc(str(job["run_at"])) > before
        assert job["finished_at"] is None
    [queue] = lines("queues", "list")
    assert queue == {"name": "default", "paused": False, "counts": {
        "scheduled": 0, "available": 1, "running": 0, "completed": 0, "retrying": 0, "dead": 0,
        "cancelled": 0, "compensated": 0,
    }, "unserved": ["cli:echo"]}  # no worker runs it  # fmt: skip
    [status] = lines("db", "status")
    assert status["up_to_date"] is True
    assert status["schema"] == status["latest"]
    assert lines("workflows", "list") == []
    [cron] = lines("cron", "list", "--registry", REGISTRY, "--count", "2")
    assert (cron["name"], cron["expression"], cron["timezone"]) == (
        "cron:daily",
        "0 9 * * *",
        "UTC",
    )
    assert cron["last_tick"] is None
    assert cron["error"] is None
    assert [utc(str(f).replace("+00:00", "Z")).hour for f in cron["next"]] == [9, 9]  # type: ignore[attr-defined]

    async def with_worker() -> list[dict[str, object]]:
        async with trioforge.open_runtime(registry, database=url, **FAST):
            return await trio.to_thread.run_sync(lines, "workers", "list")

    [process] = trio.run(with_worker)
    assert utc(str(process["started_at"])) > before
    assert utc(str(process["heartbeat_at"])) > before


# --- enqueue and healthcheck ------------------------------------------------------------------


def test_enqueue_prints_the_id_and_takes_every_option(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    base = ["--registry", REGISTRY, "--database", url]
    first = cli("enqueue", "cli:echo", "--payload", '"hello"', *base)
    assert first.exit_code == 0, first.output
    job_id = int(first.stdout)
    shown = json.loads(cli("jobs", "show", str(job_id), "--json", "--database", url).stdout)
    assert (shown["name"], shown["payload"], shown["status"]) == ("cli:echo", "hello", "available")
    options = ["--delay", "1h", "--queue", "later", "--priority", "high", "--key", "k1"]
    keyed = cli("enqueue", "cli:echo", "--payload", '"x"', *options, *base)
    again = cli("enqueue", "cli:echo", "--payload", '"x"', *options, *base)
    assert keyed.stdout == again.stdout  # the key holds: the same job
    info = json.loads(cli("jobs", "show", keyed.stdout.strip(), "--json", "--database", url).stdout)
    assert (info["status"], info["queue"], info["priority"], info["idempotency_key"]) == (
        "scheduled", "later", 20, "k1",
    )  # fmt: skip
    assert utc(info["run_at"]) - utc(info["created_at"]) >= dt.timedelta(minutes=59)
    bad_json = cli("enqueue", "cli:echo", "--payload", "{nope", *base)
    assert bad_json.exit_code == 2
    assert "is not JSON" in bad_json.stderr
    wrong_type = one_error_line(cli("enqueue", "cli:echo", "--payload", "5", *base))
    assert "cli:echo" in wrong_type
    unknown = one_error_line(cli("enqueue", "cli:nope", *base))
    assert "cli:nope" in unknown
    no_registry = cli("enqueue", "cli:echo", "--database", url)
    assert no_registry.exit_code == 2
    assert "--registry" in no_registry.stderr


async def test_enqueue_wait_prints_the_result_or_fails_on_a_dead_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    base = ["--registry", REGISTRY, "--database", url, "--wait"]
    async with trioforge.open_runtime(registry, database=url, **FAST):
        done = await trio.to_thread.run_sync(cli, "enqueue", "cli:echo", "--payload", '"hi"', *base)
        dead = await trio.to_thread.run_sync(cli, "enqueue", "cli:boom", *base)
    assert done.exit_code == 0, done.output
    job_id, result = done.stdout.splitlines()
    assert (int(job_id) > 0, result) == (True, '"hi"')
    assert dead.exit_code == 1
    [dead_id] = dead.stdout.splitlines()
    assert dead.stderr.splitlines() == [f"error: job {dead_id} ended dead: ValueError: it broke"]


def test_jobs_delete_removes_a_finished_job_and_every_refusal_is_one_line(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    base = ["--database", url]
    dead, pending, cancelled = enqueued(url, "a", "b", "c")
    assert cli("jobs", "discard", str(dead), *base).exit_code == 0
    assert cli("jobs", "cancel", str(cancelled), *base).exit_code == 0
    again = one_error_line(cli("jobs", "discard", str(dead), *base))
    assert again.endswith(f"delete it (client.delete({dead}) or `trioforge jobs delete {dead}`)")
    deleted = cli("jobs", "delete", str(dead), "--json", *base)
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(deleted.stdout) == {"id": dead, "deleted": True, "status": "dead"}
    plain = cli("jobs", "delete", str(cancelled), *base)
    assert plain.stdout == f"job {cancelled}: deleted (it was cancelled)\n"
    gone = one_error_line(cli("jobs", "delete", str(dead), *base))
    assert gone == f"error: no job with id {dead}"
    refused = one_error_line(cli("jobs", "delete", str(pending), "--json", *base))
    assert refused == (
        f"error: job {pending} is available, not finished: cancel or discard it first, then "
        "delete it"
    )
    assert cli("jobs", "delete", "x", *base).exit_code == 2
    listed = cli("jobs", "list", "--json", *base).stdout.splitlines()
    assert [json.loads(line)["id"] for line in listed] == [pending]


async def test_healthcheck_answers_for_the_database_and_this_hosts_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    assert (await trio.to_thread.run_sync(cli, "db", "migrate", "--database", url)).exit_code == 0
    ok = await trio.to_thread.run_sync(cli, "healthcheck", "--database", url)
    assert (ok.exit_code, ok.stdout) == (0, "ok: database answers, schema current\n")
    lonely = await trio.to_thread.run_sync(cli, "healthcheck", "--worker", "--database", url)
    line = one_error_line(lonely)
    assert line.startswith(f"error: no worker on host {socket.gethostname()!r} heartbeated")
    async with trioforge.open_runtime(registry, database=url, **FAST):
        alive = await trio.to_thread.run_sync(cli, "healthcheck", "--worker", "--database", url)
    assert alive.exit_code == 0, alive.output
    assert alive.stdout.endswith(f"1 worker(s) on {socket.gethostname()} alive\n")


async def test_postgresql_read_only_commands_and_healthcheck() -> None:
    async with schema_url() as url:
        for command in READ_ONLY:  # an empty schema stays empty
            refused = await trio.to_thread.run_sync(partial(cli, *command, "--database", url))
            assert "trioforge db migrate" in one_error_line(refused), command
        empty = await trio.to_thread.run_sync(cli, "db", "status", "--database", url)
        assert "schema version 0 in" in one_error_line(empty)  # nothing migrated it
        assert (
            await trio.to_thread.run_sync(cli, "db", "migrate", "--database", url)
        ).exit_code == 0
        ok = await trio.to_thread.run_sync(cli, "healthcheck", "--database", url)
        assert (ok.exit_code, ok.stdout) == (0, "ok: database answers, schema current\n")
        [status] = (await trio.to_thread.run_sync(
            cli, "db", "status", "--json", "--database", url
        )).stdout.splitlines()  # fmt: skip
        assert json.loads(status)["up_to_date"] is True


# --- the registry and help ---------------------------------------------------------------------


def test_the_registry_is_given_the_same_way_everywhere(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    for command in (["worker"], ["cron", "list"], ["enqueue", "cli:echo"], ["web"]):
        refused = cli(*command, "--registry", "tests.test_cli_contract:echo", "--database", url)
        assert "is not a trioforge.Registry" in one_error_line(refused), command
    both = cli("worker", REGISTRY, "--registry", "other:registry", "--database", url)
    assert both.exit_code == 2
    assert "two registries given" in both.stderr
    neither = cli("worker", "--database", url)
    assert neither.exit_code == 2
    assert "--registry MODULE:NAME" in neither.stderr


def commands(group: click.Group, path: str = "trioforge") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} {name}")


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{path} {param.opts[0]}"
        for path, command in [("trioforge", main), *commands(main)]
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert missing == []
    assert len(list(commands(main))) > 25
