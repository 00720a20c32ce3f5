"""``trioforge workflows ...``: list and show workflow runs, send them signals."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import attrs
import click

from trioforge._cli_common import (
    database_option,
    fail,
    iso,
    job_data,
    json_lines_option,
    json_object_option,
    limit_option,
    with_client,
)
from trioforge._client import Client
from trioforge._core.states import PENDING_STATES, JobState
from trioforge._terminal import terminal_text as t
from trioforge._timestamps import with_iso_times
from trioforge._workflow_info import WorkflowInfo, error_line, short_json, step_detail
from trioforge.storage import NEVER, JobInfo

__all__ = ["workflows"]


@click.group()
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
