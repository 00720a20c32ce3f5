"""``pip install 'trioforge[postgres,web]'`` in a fresh virtualenv: a worker on PostgreSQL
and ``trioforge web`` both come up and serve (and /metrics, whose extra is missing, says
which one to install)."""

from __future__ import annotations

import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import trioforge
from tests.support.install import Venv, venv
from tests.support.postgres import require_postgres, schema_url
from trioforge import JobContext, Registry

pytestmark = pytest.mark.slow

APP = """
import trioforge
registry = trioforge.Registry()
@registry.job("shout")
async def shout(ctx: trioforge.JobContext, text: str) -> str:
    return text.upper()
"""


@pytest.fixture(scope="module")
def extras(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    require_postgres()
    return venv(tmp_path_factory, "postgres,web")


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with schema_url() as opened:
        yield opened


async def shout_handler(ctx: JobContext, text: str) -> str:
    raise AssertionError("run by the installed worker, not here")


async def started(command: list[str], cwd: Path, until: bytes) -> tuple[trio.Process, bytes]:
    """The process, once its stderr printed the line with ``until`` (and all so far)."""
    proc = await trio.lowlevel.open_process(command, cwd=cwd, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = b""
    with trio.fail_after(60):
        while until not in seen or b"\n" not in seen.partition(until)[2]:
            chunk = await proc.stderr.receive_some()
            assert chunk, seen
            seen += chunk
    return proc, seen


async def stopped(proc: trio.Process) -> int:
    proc.send_signal(signal.SIGINT)
    with trio.fail_after(30):
        return await proc.wait()


async def test_a_worker_on_postgresql_runs_jobs(extras: Venv, url: str, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    shout = Registry().job("shout")(shout_handler)
    async with trioforge.open_client(url) as client:
        job_id = await client.enqueue(shout, "hi")
        command = [extras.trioforge, "worker", "app:registry", "--database", url]
        proc, _ = await started(command, tmp_path, b"ready")
        try:
            with trio.fail_after(30):
                assert (await client.wait(job_id)).result == "HI"
        finally:
            assert await stopped(proc) == 0


def get(address: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(address, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_the_web_app_serves(extras: Venv, url: str, tmp_path: Path) -> None:
    command = [extras.trioforge, "web", "--database", url, "--port", "0"]
    proc, seen = await started(command, tmp_path, b"serving on")
    try:
        match = re.search(rb"serving on (http://\S+)", seen)
        assert match is not None, seen
        base = match.group(1).decode()
        status, page = await trio.to_thread.run_sync(get, base + "/")
        assert status == 200
        assert "trioforge" in page
        status, body = await trio.to_thread.run_sync(get, base + "/metrics")
        assert (status, body.strip()) == (
            501,
            "GET /metrics needs the metrics extra: pip install 'trioforge[metrics]'",
        )
    finally:
        assert await stopped(proc) == 0
