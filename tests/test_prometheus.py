"""A real Prometheus (Debian's package) scraping a worker and ``trioforge web`` together:
its sums over both processes count each job once.

Skipped without a ``prometheus`` binary, except in CI (``CI=true`` or
``TRIOFORGE_REQUIRE_PROMETHEUS=1``, set by .ci/run), where a missing one fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import trioforge
from tests.test_crash_rescue import read_until
from trioforge import JobState

PROMETHEUS = os.environ.get("TRIOFORGE_PROMETHEUS", "prometheus")

APP = """
import trioforge
registry = trioforge.Registry()

@registry.job("square", queue="maths")
async def square(ctx: trioforge.JobContext, n: int) -> int:
    if n < 0:
        raise trioforge.Discard("negative")
    return n * n
"""

CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: worker
    static_configs: [{{targets: ["{worker}"]}}]
  - job_name: web
    static_configs: [{{targets: ["{web}"]}}]
"""


def prometheus_binary() -> str:
    """The binary, or a skip; in CI a failure (a missing Prometheus must not pass)."""
    found = shutil.which(PROMETHEUS)
    if found is not None:
        return found
    missing = f"no {PROMETHEUS!r} binary (apt-get install -y prometheus)"
    if os.environ.get("CI") == "true" or os.environ.get("TRIOFORGE_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"{missing}, and CI says it must be there")
    pytest.skip(missing)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def started(
    command: list[str], cwd: Path, env: dict[str, str], ready: bytes
) -> AsyncIterator[bytes]:
    """A process of ``command``, once its stderr said ``ready`` (what it said so far);
    stopped with SIGINT after the block (SIGKILL if it lingers)."""
    proc = await trio.lowlevel.open_process(command, cwd=cwd, env=env, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        with trio.fail_after(60):
            yield await read_until(proc.stderr, ready, 1)
    finally:
        with trio.CancelScope(shield=True):
            proc.send_signal(signal.SIGINT)
            with trio.move_on_after(30):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def query(http: httpx.AsyncClient, promql: str) -> dict[str, float]:
    """An instant query's vector, keyed by each series' ``state`` label (or "")."""
    answer = (await http.get("/api/v1/query", params={"query": promql})).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return {r["metric"].get("state", ""): float(r["value"][1]) for r in result}


@pytest.mark.slow
async def test_prometheus_sums_over_a_worker_and_the_web_count_each_job_once(
    tmp_path: Path,
) -> None:
    binary = prometheus_binary()
    (tmp_path / "promjobs.py").write_text(APP)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    trioforge_cli = [sys.executable, "-m", "trioforge"]
    worker = [*trioforge_cli, "worker", "promjobs:registry", "--database", url,
              "--queue", "maths=4", "--poll-interval", "0.05", "--metrics-port", "0"]  # fmt: skip
    web = [*trioforge_cli, "web", "--database", url, "--port", "0"]
    async with trioforge.open_client(url) as client:
        square = trioforge.Registry().job("square", queue="maths")(_never_run)
        ids = await client.enqueue_many(square, [*range(1, 31), *range(-5, 0)])
        async with (
            started(worker, tmp_path, env, b"ready") as worker_said,
            started(web, tmp_path, env, b"serving on") as web_said,
        ):
            with trio.fail_after(60):
                ends = [(await client.wait(i)).status for i in ids]
            assert ends == [JobState.COMPLETED] * 30 + [JobState.DEAD] * 5
            worker_at = re.search(rb"metrics on http://([\d.:]+)/metrics", worker_said)
            web_at = re.search(rb"serving on http://([\d.:]+)", web_said)
            assert worker_at is not None, worker_said
            assert web_at is not None, web_said
            config = tmp_path / "prometheus.yml"
            config.write_text(
                CONFIG.format(worker=worker_at.group(1).decode(), web=web_at.group(1).decode())
            )
            port = free_port()
            prometheus = [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path}/tsdb",
                          f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
            async with (
                started(prometheus, tmp_path, env, b"Server is ready to receive web requests"),
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
            ):
                depth = await scraped_after_the_jobs_finished(http)
                completed = await query(http, "sum(trioforge_jobs_completed_total)")
                dead = await query(http, "sum(trioforge_jobs_dead_total)")
                up = await query(http, "sum(up)")
    assert depth["completed"] == 30  # not 60: one process exports the database's counts
    assert depth["dead"] == 5
    assert {state: n for state, n in depth.items() if n} == {"completed": 30, "dead": 5}
    assert (completed, dead, up) == ({"": 30}, {"": 5}, {"": 2})


async def scraped_after_the_jobs_finished(http: httpx.AsyncClient) -> dict[str, float]:
    """``sum by (state)(trioforge_queue_jobs)`` once both targets are up and a scrape has
    seen every job finished (polling Prometheus's API: the condition is its answer)."""
    with trio.fail_after(60):
        while True:
            up = await query(http, "sum(up)")
            depth = await query(http, "sum by (state) (trioforge_queue_jobs)")
            done = await query(http, "sum(trioforge_jobs_completed_total)")
            if up == {"": 2} and done == {"": 30} and depth.get("completed", 0) >= 30:
                return depth
            await trio.sleep(0.25)


async def _never_run(ctx: trioforge.JobContext, n: int) -> int:
    raise AssertionError("runs in the worker process")
