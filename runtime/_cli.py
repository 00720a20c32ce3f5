"""The ``trioforge`` command: run workers, inspect and operate on jobs, manage the schema.

Every error is printed as one ``error: ...`` line on stderr with exit status 1 (``--debug``
adds the traceback); usage mistakes exit with 2 (click's convention); success is 0.
Commands that only read never create or migrate a database.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import signal
import socket
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import attrs
import click
import trio

import trioforge.logging
from trioforge._client import Client
from trioforge._codegen_command import codegen_command
from trioforge._config import resolve_database
from trioforge._core.cron import upcoming
from trioforge._core.errors import ConfigurationError, TrioforgeError, unwrapped
from trioforge._core.states import PENDING_STATES, JobState
from trioforge._registry import Registry
from trioforge._runtime import open_client, open_runtime
from trioforge._terminal import terminal_text as t
from trioforge._timestamps import iso_utc, with_iso_times
from trioforge._workflow_info import WorkflowInfo, error_line, short_json, step_detail
from trioforge.storage import (
    NEVER,
    AttemptRecord,
    Backend,
    JobInfo,
    MemoryBackend,
    SchemaStatus,
    backend_for_url,
    opened,
)
from trioforge.storage._sqlite_health import integrity_problems
from trioforge.storage._urls import redact
from trioforge.storage.sqlite import SQLiteBackend

if TYPE_CHECKING:
    from trioforge.metrics import Metrics
    from trioforge.otel import Tracing

__all__ = ["main"]

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trioforge")
@click.option(
    "--debug", is_flag=True, envvar="TRIOFORGE_DEBUG",
    help="On an error, print its full traceback before the one-line message.",
)  # fmt: skip
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """trioforge: background jobs for trio applications."""
    ctx.meta[DEBUG] = debug


# --- worker ------------------------------------------------------------------------------


def parse_queues(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, int] | None:
    del ctx, param
    queues: dict[str, int] = {}
    for spec in values:
        name, sep, size = spec.partition("=")
        if not sep or not name or not size.isdigit():
            raise click.BadParameter(
                f"{spec!r} is not NAME=CONCURRENCY (e.g. emails=8; emails=0 for a standby pool)"
            )
        queues[name] = int(size)
    return queues or None


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


def check_port_free(host: str, port: int, option: str) -> None:
    """Refuse a port another process listens on, before anything starts (the server's own
    failure to bind is a cancelled task, not a message)."""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another {option}")


def warn_unused_queues(registry: Registry, target: str, queues: Mapping[str, int] | None) -> None:
    """A ``-q`` queue no job of the registry declares is most often a typo."""
    declared = set(registry.queues())
    for name in sorted(set(queues or ()) - declared):
        click.echo(
            f"warning: no job in {target} declares queue {name!r} (its queues: "
            f"{', '.join(sorted(declared)) or 'none'}); the pool runs only jobs enqueued to it "
            "with queue=",
            err=True,
        )


@main.command()
@click.argument("target", metavar="MODULE:REGISTRY", required=False)
@registry_option("The application's registry (or give it as the first argument).")
@click.option(
    "--queue", "-q", "queues", multiple=True, callback=parse_queues, metavar="NAME=CONCURRENCY",
    help="Queue to run and its worker count; repeatable (default: every queue, 10 each). "
    "NAME=0 is a standby pool: the process heartbeats and helps rescue, claims nothing.",
)  # fmt: skip
@database_option
@click.option(
    "--lease-seconds", type=click.FloatRange(min=0, min_open=True), default=30.0,
    show_default=True,
    help="How long a claim holds a job without a heartbeat before another process rescues it.",
)  # fmt: skip
@click.option(
    "--heartbeat-interval", type=click.FloatRange(min=0, min_open=True), default=2.0,
    show_default=True, help="Seconds between heartbeats (they renew this process's leases).",
)  # fmt: skip
@click.option(
    "--poll-interval", type=click.FloatRange(min=0, min_open=True), default=1.0,
    show_default=True,
    help="Seconds between polls for due jobs when no wake-up notice arrives.",
)  # fmt: skip
@click.option(
    "--shutdown-grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
    help="Seconds running jobs get to finish after the first SIGINT/SIGTERM before they "
    "are released.",
)  # fmt: skip
@click.option(
    "--capability", "-c", "capabilities", multiple=True, metavar="NAME",
    help="A capability this worker offers to jobs that require it; repeatable.",
)  # fmt: skip
@otel_option(
    "enqueues and attempts",
    ": configure it in the registry's module, or run the worker under opentelemetry-instrument",
)
@click.option(
    "--log-level",
    default="INFO",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    show_default=True,
    help="Lowest level of log records printed (to stderr).",
)
@click.option(
    "--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]),
    help="text: one line per record, naming the job; json: one JSON object per line with "
    "every field, for log shippers (see docs/logging.md).",
)  # fmt: skip
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=None,
    help="Serve this process's Prometheus metrics on GET /metrics at this port (0: any free "
    "port; the URL is printed). Default: no metrics served.",
)  # fmt: skip
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True,
    help="Address --metrics-port binds.",
)  # fmt: skip
@click.option(
    "--database-metrics", is_flag=True,
    help="Also export the database-wide gauges (trioforge_queue_jobs, trioforge_processes) "
    "on --metrics-port. One scraped process should: `trioforge web` does, so give this only "
    "to one worker of a deployment with no `trioforge web`.",
)  # fmt: skip
def worker(
    target: str | None,
    registry_target: str | None,
    queues: dict[str, int] | None,
    database: str | None,
    lease_seconds: float,
    heartbeat_interval: float,
    poll_interval: float,
    shutdown_grace: float,
    capabilities: tuple[str, ...],
    tracing: Tracing | None,
    log_level: str,
    log_format: Literal["text", "json"],
    metrics_port: int | None,
    metrics_host: str,
    database_metrics: bool,
) -> None:
    """Run the jobs of MODULE:REGISTRY until SIGINT or SIGTERM.

    The first signal drains: no new claims, running jobs get --shutdown-grace seconds, then
    are released for another worker. A second signal stops at once (jobs are released too).
    With --metrics-port, GET /metrics serves this process's counters and pool gauges (and
    with --database-metrics the database-wide gauges) until the worker stops.
    """
    if database_metrics and metrics_port is None:
        raise click.UsageError("--database-metrics exports on --metrics-port; give that too")
    trioforge.logging.configure(log_level, log_format)
    say = _status_lines(log_format)
    target = registry_target_of(target, registry_target)
    registry = load_registry(target)
    warn_unused_queues(registry, target, queues)
    database = database_url(database)
    if metrics_port is not None:
        check_port_free(metrics_host, metrics_port, "--metrics-port")
    metrics = worker_metrics(database_metrics) if metrics_port is not None else None

    async def serve() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            asked_to_stop = trio.Event()
            hard_stop = trio.CancelScope()

            async def watch_signals() -> None:
                async for signum in signals:
                    if asked_to_stop.is_set():
                        say("trioforge worker: second signal, stopping now")
                        hard_stop.cancel()
                    else:
                        name = signal.Signals(signum).name
                        say(f"trioforge worker: {name}, draining")
                        asked_to_stop.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_signals)
                with hard_stop:
                    async with open_runtime(
                        registry, database=database, queues=queues,
                        lease_seconds=lease_seconds, heartbeat_interval=heartbeat_interval,
                        poll_interval=poll_interval, shutdown_grace=shutdown_grace,
                        capabilities=capabilities, tracing=tracing, metrics=metrics,
                    ) as rt, trio.open_nursery() as scraped:  # fmt: skip
                        if metrics is not None and metrics_port is not None:
                            await serve_metrics(scraped, rt, metrics, metrics_host, metrics_port)
                        pools = ", ".join(f"{q}={n}" for q, n in rt.statistics().queues.items())
                        say(f"trioforge worker {rt.owner} ready: queues {pools}")
                        await asked_to_stop.wait()
                        scraped.cancel_scope.cancel()
                nursery.cancel_scope.cancel()
        say("trioforge worker: stopped")

    run(serve)


def worker_metrics(database_gauges: bool) -> Metrics:
    """The collectors ``--metrics-port`` serves (with the database-wide gauges when
    ``--database-metrics`` asks for them); it needs the web and metrics extras."""
    try:
        from trioforge.metrics import Metrics
        from trioforge.web import metrics_app  # noqa: F401 (checked now, served later)
    except TrioforgeError as exc:
        fail(f"--metrics-port: {exc}")
    return Metrics(database_gauges=database_gauges)


def _status_lines(log_format: str) -> Callable[[str], None]:
    """How the worker says ready, draining, stopped: on stderr, or in JSON mode as records
    of ``trioforge.worker`` so that every line is one JSON object."""
    if log_format == "json":
        return logging.getLogger("trioforge.worker").info
    return partial(click.echo, err=True)


async def serve_metrics(
    nursery: trio.Nursery, client: Client, metrics: Metrics, host: str, port: int
) -> None:
    """Serve ``GET /metrics`` in ``nursery`` and print where."""
    from trioforge.web import metrics_app, serve  # the web stack loads only when asked for

    urls = await nursery.start(partial(serve, metrics_app(client, metrics), host=host, port=port))
    click.echo(f"trioforge worker metrics on {' '.join(u + '/metrics' for u in urls)}", err=True)


# --- web ---------------------------------------------------------------------------------


@main.command()
@database_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
    help="Port to bind (0: any free port; the URL is printed).",
)  # fmt: skip
@registry_option(
    "The application's registry: its public=True jobs get POST /api/jobs/NAME, and "
    "the cron page shows its schedules' next fires."
)
@click.option(
    "--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
    help="A frontend origin allowed to call the job API from browsers; repeatable.",
)  # fmt: skip
@otel_option("the jobs POST /api/jobs/NAME enqueues, in the request's trace (traceparent)")
def web(
    database: str | None,
    host: str,
    port: int,
    registry_target: str | None,
    cors_origins: tuple[str, ...],
    tracing: Tracing | None,
) -> None:
    """Serve the dashboard, the job API (JSON, Server-Sent Events, track.js) and /metrics.

    Actions (cancel, retry, discard, pause, retry-all) need the token in
    $TRIOFORGE_WEB_TOKEN; without it the dashboard is read-only. SIGINT/SIGTERM stop it.
    """
    try:
        from trioforge.web import app, serve  # the web stack loads only for this command
    except TrioforgeError as exc:  # the web extra is not installed
        fail(str(exc))

    registry = load_registry(registry_target) if registry_target else None
    database = database_url(database)
    check_port_free(host, port, "--port")

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with (
                open_client(database, registry=registry, tracing=tracing) as client,
                trio.open_nursery() as nursery,
            ):
                asgi = app(client=client, registry=registry, cors_origins=cors_origins)
                urls = await nursery.start(partial(serve, asgi, host=host, port=port))
                click.echo(f"trioforge web serving on {' '.join(urls)}", err=True)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()
        click.echo("trioforge web: stopped", err=True)

    run(main)


# --- jobs ----------------------------------------------------------------------------------


@main.group()
def jobs() -> None:
    """Inspect and operate on jobs."""


queue_filter = click.option("--queue", help="Only jobs of this queue.")
name_filter = click.option("--name", help="Only jobs with this name.")
limit_option = click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True,
    help="At most this many, newest first.",
)  # fmt: skip


@jobs.command("list")
@click.option(
    "--status", type=click.Choice([s.value for s in JobState]), help="Only jobs in this state."
)
@queue_filter
@name_filter
@limit_option
@json_lines_option
@database_option
def list_jobs(
    status: str | None,
    queue: str | None,
    name: str | None,
    limit: int,
    as_json: bool,
    database: str | None,
) -> None:
    """List jobs, newest first."""
    found = with_client(
        database, lambda c: c.list(status=status, queue=queue, name=name, limit=limit)
    )
    if as_json:
        for info in found:
            click.echo(job_json(info))
        return
    header = (
        f"{'ID':>8}  {'NAME':24} {'QUEUE':12} {'STATUS':10} {'TRIES':>5}  {'RUN AT':20} PROGRESS"
    )
    click.echo(header)
    for j in found:
        progress = "-" if j.progress is None else f"{j.progress:.0f}%"
        click.echo(
            f"{j.id:>8}  {t(j.name)[:24]:24} {t(j.queue)[:12]:12} {j.status.value:10} "
            f"{j.attempt:>2}/{j.max_attempts:<2}  {iso(j.run_at):20} {progress}"
        )
    if not found:
        click.echo("(no jobs)")


@jobs.command()
@click.argument("job_id", type=int)
@json_object_option
@database_option
def show(job_id: int, as_json: bool, database: str | None) -> None:
    """Show everything stored about one job."""

    async def go(c: Client) -> tuple[JobInfo, list[AttemptRecord]]:
        return await c.get(job_id), await c.attempts(job_id)

    info, attempts = with_client(database, go)
    if as_json:
        click.echo(json.dumps(job_data(info), sort_keys=True))
        return
    rows = [
        ("id", info.id), ("name", t(info.name)), ("queue", t(info.queue)),
        ("status", info.status.value), ("priority", info.priority),
        ("attempt", f"{info.attempt} of {info.max_attempts}"),
        ("run at", iso(info.run_at)), ("created at", iso(info.created_at)),
        ("started at", iso(info.started_at)), ("finished at", iso(info.finished_at)),
        ("progress", "-" if info.progress is None else f"{info.progress:.0f}% "
                     f"{t(info.progress_message or '')}".rstrip()),
        ("idempotency key", t(info.idempotency_key or "-")),
        ("cancel requested", "yes" if info.cancel_requested else "no"),
        ("payload", json.dumps(info.payload)), ("result", json.dumps(info.result)),
    ]  # fmt: skip
    for label, value in rows:
        click.echo(f"{label:>16}: {value}")
    earlier = attempts[:-1] if info.error else attempts
    for record in earlier:
        click.echo(f"{'attempt ' + str(record.attempt):>16}: started {iso(record.started_at)}")
        click.echo(t(record.error.rstrip(), lines=True))
    if info.error:
        click.echo(f"{'error':>16}:\n{t(info.error, lines=True)}")


@jobs.command()
@click.argument("job_id", type=int)
@database_option
def cancel(job_id: int, database: str | None) -> None:
    """Cancel a job: pending ones never run, running ones are stopped by their owner."""

    async def go(c: Client) -> JobInfo | None:
        return None if await c.cancel(job_id) else await c.get(job_id)

    finished = with_client(database, go)
    if finished is not None:
        fail(f"job {job_id} had already finished ({finished.status.value})")
    click.echo(f"job {job_id}: cancel requested")


@jobs.command()
@click.argument("job_id", type=int)
@database_option
def retry(job_id: int, database: str | None) -> None:
    """Run a dead or cancelled job again, with fresh attempts."""

    async def go(c: Client) -> JobInfo | None:
        return None if await c.retry(job_id) else await c.get(job_id)

    refused = with_client(database, go)
    if refused is not None:
        fail(f"job {job_id} is {refused.status.value}; only dead or cancelled jobs can be retried")
    click.echo(f"job {job_id}: available again")


@jobs.command()
@click.argument("job_id", type=int)
@click.option(
    "--reason", default="discarded by operator", show_default=True,
    help="Why, stored as the job's error.",
)  # fmt: skip
@database_option
def discard(job_id: int, reason: str, database: str | None) -> None:
    """Send a pending job to the dead-letter state without running it."""

    async def go(c: Client) -> JobInfo | None:
        return None if await c.discard(job_id, reason) else await c.get(job_id)

    refused = with_client(database, go)
    if refused is not None:
        fail(f"job {job_id} is {refused.status.value}; only pending jobs can be discarded")
    click.echo(f"job {job_id}: dead ({reason})")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``30s``, ``15m``, ``12h``, ``7d``, ``2w`` or plain seconds, as seconds."""
    if value is None:
        return None
    text = value.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration like 30s, 15m, 12h or 7d") from None
    if not seconds >= 0:
        raise click.BadParameter("a duration must be >= 0")
    return seconds


