"""``trioforge web``: the dashboard and API as a process of their own."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

import trioforge
from tests.support.fast import FAST

APP = """
import trioforge
registry = trioforge.Registry()

@registry.job("double", public=True)
async def double(ctx: trioforge.JobContext, n: int) -> int:
    await ctx.progress(50, "half")
    return 2 * n
"""


async def test_web_serves_a_registry_and_stops_on_sigint(tmp_path: Path) -> None:
    (tmp_path / "webmod.py").write_text(APP)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    command = [sys.executable, "-m", "trioforge", "web", "--database", url, "--port", "0",
               "--registry", "webmod:registry"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRIOFORGE_WEB_TOKEN"}
    env["PYTHONPATH"] = str(tmp_path)
    proc = await trio.lowlevel.open_process(command, cwd=tmp_path, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    seen = b""
    with trio.fail_after(30):
        while (found := re.search(rb"serving on (http://\S+)", seen)) is None:
            chunk = await proc.stderr.receive_some()
            assert chunk, seen
            seen += chunk
    sys.path.insert(0, str(tmp_path))
    try:
        import webmod  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    async with httpx.AsyncClient(base_url=found.group(1).decode(), timeout=10) as http:
        created = await http.post("/api/jobs/double", json=21)
        job_id = created.json()["id"]
        async with trioforge.open_runtime(webmod.registry, database=url, **FAST) as rt:
            with trio.fail_after(10):
                await rt.wait(job_id)
        snapshot = (await http.get(f"/api/jobs/{job_id}")).json()
        home = await http.get("/")
    proc.send_signal(signal.SIGINT)
    with trio.fail_after(30):
        assert await proc.wait() == 0
    assert created.status_code == 201
    assert (snapshot["status"], snapshot["result"], snapshot["progress"]) == ("completed", 42, 50)
    for field in ("created_at", "started_at", "finished_at"):  # ISO 8601 in UTC, as in the CLI
        assert snapshot[field].endswith("Z"), field
        assert dt.datetime.fromisoformat(snapshot[field]).utcoffset() == dt.timedelta(0)
    assert snapshot["created_at"] <= snapshot["started_at"] <= snapshot["finished_at"]
    assert home.status_code == 200
    assert "read-only" in home.text  # no TRIOFORGE_WEB_TOKEN given
