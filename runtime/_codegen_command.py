"""``trioforge codegen typescript``: the typed client module of a registry's public jobs.

The ``trioforge`` command registers it with its own registry loader and error line
(``codegen_command(load_registry, fail)``), so this module needs nothing from the CLI's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import click

from trioforge._codegen import TRACK_MODULE, typescript
from trioforge._core.errors import ConfigurationError
from trioforge._registry import Registry

__all__ = ["codegen_command"]


def codegen_command(
    load_registry: Callable[[str], Registry[Any]], fail: Callable[[str], NoReturn]
) -> click.Group:
    """The ``codegen`` group: ``load_registry`` imports ``MODULE:NAME``, ``fail`` prints
    one error line and exits 1."""

    @click.group()
    def codegen() -> None:
        """Generate typed client code for the web API's public jobs and workflows."""

    @codegen.command("typescript")
    @click.option(
        "--registry", "registry_target", metavar="MODULE:NAME", required=True,
        help="The application's registry: its public=True jobs and workflows are written.",
    )  # fmt: skip
    @click.option(
        "--track-module", default=TRACK_MODULE, show_default=True, metavar="SPECIFIER",
        help="Where the module imports track.js from (the web app serves it, with its "
        "types, at /track.js and /track.d.ts: save both beside the generated file).",
    )  # fmt: skip
    def typescript_command(registry_target: str, track_module: str) -> None:
        """Print a TypeScript module (`> jobs.ts`): for each public job and workflow, its
        payload and result types and a function that enqueues it and returns its
        track.js store."""
        registry = load_registry(registry_target)
        try:
            text = typescript(registry, track_module=track_module)
        except ConfigurationError as exc:
            fail(str(exc))
        if not any(d.public for d in registry):
            click.echo(
                f"note: {registry_target} declares no job or workflow public=True; "
                "the module has no functions",
                err=True,
            )
        click.echo(text, nl=False)

    return codegen