def _since(age: float | None) -> float | None:
    return None if age is None else time.time() - age


@jobs.command("retry-all")
@click.option(
    "--status", type=click.Choice(["dead", "cancelled"]), default="dead", show_default=True,
    help="Which finished jobs to run again.",
)  # fmt: skip
@queue_filter
@name_filter
@click.option("--since", callback=parse_age, help="Only jobs that ended within this long (7d).")
@database_option
def retry_all(
    status: str, queue: str | None, name: str | None, since: float | None, database: str | None
) -> None:
    """Run every matching dead (or cancelled) job again, with fresh attempts."""
    done = with_client(
        database,
        lambda c: c.retry_many(status=status, queue=queue, name=name, since=_since(since)),
    )
    click.echo(f"{len(done)} job(s) available again")


@jobs.command("discard-all")
@click.option(
    "--status", type=click.Choice(["scheduled", "available", "retrying"]),
    help="Only pending jobs in this state (default: every pending state).",
)  # fmt: skip
@queue_filter
@name_filter
@click.option("--since", callback=parse_age, help="Only jobs enqueued within this long (1h).")
@click.option(
    "--reason", default="discarded by operator", show_default=True,
    help="Why, stored as each job's error.",
)  # fmt: skip
@database_option
def discard_all(
    status: str | None,
    queue: str | None,
    name: str | None,
    since: float | None,
    reason: str,
    database: str | None,
) -> None:
    """Send every matching pending job to the dead-letter state without running it."""
    done = with_client(
        database,
        lambda c: c.discard_many(
            status=status, queue=queue, name=name, since=_since(since), reason=reason
        ),
    )
    click.echo(f"{len(done)} job(s) dead ({reason})")


