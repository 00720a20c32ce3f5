"""A database that cannot be used (corrupt or read-only SQLite files, PostgreSQL tables
gone) is refused at open with one line naming the fix, and a worker that meets it later
stops with the error instead of retrying forever. Real files, a real server."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import trio
import trio_asyncio
from click.testing import CliRunner, Result

import trioforge
from tests.support.fast import FAST
from tests.support.postgres import URL as PG_URL
from tests.support.postgres import require_postgres, temporary_schema
from trioforge import DatabaseUnavailableError, JobContext, Registry, SchemaError
from trioforge._cli import main
from trioforge.storage._health import permanent_failure

registry = Registry()


@registry.job("health:echo")
async def echo(ctx: JobContext, text: str) -> str:
    return text


APP = (
    "import trioforge\n"
    "registry = trioforge.Registry()\n"
    "@registry.job('health:echo')\n"
    "async def echo(ctx: trioforge.JobContext, text: str) -> str:\n"
    "    return text\n"
)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def migrated(path: Path) -> Path:
    result = cli("db", "migrate", "--database", f"sqlite:///{path}")
    assert result.exit_code == 0, result.output
    return path


def jobs_pages(path: Path) -> list[int]:
    """The root pages of the jobs table and its indexes (one page each in a small file)."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file
        rows = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE tbl_name = 'trioforge_jobs' AND rootpage"
        ).fetchall()
    db.close()
    return [page for (page,) in rows]


