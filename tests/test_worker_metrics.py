"""``trioforge worker --metrics-port``: a real worker process's /metrics, scraped and parsed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio
from click.testing import CliRunner

import trioforge
from tests.test_crash_rescue import read_until
from tests.test_metrics import samples, total
from trioforge import JobState
from trioforge._cli import main

APP = """
import trioforge
registry = trioforge.Registry()

@registry.job("square", queue="maths")
async def square(ctx: trioforge.JobContext, n: int) -> int:
    if n < 0:
        raise trioforge.Discard("negative")
    return n * n
"""


async def test_a_worker_serves_its_metrics_when_asked(tmp_path: Path) -> None:
    (tmp_path / "metricsmod.py").write_text(APP)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    command = [sys.executable, "-m", "trioforge", "worker", "metricsmod:registry",
               "--database", url, "--queue", "maths=3", "--poll-interval", "0.05",
               "--metrics-port", "0"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    async with trioforge.open_client(url) as client:
        proc = await trio.lowlevel.open_process(
            command, cwd=tmp_path, stderr=subprocess.PIPE, env=env
        )
        assert proc.stderr is not None
        with trio.fail_after(30):
            seen = await read_until(proc.stderr, b"ready", 1)
        found = re.search(rb"metrics on (http://\S+/metrics)", seen)
        assert found is not None, seen
        square = trioforge.Registry().job("square", queue="maths")(_never_run)
        ids = await client.enqueue_many(square, [1, 2, 3, 4, -1])
        with trio.fail_after(30):
            ends = [await client.wait(i) for i in ids]
        async with httpx.AsyncClient(timeout=10) as http:
            scraped = await http.get(found.group(1).decode())
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await proc.wait() == 0
    assert [e.status for e in ends] == [JobState.COMPLETED] * 4 + [JobState.DEAD]
    assert scraped.status_code == 200
    got = samples(scraped.text)
    labels = (("job", "square"), ("queue", "maths"))
    assert got[("trioforge_jobs_started_total", labels)] == 5
    assert got[("trioforge_jobs_completed_total", labels)] == 4
    assert got[("trioforge_jobs_dead_total", labels)] == 1
    assert total(got, "trioforge_jobs_enqueued_total") == 0  # enqueued by this test's client
    assert got[("trioforge_job_run_seconds_count", labels)] == 5
    assert got[("trioforge_pool_slots", (("queue", "maths"),))] == 3
    assert got[("trioforge_pool_utilisation", (("queue", "maths"),))] == 0
    # Database-wide gauges come from one process (`trioforge web`, or --database-metrics).
    assert total(got, "trioforge_queue_jobs") == total(got, "trioforge_processes") == 0


def test_database_metrics_without_a_metrics_port_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "nometricsmod.py").write_text(APP)
    result = CliRunner().invoke(
        main, ["worker", "nometricsmod:registry", "--database", f"sqlite:///{tmp_path}/x.db",
               "--database-metrics"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--database-metrics exports on --metrics-port" in result.output
    assert not (tmp_path / "x.db").exists()


async def _never_run(ctx: trioforge.JobContext, n: int) -> int:
    raise AssertionError("runs in the worker process")