@jobs.command()
@click.option(
    "--status", required=True,
    type=click.Choice(["completed", "dead", "cancelled", "compensated"]),
    multiple=True, help="Delete finished jobs in this state; repeatable.",
)  # fmt: skip
@click.option(
    "--older-than", required=True, callback=parse_age,
    help="Only jobs that ended more than this long ago: 30s, 15m, 12h, 7d, 2w.",
)  # fmt: skip
@queue_filter
@database_option
def purge(
    status: tuple[str, ...], older_than: float, queue: str | None, database: str | None
) -> None:
    """Delete finished jobs that ended more than --older-than ago, in small batches."""

    async def go(c: Client) -> int:
        return sum([await c.purge(status=s, older_than=older_than, queue=queue) for s in status])

    click.echo(f"{with_client(database, go)} job(s) deleted")


# --- enqueue and healthcheck -------------------------------------------------------------


def parse_json(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"is not JSON ({exc}); quote strings: '\"text\"'") from None


@main.command()
@click.argument("name")
@registry_option(
    "The application's registry, which declares NAME (the payload is checked against its "
    "declared type).",
    required=True,
)
@click.option(
    "--payload", metavar="JSON", callback=parse_json,
    help="The job's payload, as JSON text (default: none, for jobs that take no payload).",
)  # fmt: skip
@click.option(
    "--delay",
    callback=parse_age,
    metavar="DURATION",
    help="Run no sooner than this long from now: 30s, 15m, 2h.",
)
@click.option("--queue", help="Put the job on this queue instead of its declared one.")
@click.option(
    "--priority", type=click.Choice(["low", "normal", "high", "critical"]),
    help="Claim order among due jobs of the queue (default: the job's declared priority).",
)  # fmt: skip
@click.option(
    "--key", "idempotency_key",
    help="Idempotency key: while an unfinished job holds it, that job's id is printed and "
    "nothing new is stored.",
)  # fmt: skip
@click.option(
    "--wait", is_flag=True,
    help="Wait for the job to end and print its result as JSON; exit 1 if it ends dead, "
    "cancelled or compensated.",
)  # fmt: skip
@database_option
def enqueue(
    name: str,
    registry_target: str,
    payload: Any,
    delay: float | None,
    queue: str | None,
    priority: str | None,
    idempotency_key: str | None,
    wait: bool,
    database: str | None,
) -> None:
    """Enqueue job NAME of the registry and print its id (then, with --wait, its result)."""
    registry = load_registry(registry_target)
    url = database_url(database)

    async def go() -> JobInfo | None:
        async with open_client(url, registry=registry, migrate=False) as client:
            options: dict[str, Any] = {"delay": delay, "queue": queue, "priority": priority}
            job = await client.enqueue(
                name, payload, idempotency_key=idempotency_key,
                **{k: v for k, v in options.items() if v is not None},
            )  # fmt: skip
            click.echo(job.id)
            return await client.wait(job) if wait else None

    ended = run(go)
    if ended is None:
        return
    if ended.status is not JobState.COMPLETED:
        error = f": {error_line(ended.error)}" if ended.error else ""
        fail(f"job {ended.id} ended {ended.status.value}{error}")
    click.echo(json.dumps(ended.result))


