"""The deploy page's files (examples/deploy/, included by docs/deploy.md): every
``trioforge`` command in them parses with the CLI as it is, and the probes answer as the
page says against a real database and worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import trio

import trioforge
from trioforge._cli import main as cli

DEPLOY = Path(__file__).resolve().parent.parent / "examples" / "deploy"


def commands() -> Iterator[tuple[str, list[str]]]:
    """(file, argv) for each trioforge command line the deploy files run."""
    unit = (DEPLOY / "trioforge-worker.service").read_text()
    for line in re.findall(r"^ExecStart=(.*)$", unit, re.M):
        yield "systemd", line.split()
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for array in re.findall(r"^(?:CMD|HEALTHCHECK .*?CMD) (\[.*\])$", dockerfile, re.M):
        yield "Dockerfile", json.loads(array)
    manifest = (DEPLOY / "kubernetes.yaml").read_text()
    flat = re.sub(r"\n\s+", " ", manifest)  # the multi-line flow sequences, on one line
    for array in re.findall(r"command: (\[[^\]]*\])", flat):
        yield "kubernetes.yaml", json.loads(array)


def parse(argv: list[str]) -> click.Context:
    """Parse argv as the installed CLI would, down to the subcommand (no command runs)."""
    assert Path(argv[0]).name == "trioforge", argv
    ctx = cli.make_context("trioforge", argv[1:])
    command: click.Command = cli
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args for 9.0
            warnings.simplefilter("ignore", DeprecationWarning)
            remaining = [*ctx.protected_args, *ctx.args]
        name, sub, rest = command.resolve_command(ctx, remaining)
        assert sub is not None
        assert name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return ctx


def test_the_deploy_files_run_commands_the_cli_accepts() -> None:
    found = list(commands())
    assert {where for where, _ in found} == {"systemd", "Dockerfile", "kubernetes.yaml"}
    assert len(found) >= 8
    for where, argv in found:
        parse(argv)  # raises click.UsageError on an unknown option or a bad value
        if argv[1] == "worker":  # the graceful stop the page promises
            grace = float(argv[argv.index("--shutdown-grace") + 1])
            assert grace == 30, where
    unit = (DEPLOY / "trioforge-worker.service").read_text()
    assert "TimeoutStopSec=45" in unit  # above the grace: systemd waits for the drain
    assert "terminationGracePeriodSeconds: 45" in (DEPLOY / "kubernetes.yaml").read_text()


def healthcheck(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRIOFORGE_DATABASE_URL": database}
    return subprocess.run(
        [sys.executable, "-m", "trioforge", "healthcheck", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.slow
def test_the_probes_answer_as_the_deploy_page_says(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'jobs.db'}"
    missing = healthcheck(database)
    assert missing.returncode == 1
    assert "trioforge db migrate" in missing.stderr
    ready, stop = threading.Event(), threading.Event()

    async def worker() -> None:
        registry = trioforge.Registry()

        @registry.job("noop")
        async def noop(ctx: trioforge.JobContext) -> None:
            pass

        async with trioforge.open_runtime(registry, database=database, heartbeat_interval=0.2):
            ready.set()
            while not stop.is_set():  # noqa: ASYNC110 (a thread's event, not trio's)
                await trio.sleep(0.05)

    thread = threading.Thread(target=trio.run, args=(worker,))
    thread.start()
    try:
        assert ready.wait(30)
        readiness = healthcheck(database)
        assert readiness.returncode == 0, readiness.stderr
        liveness = healthcheck(database, "--worker", "--max-age", "30")
        assert liveness.returncode == 0, liveness.stderr
        assert "worker(s)" in liveness.stdout
    finally:
        stop.set()
        thread.join(30)
    gone = healthcheck(database, "--worker", "--max-age", "30")  # it left the registry
    assert gone.returncode == 1
    assert "no worker on host" in gone.stderr
