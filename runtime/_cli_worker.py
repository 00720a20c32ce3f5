"""``trioforge worker``, ``trioforge web`` and the metrics endpoint they serve: the
commands that run a process until it is stopped."""

from __future__ import annotations

import gc
import logging
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Literal

import click
import trio

import trioforge.logging
from trioforge._cli_common import (
    database_option,
    database_url,
    fail,
    listen_url_option,
    load_registry,
    otel_option,
    registry_option,
    registry_target_of,
    run,
)
from trioforge._client import Client
from trioforge._core.errors import TrioforgeError
from trioforge._registry import Registry
from trioforge._runtime import open_client, open_runtime

if TYPE_CHECKING:
    from trioforge.metrics import Metrics
    from trioforge.otel import Tracing

__all__ = ["web", "worker"]


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


#: The collector's thresholds a worker sets once ready (``--gc-threshold``): Python's are
#: (700, 10, 10). A young collection every 10,000 net allocations instead of 700, and a
#: full one at most every 100 middle ones: with tens of thousands of jobs running, each
#: full collection walks every one of them (about 29 objects each), and at Python's
#: thresholds a burst of 50,000 took 19 of them, 5 s of an 8.5 s run.
WORKER_GC_THRESHOLD = (10_000, 50, 100)


def parse_gc_threshold(
    ctx: click.Context, param: click.Parameter, value: str
) -> tuple[int, int, int]:
    del ctx, param
    try:
        g0, g1, g2 = (int(part) for part in value.split(","))
        if min(g0, g1, g2) >= 0:
            return g0, g1, g2
    except ValueError:  # not three parts, or one that is not a whole number
        pass
    raise click.BadParameter(
        f"{value!r} is not three whole numbers G0,G1,G2 (e.g. 10000,50,100; Python's own are "
        "700,10,10)"
    )


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


@click.command()
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
@listen_url_option
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
@click.option(
    "--gc-threshold", callback=parse_gc_threshold, metavar="G0,G1,G2",
    default=",".join(map(str, WORKER_GC_THRESHOLD)), show_default=True,
    help="The garbage collector's thresholds, set once the worker is ready (gc.set_threshold). "
    "700,10,10 restores Python's; G0=0 turns automatic collection off.",
)  # fmt: skip
def worker(
    target: str | None,
    registry_target: str | None,
    queues: dict[str, int] | None,
    database: str | None,
    listen_url: str | None,
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
    gc_threshold: tuple[int, int, int],
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
                        listen_url=listen_url,
                    ) as rt, trio.open_nursery() as scraped:  # fmt: skip
                        if metrics is not None and metrics_port is not None:
                            await serve_metrics(scraped, rt, metrics, metrics_host, metrics_port)
                        pools = ", ".join(f"{q}={n}" for q, n in rt.statistics().queues.items())
                        settle_heap(gc_threshold)
                        say(f"trioforge worker {rt.owner} ready: queues {pools}")
                        await asked_to_stop.wait()
                        scraped.cancel_scope.cancel()
                nursery.cancel_scope.cancel()
        say("trioforge worker: stopped")

    run(serve)


def settle_heap(threshold: tuple[int, int, int] = WORKER_GC_THRESHOLD) -> None:
    """Collect once, move every object left (modules, the registry, the runtime's actors:
    what the process keeps until it exits) out of the collector's reach, then set the
    collector's ``threshold`` (see :data:`WORKER_GC_THRESHOLD`).

    A full collection walks every tracked object: some 40 ms in a started worker, taken
    whenever enough objects have survived since the last one, and every job whose claim
    or start falls in it waits that long (one such pause is several samples of a latency
    percentile). Frozen objects are never walked again, so a full collection then costs
    what the jobs' own objects cost. The worker owns its process, so it may freeze the
    whole heap and tune its collector; ``open_runtime`` inside an application leaves both
    to the application.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)


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


@click.command()
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