@main.command()
@click.option(
    "--worker", "worker_on_host", is_flag=True,
    help="Also require a worker process on this host that heartbeated within --max-age.",
)  # fmt: skip
@click.option(
    "--max-age", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
    help="Seconds since its last heartbeat for a worker to count as alive (with --worker).",
)  # fmt: skip
@database_option
def healthcheck(worker_on_host: bool, max_age: float, database: str | None) -> None:
    """Exit 0 if the database answers and its schema is current (and, with --worker, a
    worker on this host heartbeats): a liveness or readiness probe for Docker/Kubernetes."""
    host = socket.gethostname()

    async def go(c: Client) -> str:
        if not worker_on_host:
            return "database answers, schema current"
        now = time.time()
        alive = [
            p for p in await c.processes()
            if p.details is not None and p.details.host == host and now - p.heartbeat_at <= max_age
        ]  # fmt: skip
        if not alive:
            raise ConfigurationError(
                f"no worker on host {host!r} heartbeated in the last {max_age:g}s "
                "(see `trioforge workers list`)"
            )
        return f"database answers, schema current, {len(alive)} worker(s) on {host} alive"

    click.echo(f"ok: {with_client(database, go)}")


# --- workers -------------------------------------------------------------------------------


@main.group()
def workers() -> None:
    """Inspect the worker processes registered on the database."""