def corrupt(path: Path, pages: list[int]) -> None:
    """Write garbage over ``pages`` (1-based) of the file."""
    size = 4096
    with path.open("r+b") as f:
        for page in pages:
            f.seek((page - 1) * size)
            f.write(bytes(range(256)) * (size // 256))


@pytest.fixture
def corrupt_file(tmp_path: Path) -> Path:
    path = migrated(tmp_path / "jobs.db")
    corrupt(path, jobs_pages(path))
    return path


# --- which errors retrying cannot fix ----------------------------------------------------


def test_real_sqlite_errors_are_told_apart(corrupt_file: Path, tmp_path: Path) -> None:
    db = sqlite3.connect(corrupt_file)
    with pytest.raises(sqlite3.DatabaseError) as broken:
        db.execute("SELECT * FROM trioforge_jobs WHERE queue = 'x' ORDER BY id").fetchall()
    db.close()
    assert "the file is corrupt" in (permanent_failure(broken.value) or "")

    good = migrated(tmp_path / "good.db")
    holder = sqlite3.connect(good, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing
    waiter = sqlite3.connect(good, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        waiter.execute("INSERT INTO trioforge_schema VALUES (99)")
    holder.execute("ROLLBACK")
    with pytest.raises(sqlite3.OperationalError) as gone:
        waiter.execute("SELECT * FROM no_table_here")
    with pytest.raises(sqlite3.IntegrityError) as data:  # one operation's data
        waiter.execute("INSERT INTO trioforge_schema VALUES (NULL)")
    assert permanent_failure(locked.value) is None  # it passes: retried
    assert "tables changed or are gone" in (permanent_failure(gone.value) or "")
    assert permanent_failure(data.value) is None
    assert permanent_failure(DatabaseUnavailableError("server restarting")) is None
    assert permanent_failure(SchemaError("schema version 99")) is not None


async def test_real_postgres_errors_are_told_apart() -> None:
    async def errors() -> list[BaseException]:
        conn = await asyncpg.connect(PG_URL)
        found: list[BaseException] = []
        try:
            for statement, args in (
                ("SELECT * FROM no_table_here", ()),
                ("SELECT $1::text", ("a\x00b",)),  # a value the server refuses
            ):
                try:
                    await conn.fetchval(statement, *args)
                except asyncpg.PostgresError as exc:
                    found.append(exc)
            try:
                async with conn.transaction(readonly=True):
                    await conn.execute("CREATE TEMPORARY TABLE t (x int)")
            except asyncpg.PostgresError as exc:
                found.append(exc)
        finally:
            await conn.close()
        return found

    require_postgres()
    async with trio_asyncio.open_loop():
        missing, bad_value, read_only = await trio_asyncio.aio_as_trio(errors)()
    assert "tables are gone" in (permanent_failure(missing) or "")
    assert permanent_failure(bad_value) is None
    assert "read-only" in (permanent_failure(read_only) or "")


# --- at open -------------------------------------------------------------------------------


async def test_a_corrupt_file_is_refused_at_open_naming_it_and_the_fix(corrupt_file: Path) -> None:
    with pytest.raises(DatabaseUnavailableError) as refused:
        async with trioforge.open_runtime(registry, database=f"sqlite:///{corrupt_file}"):
            pytest.fail("a runtime opened on a corrupt file")
    message = str(refused.value)
    assert str(corrupt_file) in message
    assert "corrupt" in message
    assert ".recover" in message


def run_worker(path: Path, *, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    (path.parent / "healthapp.py").write_text(APP)
    command = [sys.executable, "-m", "trioforge", "worker", "healthapp:registry"]
    if as_nobody:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    return subprocess.run(
        [*command, "--database", f"sqlite:///{path}"], cwd=path.parent,
        capture_output=True, text=True, timeout=60, env={**os.environ},
    )  # fmt: skip


def test_the_worker_exits_on_a_corrupt_file_with_one_line(corrupt_file: Path) -> None:
    done = run_worker(corrupt_file)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: SQLite database {str(corrupt_file)!r} cannot be used: the file is corrupt "
        f"(database disk image is malformed); restore it from a backup, or salvage its rows "
        f"with `sqlite3 {corrupt_file} .recover`; `trioforge db status --check` lists every "
        "problem"
    ]


@pytest.fixture
def read_only_file(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """A migrated file the worker may read but not write, and whether to run it as nobody.

    Root ignores file permissions, so as root the worker runs as ``nobody`` (through
    util-linux's setpriv), in a directory of its own that nobody may enter and write
    (SQLite creates its -wal and -shm files there: only the database file is read-only).
    """
    source = migrated(tmp_path / "jobs.db")
    if os.geteuid() != 0:
        source.chmod(0o444)
        yield source, False
        return
    if shutil.which("setpriv") is None:
        pytest.skip("as root, a read-only file needs setpriv (util-linux) to run as nobody")
    directory = Path(tempfile.mkdtemp(prefix="trioforge-ro-"))
    try:
        directory.chmod(0o1777)
        path = directory / "jobs.db"
        shutil.copyfile(source, path)
        path.chmod(0o444)
        yield path, True
    finally:
        shutil.rmtree(directory)


def test_the_worker_exits_on_a_read_only_file_with_one_line(
    read_only_file: tuple[Path, bool],
) -> None:
    path, as_nobody = read_only_file
    done = run_worker(path, as_nobody=as_nobody)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"error: SQLite database {str(path)!r} cannot be used: it is read-only (attempt to "
        "write a readonly database); give this process write access to the file and its "
        "directory (SQLite writes jobs.db-wal and jobs.db-shm beside it)"
    ]


# --- later ---------------------------------------------------------------------------------


async def test_a_worker_stops_on_corruption_found_after_it_started(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    holding = trio.Event()
    jobs = Registry()
    jobs.job("health:echo")(echo.handler)

    @jobs.job("health:hold")
    async def hold(ctx: JobContext) -> None:
        holding.set()
        await trio.sleep_forever()

    # Long leases: an outcome writer retrying while they hold would keep it for a minute.
    settings = {**FAST, "lease_seconds": 60.0}
    with pytest.raises(DatabaseUnavailableError) as stopped:  # noqa: PT012
        with trio.fail_after(20):  # neither retrying forever nor waiting out the leases
            async with trioforge.open_runtime(jobs, database=f"sqlite:///{path}", **settings) as rt:
                await rt.wait(await rt.enqueue(echo, "before"))
                await rt.enqueue(hold)
                await holding.wait()
                corrupt(path, jobs_pages(path))
                with sqlite3.connect(path) as other:  # a commit: the worker re-reads pages
                    other.execute("PRAGMA user_version = 7")
                other.close()
                await trio.sleep_forever()
    message = str(stopped.value)
    assert "the file is corrupt" in message
    assert "repair or restore it" in message


async def test_a_postgres_worker_stops_when_its_tables_are_gone() -> None:
    async with temporary_schema() as backend:
        with pytest.raises(DatabaseUnavailableError) as stopped:  # noqa: PT012
            with trio.fail_after(30):
                async with trioforge.open_runtime(registry, database=backend, **FAST) as rt:
                    await rt.wait(await rt.enqueue(echo, "before"))
                    schema = backend.schema

                    async def drop() -> None:
                        conn = await asyncpg.connect(PG_URL)
                        try:
                            await conn.execute(f'DROP TABLE "{schema}".trioforge_jobs CASCADE')
                        finally:
                            await conn.close()

                    await trio_asyncio.aio_as_trio(drop)()
                    await trio.sleep_forever()
    assert "tables are gone" in str(stopped.value)


# --- db status -----------------------------------------------------------------------------


def test_db_status_refuses_a_corrupt_file_and_check_lists_its_problems(
    corrupt_file: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{corrupt_file}"
    status = cli("db", "status", "--database", url)
    assert status.exit_code == 1
    assert "up to date" not in status.output
    assert "corrupt" in status.output
    checked = cli("db", "status", "--check", "--database", url)
    assert checked.exit_code == 1
    problems = [line for line in checked.output.splitlines() if line.startswith("integrity_check")]
    assert problems
    assert "up to date" not in checked.output

    good = cli("db", "status", "--check", "--database", f"sqlite:///{migrated(tmp_path / 'ok.db')}")
    assert good.exit_code == 0, good.output
    assert good.output.splitlines()[0] == "integrity_check: ok"
    assert good.output.splitlines()[1].endswith("up to date")
