"""What every ``trioforge`` command shares: its common options, one-line errors and exit
statuses, running trio and a client, loading the registry, and the time and job formats of
its output."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import attrs
import click
import trio

from trioforge._client import Client
from trioforge._config import resolve_database
from trioforge._core.errors import TrioforgeError, unwrapped
from trioforge._registry import Registry
from trioforge._runtime import open_client
from trioforge._terminal import terminal_text as t
from trioforge._timestamps import with_iso_times
from trioforge.storage import NEVER, JobInfo

if TYPE_CHECKING:
    from trioforge.otel import Tracing

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Where ``--debug`` is kept for :func:`fail` (click's context meta, shared by subcommands).
DEBUG = "trioforge.debug"


def _not_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("is empty; give a URL, or leave the option out")
    return value


database_option = click.option(
    "--database",
    metavar="URL",
    default=None,
    callback=_not_empty,
    help="Database URL (default: $TRIOFORGE_DATABASE_URL, then [tool.trioforge] in "
    "./pyproject.toml or ./trioforge.toml, then sqlite:///.trioforge/jobs.db).",
)
listen_url_option = click.option(
    "--listen-url",
    metavar="URL",
    default=None,
    callback=_not_empty,
    help="PostgreSQL URL for LISTEN when --database goes through PgBouncer in transaction "
    "mode: a direct connection (default: $TRIOFORGE_LISTEN_URL, then listen_url in the "
    "settings, then the database URL).",
)
json_lines_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object per line (times in ISO 8601 UTC).",
)
json_object_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (times in ISO 8601 UTC)."
)


def fail(message: str) -> NoReturn:
    """One ``error:`` line on stderr and exit status 1; with ``--debug``, the traceback of
    the exception being handled first."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(DEBUG) and sys.exc_info()[1] is not None:
        click.echo(traceback.format_exc().rstrip(), err=True)
    click.echo(f"error: {t(message)}", err=True)
    sys.exit(1)


def _alone(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``trio.run`` with every error (also one alone in exception groups) turned into one
    line and exit status 1: trioforge's own by their message, others by type and message."""

    async def main() -> T:
        async with unwrapped():
            return await fn(*args)

    try:
        return trio.run(main)
    except TrioforgeError as exc:
        fail(str(exc))
    except Exception as exc:  # the command's last word: one line, not a traceback
        inner = _alone(exc)
        if isinstance(inner, TrioforgeError):
            fail(str(inner))
        fail(f"{type(inner).__name__}: {inner} (run with --debug for the traceback)")


def database_url(database: str | None) -> str:
    """The URL the command uses (see :func:`resolve_database`), or one line and exit 1."""
    try:
        return resolve_database(database)
    except TrioforgeError as exc:
        fail(str(exc))


def with_client(
    database: str | None, fn: Callable[[Client], Awaitable[T]], *, migrate: bool = False
) -> T:
    """``fn(client)`` on the database; without ``migrate``, a missing database or a schema
    behind the code is an error (commands that only read or operate create nothing)."""
    url = database_url(database)

    async def main() -> T:
        async with open_client(url, migrate=migrate) as client:
            return await fn(client)

    return run(main)


def iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    if ts >= NEVER:  # a workflow run waiting for a signal or its children, no deadline
        return "never"
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def job_data(info: JobInfo) -> dict[str, Any]:
    data = with_iso_times(attrs.asdict(info))
    data["status"] = info.status.value
    return data


def job_json(info: JobInfo) -> str:
    return json.dumps(job_data(info), sort_keys=True)


def import_error(exc: BaseException) -> str:
    """``file:line: error`` for an exception raised importing the application's module:
    the line of its own code that raised (or made the call that raised)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}"
    what = str(exc) if isinstance(exc, TrioforgeError) else f"{type(exc).__name__}: {exc}"
    package = str(Path(__file__).parent)
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(package) and not f.filename.startswith("<frozen")
        and f.filename != importlib.__file__
    ]  # fmt: skip
    return f"{frames[-1].filename}:{frames[-1].lineno}: {what}" if frames else what


def load_registry(target: str) -> Registry:
    """The registry ``MODULE:NAME`` names; whatever importing the module raises is one line."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"{target!r} is not MODULE:ATTRIBUTE (e.g. app.jobs:registry)")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and f"{module_name}.".startswith(f"{exc.name}."):
            fail(f"cannot import {module_name!r}: {exc}")
        fail(f"cannot import {module_name!r}: {import_error(exc)}")
    except Exception as exc:  # the module's own error, as one line
        fail(f"cannot import {module_name!r}: {import_error(exc)}")
    registry = getattr(module, attr, None)
    if not isinstance(registry, Registry):
        fail(f"{target!r} is not a trioforge.Registry (got {type(registry).__name__})")
    return registry


def _global_tracing(ctx: click.Context, param: click.Parameter, on: bool) -> Tracing | None:
    """``--otel``: tracing to the global tracer provider (None without the flag)."""
    if not on:
        return None
    try:
        from trioforge.otel import Tracing
    except ImportError as exc:
        fail(f"--otel: {exc}")
    return Tracing()


def otel_option(what: str, where: str = "") -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The ``--otel`` flag of a command, given to it as ``tracing``."""
    return click.option(
        "--otel", "tracing", is_flag=True, callback=_global_tracing,
        help=f"Trace {what} with OpenTelemetry (needs trioforge[otel]), to the global tracer "
        f"provider{where}.",
    )  # fmt: skip


def registry_option(help: str, *, required: bool = False) -> Callable[[F], F]:
    """``--registry MODULE:NAME``, the same on every command that takes the registry."""
    return click.option(
        "--registry", "registry_target", metavar="MODULE:NAME", required=required, help=help
    )


def registry_target_of(positional: str | None, option: str | None) -> str:
    """The registry named by the positional form or ``--registry`` (one, not both)."""
    if positional is not None and option is not None and positional != option:
        raise click.UsageError(f"two registries given: {positional!r} and --registry {option!r}")
    target = positional or option
    if target is None:
        raise click.UsageError("give the registry: --registry MODULE:NAME (e.g. app.jobs:registry)")
    return target


limit_option = click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True,
    help="At most this many, newest first.",
)  # fmt: skip


def parse_json(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"is not JSON ({exc}); quote strings: '\"text\"'") from None