@workers.command("list")
@json_lines_option
@database_option
def list_workers(as_json: bool, database: str | None) -> None:
    """Every process heartbeating on the database: owner, host, pid, queue pools,
    capabilities, heartbeat age and running jobs."""
    found = with_client(database, lambda c: c.processes())
    now = time.time()
    if as_json:
        for p in found:
            d = p.details
            click.echo(json.dumps({
                "owner": p.owner, "queues": list(p.queues), "started_at": iso_utc(p.started_at),
                "heartbeat_at": iso_utc(p.heartbeat_at), "heartbeat_age": now - p.heartbeat_at,
                "host": d.host if d else None, "pid": d.pid if d else None,
                "pools": dict(d.pools) if d else None,
                "capabilities": list(d.capabilities) if d else None,
                "running": d.running if d else None,
            }, sort_keys=True))  # fmt: skip
        return
    if not found:
        click.echo("(no workers)")
        return
    for p in found:
        d = p.details
        pools = ",".join(f"{t(q)}={n}" for q, n in d.pools) if d else t(",".join(p.queues))
        where = f"{t(d.host)} pid {d.pid}" if d else "-"
        caps = t(",".join(d.capabilities)) if d and d.capabilities else "-"
        running = str(d.running) if d else "-"
        click.echo(
            f"{t(p.owner)}  {where}  queues {pools}  capabilities {caps}  "
            f"heartbeat {now - p.heartbeat_at:.1f}s ago  running {running}"
        )


