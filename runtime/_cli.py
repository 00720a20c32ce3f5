"""The ``trioforge`` command: run workers, inspect and operate on jobs, manage the schema.

Every error is printed as one ``error: ...`` line on stderr with exit status 1 (``--debug``
adds the traceback); usage mistakes exit with 2 (click's convention); success is 0.
Commands that only read never create or migrate a database.

This module is the group and its global ``--debug``; each command group is a module of its
own (``_cli_worker``, ``_cli_jobs``, ``_cli_queues``, ``_cli_db``, ``_cli_workflows``,
``_cli_cron``), and ``_cli_common`` holds what they share.
"""

from __future__ import annotations

import click

from trioforge._cli_common import DEBUG, fail, load_registry
from trioforge._cli_cron import cron
from trioforge._cli_db import db
from trioforge._cli_jobs import enqueue, jobs
from trioforge._cli_queues import healthcheck, queues, workers
from trioforge._cli_worker import web, worker
from trioforge._cli_workflows import workflows
from trioforge._codegen_command import codegen_command

__all__ = ["main"]


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


for _command in (worker, web, jobs, enqueue, healthcheck, workers, queues, db, workflows, cron):
    main.add_command(_command)
main.add_command(codegen_command(load_registry, fail))
