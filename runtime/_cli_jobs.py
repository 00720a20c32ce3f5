"""``trioforge jobs ...`` and ``trioforge enqueue``: inspect, operate on and enqueue jobs."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from trioforge._cli_common import (
    database_option,
    database_url,
    fail,
    iso,
    job_data,
    job_json,
    json_lines_option,
    json_object_option,
    limit_option,
    load_registry,
    parse_json,
    registry_option,
    run,
    with_client,
)
from trioforge._client import Client
from trioforge._core.states import JobState
from trioforge._policy import describe_retention
from trioforge._runtime import open_client
from trioforge._terminal import terminal_text as t
from trioforge._workflow_info import error_line
from trioforge.storage import AttemptRecord, JobInfo

__all__ = ["enqueue", "jobs"]


@click.group()
def jobs() -> None:
    """Inspect and operate on jobs."""


queue_filter = click.option("--queue", help="Only jobs of this queue.")
name_filter = click.option("--name", help="Only jobs with this name.")


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
        ("retain", describe_retention(info.retain)),
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


@jobs.command()
@click.argument("job_id", type=int)
@json_object_option
@database_option
def delete(job_id: int, as_json: bool, database: str | None) -> None:
    """Delete one finished job (completed, dead, cancelled or compensated) for good, with
    its attempts and, for a workflow run, its steps and signals."""
    was = with_client(database, lambda c: c.delete(job_id))
    if as_json:
        click.echo(json.dumps({"id": job_id, "deleted": True, "status": was.value}))
        return
    click.echo(f"job {job_id}: deleted (it was {was.value})")


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


@click.command()
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
