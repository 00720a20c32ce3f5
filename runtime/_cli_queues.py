"""``trioforge workers``, ``trioforge queues`` and ``trioforge healthcheck``: the
processes serving the queues, the queues themselves, and a probe of both."""

from __future__ import annotations

import json
import socket
import time

import click

from trioforge._cli_common import database_option, fail, json_lines_option, with_client
from trioforge._client import Client
from trioforge._core.errors import ConfigurationError
from trioforge._core.states import JobState
from trioforge._terminal import terminal_text as t
from trioforge._timestamps import iso_utc
from trioforge.storage import ProcessDetails

__all__ = ["healthcheck", "queues", "workers"]


@click.command()
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


@click.group()
def workers() -> None:
    """Inspect the worker processes registered on the database."""


@workers.command("list")
@json_lines_option
@database_option
def list_workers(as_json: bool, database: str | None) -> None:
    """Every process heartbeating on the database: owner, host, pid, queue pools,
    capabilities, whether an enqueue can wake it alone (PostgreSQL: its listener hears a
    channel of its own; "-" where it cannot, as behind a transaction pooler without
    listen_url), heartbeat age and running jobs."""
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
                "addressed": _addressed(d, now),
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
        addressed = "yes" if _addressed(d, now) else "-"
        click.echo(
            f"{t(p.owner)}  {where}  queues {pools}  capabilities {caps}  "
            f"addressed {addressed}  heartbeat {now - p.heartbeat_at:.1f}s ago  running {running}"
        )


def _addressed(details: ProcessDetails | None, now: float) -> bool:
    """Whether an enqueue may address its wake-up to this process alone now."""
    return bool(details and details.wake_channel and (details.wake_until or 0.0) > now)


@click.group()
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
