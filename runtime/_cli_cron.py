"""``trioforge cron list``: the registry's schedules, their next fires and last ticks."""

from __future__ import annotations

import datetime as dt
import json

import click

from trioforge._cli_common import (
    database_option,
    iso,
    json_lines_option,
    load_registry,
    registry_option,
    registry_target_of,
    with_client,
)
from trioforge._core.cron import upcoming
from trioforge._terminal import terminal_text as t
from trioforge._timestamps import iso_utc

__all__ = ["cron"]


@click.group()
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