# --- queues --------------------------------------------------------------------------------


@main.group()
def queues() -> None:
    """Inspect queues; pause and resume claims on them."""


@queues.command("list")
@json_lines_option
@database_option
def list_queues(as_json: bool, database: str | None) -> None:
    """Every queue that has jobs or is paused, with its job counts, and the names of its
    waiting jobs that no live worker runs (UNSERVED)."""
    found = with_client(database, lambda c: c.queues())
    if as_json:
        for q in found:
            by_state = {s.value: q.counts.get(s, 0) for s in JobState}
            click.echo(
                json.dumps(
                    {
                        "name": q.name,
                        "paused": q.paused,
                        "counts": by_state,
                        "unserved": list(q.unserved),
                    }
                )
            )
        return
    states = [JobState.SCHEDULED, JobState.AVAILABLE, JobState.RUNNING, JobState.RETRYING]
    states += [JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED]
    click.echo(
        f"{'QUEUE':16} {'STATE':7} "
        + " ".join(f"{s.value.upper():>9}" for s in states)
        + " UNSERVED"
    )
    for q in found:
        counts = " ".join(f"{q.counts.get(s, 0):>9}" for s in states)
        unserved = t(",".join(q.unserved)) or "-"
        click.echo(
            f"{t(q.name)[:16]:16} {'paused' if q.paused else 'active':7} {counts} {unserved}"
        )
    if not found:
        click.echo("(no queues)")


async def known_queues(client: Client) -> set[str]:
    """Queues the database knows: with jobs, paused, or served by a live process."""
    names = {q.name for q in await client.queues()}
    for process in await client.processes():
        names.update(process.queues)
        if process.details is not None:
            names.update(q for q, _ in process.details.pools)
    return names


