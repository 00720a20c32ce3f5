"""``trioforge db ...``: create, migrate, check, drop and reset the schema."""

from __future__ import annotations

import json

import click

from trioforge._cli_common import database_option, database_url, fail, json_object_option, run
from trioforge._core.errors import TrioforgeError, unwrapped
from trioforge._terminal import terminal_text as t
from trioforge.storage import Backend, MemoryBackend, SchemaStatus, backend_for_url, opened
from trioforge.storage._sqlite_health import integrity_problems
from trioforge.storage._urls import redact
from trioforge.storage.sqlite import SQLiteBackend

__all__ = ["db"]


@click.group()
def db() -> None:
    """Manage the database schema."""


def schema_status(url: str, *, migrate: bool) -> SchemaStatus:
    """Open the database (migrating it, or refusing a stale schema) and read its version."""

    async def go() -> SchemaStatus:
        async with opened(backend_for_url(url), migrate=migrate) as backend:
            return await backend.schema_status()

    return run(go)


@db.command()
@database_option
def migrate(database: str | None) -> None:
    """Apply pending schema migrations (idempotent)."""
    url = database_url(database)
    click.echo(f"{redact(url)}: schema at version {schema_status(url, migrate=True).current}")


@db.command()
@database_option
@click.option(
    "--check", is_flag=True,
    help="Also check the stored data. SQLite: a full PRAGMA integrity_check (it reads every "
    "page). PostgreSQL: the connection and the schema version only (the server checks its "
    "own pages; use its amcheck extension for more).",
)  # fmt: skip
@json_object_option
def status(database: str | None, check: bool, as_json: bool) -> None:
    """Report the schema version; exit 1 if migrations are pending or the database cannot
    be used (a corrupt or read-only file)."""
    url = database_url(database)
    backend = backend_for_url_or_fail(url)
    if check:
        check_data(backend, quiet=as_json)
    version = schema_status(url, migrate=False)
    if as_json:
        data = {"database": redact(url), "schema": version.current, "latest": version.latest}
        click.echo(json.dumps(data | {"up_to_date": version.up_to_date, "checked": check}))
        return
    click.echo(f"{redact(url)}: schema at version {version.current}, up to date")


def backend_for_url_or_fail(url: str) -> Backend:
    try:
        return backend_for_url(url)
    except TrioforgeError as exc:
        fail(str(exc))


def check_data(backend: Backend, *, quiet: bool = False) -> None:
    """``db status --check``: report what the backend's own check finds (unless ``quiet``:
    problems only); exit 1 on problems."""
    say = (lambda _: None) if quiet else click.echo
    if isinstance(backend, SQLiteBackend):
        if not backend.path.exists():
            return  # status says how to create it
        problems = integrity_problems(backend.path)
        for problem in problems:
            click.echo(f"integrity_check: {t(problem)}", err=quiet)
        if problems:
            fail(
                f"SQLite database {str(backend.path)!r} is corrupt; restore it from a backup, or "
                f"salvage its rows with `sqlite3 {backend.path} .recover`"
            )
        say("integrity_check: ok")
    elif isinstance(backend, MemoryBackend):
        say("check: nothing to check in memory")
    else:
        say("check: connection and schema version (PostgreSQL checks its own pages)")


@db.command()
@database_option
def create(database: str | None) -> None:
    """Create the database if it does not exist, then apply migrations."""
    url = database_url(database)

    async def go() -> tuple[bool, int]:
        backend = backend_for_url(url)
        async with unwrapped(), backend.environment():
            created = await backend.create_database()
        async with opened(backend) as ready:
            return created, (await ready.schema_status()).current

    created, version = run(go)
    verb = "created" if created else "already exists"
    click.echo(f"{redact(url)}: database {verb}, schema at version {version}")


confirm_option = click.option(
    "--yes", is_flag=True, help="Do it without asking (every job in the database is deleted)."
)


def drop_tables(url: str, *, then_migrate: bool) -> int:
    async def go() -> int:
        async with opened(backend_for_url(url)) as backend:
            await backend.drop()
            if then_migrate:
                await backend.migrate()
            return (await backend.schema_status()).current

    return run(go)


@db.command()
@database_option
@confirm_option
def drop(database: str | None, yes: bool) -> None:
    """Delete trioforge's tables and every job in them."""
    url = database_url(database)
    if not yes:
        click.confirm(f"Delete every trioforge job in {redact(url)}?", abort=True)
    drop_tables(url, then_migrate=False)
    click.echo(f"{redact(url)}: trioforge tables dropped")


@db.command()
@database_option
@confirm_option
def reset(database: str | None, yes: bool) -> None:
    """Drop trioforge's tables and create them again, empty."""
    url = database_url(database)
    if not yes:
        click.confirm(f"Delete every trioforge job in {redact(url)} and start empty?", abort=True)
    version = drop_tables(url, then_migrate=True)
    click.echo(f"{redact(url)}: reset, schema at version {version}")
