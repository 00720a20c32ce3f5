"""PostgreSQL through PgBouncer in transaction pooling mode: the pool through the pooler
(no session state kept on it), LISTEN on a direct ``listen_url``, and the warning when
LISTEN goes through the pooler (where it silently never fires) while polling still runs
the jobs."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

import trioforge
from tests.support.pgbouncer import running_pgbouncer
from tests.support.pooled_jobs import forever, registry, work
from tests.support.postgres import URL, create_schema, drop_schema
from trioforge import JobState
from trioforge.storage.postgres import PostgresBackend

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pooler(tmp_path: Path) -> Iterator[str]:
    """The URL of a PgBouncer of this test's own, ``?pooler=transaction`` included."""
    with running_pgbouncer(tmp_path / "pgbouncer") as url:
        yield url


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"tf_test_{uuid.uuid4().hex[:12]}"
    await create_schema(name)
    try:
        yield name
    finally:
        await drop_schema(name)


def _deaf_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "trioforge.postgres" and r.levelno == logging.WARNING
    ]


async def test_runtime_through_pgbouncer_drains_and_cancels_with_a_direct_listener(
    pooler: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = PostgresBackend(pooler, schema=schema, listen_url=URL)
    async with trioforge.open_runtime(
        registry, database=backend, queues={"pooled": 8}, poll_interval=30.0
    ) as rt:
        ids = await rt.enqueue_many(work, range(60))
        with trio.fail_after(20):  # a 30 s poll: only the notices get these done
            finals = [await rt.wait(job_id) for job_id in ids]
        assert {f.status for f in finals} == {JobState.COMPLETED}
        job_id = await rt.enqueue(forever)
        with trio.fail_after(20):
            async with rt.watch(job_id) as updates:
                async for info in updates:
                    if info.status is JobState.RUNNING:
                        break
            await rt.cancel(job_id)
            assert (await rt.wait(job_id)).status is JobState.CANCELLED
    assert _deaf_warnings(caplog) == []


async def test_listen_through_the_pooler_warns_once_and_jobs_still_run_by_polling(
    pooler: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioforge.postgres")
    # No listen_url: both the worker's LISTEN and the client's change feed go via PgBouncer.
    worker = PostgresBackend(pooler, schema=schema)
    async with (
        trioforge.open_runtime(registry, database=worker, queues={"pooled": 4}, poll_interval=0.2),
        trioforge.open_client(PostgresBackend(pooler, schema=schema), registry=registry) as client,
    ):
        ids = await client.enqueue_many(work, range(10))
        # Due after the client's change feed has given up on its probe: its wait is served
        # by the deaf feed's periodic re-reads.
        ids.append(await client.enqueue(work, 10, delay=3.0))
        with trio.fail_after(20):
            finals = [await client.wait(job_id) for job_id in ids]
    assert {f.status for f in finals} == {JobState.COMPLETED}
    warnings = _deaf_warnings(caplog)
    assert len(warnings) == 2, [w.getMessage() for w in warnings]  # one per backend
    for warning in warnings:
        message = warning.getMessage()
        assert "transaction pooler" in message, message
        assert "set listen_url to a direct connection" in message, message


async def _ready(proc: trio.Process) -> bytes:
    """Read the worker's stderr until it says it is ready."""
    assert proc.stderr is not None
    seen = b""
    while b" ready: " not in seen:
        chunk = await proc.stderr.receive_some()
        if not chunk:
            raise AssertionError(f"worker ended before it was ready: {seen.decode()}")
        seen += chunk
    return seen


async def test_two_processes_drain_and_cancel_through_pgbouncer(pooler: str, schema: str) -> None:
    database = f"{pooler}&search_path={schema}"
    command = [
        sys.executable, "-m", "trioforge", "worker", "tests.support.pooled_jobs:registry",
        "--database", database, "--listen-url", URL, "--queue", "pooled=4",
        "--heartbeat-interval", "0.5", "--poll-interval", "30", "--log-level", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    async with trioforge.open_client(database, registry=registry, listen_url=URL) as client:
        workers = [
            await trio.lowlevel.open_process(
                command, cwd=ROOT, stdin=None, stdout=None, stderr=-1, env=env
            )
            for _ in range(2)
        ]
        try:
            with trio.fail_after(60):
                for proc in workers:
                    await _ready(proc)
            ids = await client.enqueue_many(work, range(200))
            with trio.fail_after(30):
                finals = [await client.wait(job_id) for job_id in ids]
            job_id = await client.enqueue(forever)
            with trio.fail_after(20):
                async with client.watch(job_id) as updates:
                    async for info in updates:
                        if info.status is JobState.RUNNING:
                            break
                await client.cancel(job_id)
                cancelled = await client.wait(job_id)
        finally:
            for proc in workers:
                proc.terminate()
            with trio.fail_after(30):
                for proc in workers:
                    await proc.wait()
    assert {f.status for f in finals} == {JobState.COMPLETED}
    assert {f.result for f in finals} == {proc.pid for proc in workers}
    assert cancelled.status is JobState.CANCELLED