@queues.command()
@click.argument("queue")
@click.option(
    "--force", is_flag=True,
    help="Pause a queue that has no jobs and no worker yet (claims stay paused when it gets some).",
)  # fmt: skip
@database_option
def pause(queue: str, force: bool, database: str | None) -> None:
    """Stop every worker from claiming QUEUE's jobs (running ones finish)."""

    async def go(c: Client) -> bool | set[str]:
        known = await known_queues(c)
        if queue not in known and not force:
            return known
        return await c.pause(queue)

    changed = with_client(database, go)
    if isinstance(changed, set):
        names = ", ".join(repr(n) for n in sorted(changed)) or "none yet"
        fail(
            f"no queue {queue!r} has jobs or workers (known queues: {names}); "
            "pass --force to pause it before its first use"
        )
    click.echo(f"queue {queue}: paused" + ("" if changed else " (it already was)"))


@queues.command()
@click.argument("queue")
@database_option
def resume(queue: str, database: str | None) -> None:
    """Let workers claim QUEUE's jobs again."""
    changed = with_client(database, lambda c: c.resume(queue))
    click.echo(f"queue {queue}: active" + ("" if changed else " (it was not paused)"))


# --- db ------------------------------------------------------------------------------------


@main.group()
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


# --- workflows -----------------------------------------------------------------------------


@main.group()
def workflows() -> None:
    """Inspect workflow runs and send them signals."""


def run_json(info: JobInfo) -> dict[str, Any]:
    data = job_data(info)
    data["workflow"], data["version"] = split_run_name(info.name)
    return data


def split_run_name(job_name: str) -> tuple[str, int | None]:
    """A run's workflow name and version from its job name ``name@vN``."""
    name, _, version = job_name.rpartition("@v")
    return (name, int(version)) if name and version.isdigit() else (job_name, None)


@workflows.command("list")
@click.option(
    "--status", type=click.Choice([s.value for s in JobState]), help="Only runs in this state."
)
@click.option("--name", help="Only runs of this workflow (every version).")
@limit_option
@json_lines_option
@database_option
def list_runs(
    status: str | None, name: str | None, limit: int, as_json: bool, database: str | None
) -> None:
    """List workflow runs, newest first."""
    found = with_client(database, lambda c: c.runs(status=status, name=name, limit=limit))
    if as_json:
        for info in found:
            click.echo(json.dumps(run_json(info), sort_keys=True))
        return
    click.echo(
        f"{'ID':>8}  {'WORKFLOW':24} {'VER':>4}  {'STATUS':11} {'CREATED AT':20} FINISHED AT"
    )
    for j in found:
        workflow, version = split_run_name(j.name)
        click.echo(
            f"{j.id:>8}  {t(workflow)[:24]:24} {version or '-':>4}  {j.status.value:11} "
            f"{iso(j.created_at):20} {iso(j.finished_at)}"
        )
    if not found:
        click.echo("(no workflow runs)")


def waiting_for(info: WorkflowInfo, now: float) -> str | None:
    """Why a pending run has not run yet: its wake time, or the worker it needs."""
    job = info.job
    if job.status not in PENDING_STATES:
        return None
    needs = (
        f"a worker whose registry has workflow {info.name!r} version {info.version} "
        f"(job name {job.name!r}) on queue {job.queue!r}"
    )
    if job.run_at >= NEVER:
        return f"waits for a signal or its children; then for {needs}"
    if job.run_at > now:
        return f"waits until {iso(job.run_at)}; then for {needs}"
    return f"due since {iso(job.run_at)}: waits for {needs}"


def workflow_json(info: WorkflowInfo) -> str:
    steps = [with_iso_times(attrs.asdict(s)) for s in info.steps]
    data = run_json(info.job) | {
        "steps": steps,
        "pending_signals": [{"name": n, "payload": p} for n, p in info.pending_signals],
        "children": list(info.children),
    }
    return json.dumps(data, sort_keys=True)


@workflows.command("show")
@click.argument("run_id", type=int)
@json_object_option
@database_option
def show_run(run_id: int, as_json: bool, database: str | None) -> None:
    """Show a workflow run: its status, version, every step, signals and children."""
    info = with_client(database, lambda c: c.workflow(run_id))
    if as_json:
        click.echo(workflow_json(info))
        return
    job = info.job
    rows = [
        ("run", job.id), ("workflow", t(info.name)), ("version", info.version),
        ("queue", t(job.queue)), ("status", job.status.value),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("created at", iso(job.created_at)), ("run at", iso(job.run_at)),
        ("finished at", iso(job.finished_at)),
        ("cancel requested", "yes" if job.cancel_requested else "no"),
        ("result", json.dumps(job.result)),
    ]  # fmt: skip
    for label, value in rows:
        click.echo(f"{label:>16}: {value}")
    if job.error:
        click.echo(f"{'error':>16}: {t(error_line(job.error))}")
    why = waiting_for(info, dt.datetime.now(dt.UTC).timestamp())
    if why is not None:
        click.echo(f"{'waiting':>16}: {t(why)}")
    click.echo("steps:")
    if not info.steps:
        click.echo("  (none recorded yet)")
    else:
        click.echo(
            f"  {'SEQ':>3}  {'KIND':12} {'NAME':24} {'STATUS':11} {'TRIES':>5}  "
            f"{'STARTED AT':20} {'FINISHED AT':20} DETAIL"
        )
    for step in info.steps:
        click.echo(
            f"  {step.seq:>3}  {step.kind.value:12} {t(step.name)[:24]:24} "
            f"{step.status.value:11} {step.attempts:>5}  {iso(step.started_at):20} "
            f"{iso(step.finished_at):20} {t(step_detail(step, iso))}"
        )
    if info.pending_signals:
        click.echo("pending signals:")
        for name, payload in info.pending_signals:
            click.echo(f"  {t(name)}: {short_json(payload)}")
    if info.children:
        click.echo("children: " + ", ".join(str(c) for c in info.children))


@workflows.command("signal")
@click.argument("run_id", type=int)
@click.argument("name")
@click.option("--payload", metavar="JSON", default="true", show_default=True,
              help="The signal's payload, as JSON text.")  # fmt: skip
@database_option
def signal_run(run_id: int, name: str, payload: str, database: str | None) -> None:
    """Send signal NAME to workflow run RUN_ID (kept until a wait for it takes it)."""
    try:
        value = json.loads(payload)
    except json.JSONDecodeError as exc:
        fail(f"--payload is not JSON ({exc}); quote strings, e.g. --payload '\"yes\"'")

    async def go(c: Client) -> int:
        await c.workflow(run_id)  # refuses a job that is not a workflow run
        return await c.signal(run_id, name, value)

    signal_id = with_client(database, go)
    click.echo(f"run {run_id}: signal {name!r} sent (signal id {signal_id})")


@main.group()
def cron() -> None:
    """Inspect cron schedules."""


@cron.command("list")
@click.argument("target", metavar="MODULE:REGISTRY", required=False)
@registry_option("The application's registry (the first argument works too).")
@click.option(
    "--count", type=click.IntRange(min=1), default=3, show_default=True,
    help="How many next fires to show per schedule.",
)  # fmt: skip
@json_lines_option
@database_option
def cron_list(
    target: str | None, registry_target: str | None, count: int, as_json: bool,
    database: str | None,
) -> None:  # fmt: skip
    """Each schedule of the registry: its next fires and the last tick handled."""
    registry = load_registry(registry_target_of(target, registry_target))
    schedules = registry.schedules()
    known = with_client(database, lambda client: client.cron_states()) if schedules else {}
    now = dt.datetime.now(dt.UTC)
    if as_json:
        for definition in schedules:
            assert definition.cron is not None
            state = known.get(definition.name)
            fires = upcoming(definition.cron.schedule, now, count)
            click.echo(json.dumps({
                "name": definition.name, "expression": definition.cron.schedule.expr,
                "timezone": str(definition.cron.schedule.timezone),
                "last_tick": None if state is None else iso_utc(state.last_tick),
                "skipped": 0 if state is None else state.skipped,
                "next": None if isinstance(fires, str) else [f.isoformat() for f in fires],
                "error": fires if isinstance(fires, str) else None,
            }))  # fmt: skip
        return
    if not schedules:
        click.echo("(no cron schedules)")
        return
    for definition in schedules:
        assert definition.cron is not None
        schedule = definition.cron.schedule
        state = known.get(definition.name)
        last = "never" if state is None else iso(state.last_tick)
        click.echo(
            f"{t(definition.name)}: {schedule.expr!r} in {schedule.timezone}, last tick {last}"
        )
        if state is not None and state.skipped:
            click.echo(f"  skipped while the previous run was unfinished: {state.skipped}")
        fires = upcoming(schedule, now, count)
        if isinstance(fires, str):
            click.echo(f"  next: unknown, its ticks cannot be computed ({t(fires)})")
        else:
            for fire in fires:
                click.echo(f"  next {fire.isoformat()}")


main.add_command(codegen_command(load_registry, fail))
