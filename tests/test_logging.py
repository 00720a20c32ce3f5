"""Logs are events: one ``trioforge.attempts`` record per attempt event, with the job's
fields in ``extra``, rendered the same by the text and JSON formatters."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioforge
import trioforge.logging
from tests.support.fast import FAST
from trioforge import Discard, JobContext, JobState, Registry, Retry, WorkflowContext
from trioforge.storage import Backend, ops


class Records(logging.Handler):
    """Every record of the trioforge loggers, DEBUG and up, while in use."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, job_id: int) -> list[str]:
        return [r.event for r in self.of(job_id)]  # type: ignore[attr-defined]

    def of(self, job_id: int, event: str | None = None) -> list[logging.LogRecord]:
        return [
            r
            for r in self.records
            if r.name == "trioforge.attempts"
            and getattr(r, "job_id", None) == job_id
            and (event is None or getattr(r, "event", None) == event)
        ]

    def one(self, job_id: int, event: str) -> logging.LogRecord:
        found = self.of(job_id, event)
        assert len(found) == 1, (event, [r.getMessage() for r in self.records])
        return found[0]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("trioforge")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def fields(record: logging.LogRecord, *names: str) -> dict[str, Any]:
    return {n: getattr(record, n, None) for n in names}


def make_registry(started: dict[str, trio.Event]) -> Registry:
    """Jobs that end each way; ``hang`` sets ``started["hang"]`` when it runs."""
    registry = Registry()

    @registry.job("welcome", queue="emails", retry=Retry(max_attempts=5))
    async def welcome(ctx: JobContext, user: str) -> str:
        ctx.log.info("writing to %s", user)
        return f"hi {user}"

    @registry.job("flaky", queue="emails", retry=Retry(max_attempts=2, base_delay=0.01))
    async def flaky(ctx: JobContext, user: str) -> None:
        raise ConnectionError(f"smtp refused {user}\nthe rest of the story")

    @registry.job("spam", retry=Retry(max_attempts=3))
    async def spam(ctx: JobContext) -> None:
        raise Discard("looks like spam")

    @registry.job("slow", timeout=0.1, retry=Retry(max_attempts=1))
    async def slow(ctx: JobContext) -> None:
        await trio.sleep_forever()

    @registry.job("hang")
    async def hang(ctx: JobContext) -> None:
        started["hang"].set()
        await trio.sleep_forever()

    @registry.workflow("onboard")
    async def onboard(ctx: WorkflowContext, user: str) -> str:
        await ctx.sleep(0.05)
        return f"onboarded {user}"

    return registry


async def test_each_attempt_event_is_one_record_with_the_jobs_fields(
    database: str | Backend, records: Records
) -> None:
    started = {"hang": trio.Event()}
    registry = make_registry(started)
    with trio.fail_after(30):
        async with trioforge.open_runtime(
            registry, database=database, shutdown_grace=0.0, **FAST
        ) as rt:
            ok = (await rt.enqueue("welcome", "ada")).id
            flaky = (await rt.enqueue("flaky", "bob")).id
            spam = (await rt.enqueue("spam")).id
            slow = (await rt.enqueue("slow")).id
            run = (await rt.enqueue("onboard", "cy")).id
            for job_id in (ok, flaky, spam, slow, run):
                await rt.wait(job_id)
            cancelled = (await rt.enqueue("hang")).id
            await started["hang"].wait()
            await rt.cancel(cancelled)
            await rt.wait(cancelled)
            started["hang"] = trio.Event()
            released = (await rt.enqueue("hang")).id  # running as the runtime stops
            await started["hang"].wait()

    base = ("job_id", "job_name", "queue", "attempt", "max_attempts")
    done = records.one(ok, "completed")
    assert fields(done, *base, "state") == {
        "job_id": ok, "job_name": "welcome", "queue": "emails", "attempt": 1,
        "max_attempts": 5, "state": "completed",
    }  # fmt: skip
    assert done.levelno == logging.INFO
    assert done.duration >= 0  # type: ignore[attr-defined]
    assert done.getMessage().startswith(f"job {ok} emails:welcome attempt 1/5 completed in ")
    assert records.events(ok) == ["started", "completed"]
    assert records.one(ok, "started").levelno == logging.DEBUG
    said = [r for r in records.records if r.name == "trioforge.job"]
    assert fields(said[0], *base) == fields(done, *base)

    retried, dead = records.of(flaky, "failed")
    assert retried.levelno == logging.WARNING
    assert dead.levelno == logging.ERROR
    assert fields(retried, "attempt", "state", "error") == {
        "attempt": 1, "state": "retrying", "error": "ConnectionError: smtp refused bob",
    }  # fmt: skip
    assert 0 <= retried.retry_in <= 0.01 + 1e-6  # type: ignore[attr-defined]
    assert retried.getMessage().endswith(
        f"failed in {retried.duration:.3f}s: ConnectionError: smtp refused bob; "  # type: ignore[attr-defined]
        f"retry in {retried.retry_in:.1f}s"  # type: ignore[attr-defined]
    )
    assert fields(dead, "attempt", "state") == {"attempt": 2, "state": "dead"}
    assert dead.getMessage().endswith("; dead")

    discarded = records.one(spam, "discarded")
    assert fields(discarded, "state", "error") == {"state": "dead", "error": "looks like spam"}

    timed_out = records.one(slow, "timed_out")
    assert timed_out.state == "dead"  # type: ignore[attr-defined]
    assert timed_out.levelno == logging.ERROR
    assert "timed out after 0.1" in timed_out.getMessage()

    suspended = records.one(run, "suspended")
    assert fields(suspended, "job_name", "state", "why") == {
        "job_name": "onboard@v1", "state": "scheduled", "why": "sleep",
    }  # fmt: skip
    assert suspended.wake_at > suspended.created - 1  # type: ignore[attr-defined]
    assert records.one(run, "resumed").steps == 1  # type: ignore[attr-defined]
    assert records.events(run) == ["started", "suspended", "started", "resumed", "completed"]

    stopped = records.one(cancelled, "cancelled")
    assert stopped.state == "cancelled"  # type: ignore[attr-defined]
    let_go = records.one(released, "released")
    assert let_go.state == "available"  # type: ignore[attr-defined]
    assert "the worker is stopping" in let_go.getMessage()


async def test_a_rescued_job_is_logged_with_its_fields(
    database: str | Backend, records: Records
) -> None:
    registry = Registry()

    @registry.job("work", retry=Retry(max_attempts=3))
    async def work(ctx: JobContext) -> str:
        return "done"

    async with trioforge.open_client(database, registry=registry) as client:
        job_id = (await client.enqueue("work")).id
        # Claimed by a process that is gone, its lease long expired.
        claim = ops.Claim("default", frozenset({"work"}), 1, "crashed-owner", lease_until=1.0)
        claimed = await client._storage.call(claim)
        assert [j.id for j in claimed.jobs] == [job_id]
    with trio.fail_after(30):
        async with trioforge.open_runtime(
            registry, database=database, rescue_interval=0.05, **FAST
        ) as rt:
            assert (await rt.wait(job_id)).status is JobState.COMPLETED
    rescued = records.one(job_id, "rescued")
    assert rescued.levelno == logging.WARNING
    assert fields(rescued, "job_name", "queue", "attempt", "max_attempts", "state") == {
        "job_name": "work", "queue": "default", "attempt": 1, "max_attempts": 3,
        "state": "retrying",
    }  # fmt: skip
    assert "rescued: its worker stopped heartbeating; retry now" in rescued.getMessage()


def record_of(**extra: Any) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "trioforge.attempts", "levelno": logging.WARNING, "levelname": "WARNING",
         "msg": "%s", "args": ("went wrong",)}
    )  # fmt: skip
    record.__dict__.update(extra)
    return record


def test_the_json_formatter_writes_every_field_on_one_line() -> None:
    record = record_of(
        event="failed", job_id=42, job_name="welcome", queue="emails", attempt=2,
        max_attempts=5, duration=0.31, retry_in=2.0, odd={1, 2},
    )  # fmt: skip
    try:
        raise ConnectionError("refused\nsecond line")
    except ConnectionError:
        record.exc_info = sys.exc_info()
    line = trioforge.logging.JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["time"].endswith("Z")
    assert data["level"] == "WARNING"
    assert data["logger"] == "trioforge.attempts"
    assert data["message"] == "went wrong"
    assert {k: data[k] for k in ("event", "job_id", "job_name", "queue", "attempt")} == {
        "event": "failed", "job_id": 42, "job_name": "welcome", "queue": "emails", "attempt": 2,
    }  # fmt: skip
    assert data["max_attempts"] == 5
    assert data["duration"] == 0.31
    assert data["retry_in"] == 2.0
    assert data["odd"] == "{1, 2}"  # what JSON cannot hold, as text
    assert data["exception"].splitlines()[-2:] == ["ConnectionError: refused", "second line"]


def test_the_text_formatter_names_the_job_of_a_handlers_record() -> None:
    formatter = trioforge.logging.TextFormatter("%(levelname)s %(message)s")
    handlers = record_of(job_id=7, job_name="welcome", queue="emails", attempt=1, max_attempts=3)
    assert formatter.format(handlers) == "WARNING job 7 emails:welcome attempt 1/3: went wrong"
    event = record_of(job_id=7, job_name="welcome", queue="emails", event="completed")
    assert formatter.format(event) == "WARNING went wrong"  # an event says it itself
    assert formatter.format(record_of()) == "WARNING went wrong"


def test_configure_sends_records_in_the_format_asked_for() -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    stream = io.StringIO()
    try:
        trioforge.logging.configure("INFO", "json", stream=stream)
        logging.getLogger("trioforge.test").info("hello", extra={"job_id": 3})
        assert json.loads(stream.getvalue())["job_id"] == 3
        with pytest.raises(trioforge.ConfigurationError, match="'text' or 'json'"):
            trioforge.logging.configure("INFO", "xml")  # type: ignore[arg-type]
    finally:
        root.handlers[:] = before[1]
        root.setLevel(before[0])


WORKER_MODULE = """
import trioforge

registry = trioforge.Registry()


@registry.job("shout")
async def shout(ctx: trioforge.JobContext, text: str) -> str:
    ctx.log.info("shouting %s", text)
    return text.upper()


@registry.job("broken", retry=trioforge.Retry(max_attempts=1))
async def broken(ctx: trioforge.JobContext, text: str) -> None:
    raise ValueError(f"cannot {text}")
"""


async def test_worker_log_format_json_writes_one_object_per_line(tmp_path: Path) -> None:
    (tmp_path / "jsonjobs.py").write_text(WORKER_MODULE)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    jobs = Registry()

    @jobs.job("shout")
    async def shout(ctx: JobContext, text: str) -> str:
        raise AssertionError("runs in the worker")

    @jobs.job("broken")
    async def broken(ctx: JobContext, text: str) -> None:
        raise AssertionError("runs in the worker")

    command = [
        sys.executable, "-m", "trioforge", "worker", "jsonjobs:registry", "--database", url,
        "--log-format", "json", "--log-level", "DEBUG", "--poll-interval", "0.05",
    ]  # fmt: skip
    async with trioforge.open_client(url, registry=jobs) as client:
        ok = (await client.enqueue(shout, "hi")).id
        bad = (await client.enqueue(broken, "parse")).id
        proc = await trio.lowlevel.open_process(
            command, cwd=tmp_path, stderr=subprocess.PIPE, env={**os.environ}
        )
        assert proc.stderr is not None
        with trio.fail_after(30):
            assert (await client.wait(ok)).result == "HI"
            assert (await client.wait(bad)).status is JobState.DEAD
            proc.send_signal(signal.SIGINT)
            output = b""
            while chunk := await proc.stderr.receive_some():
                output += chunk
            assert await proc.wait() == 0
    lines = [json.loads(line) for line in output.decode().splitlines()]  # every line is JSON
    events = {
        (d.get("job_id"), d.get("event")): d for d in lines if d["logger"] == "trioforge.attempts"
    }
    done = events[ok, "completed"]
    assert {k: done[k] for k in ("job_name", "queue", "attempt", "max_attempts", "state")} == {
        "job_name": "shout", "queue": "default", "attempt": 1, "max_attempts": 3,
        "state": "completed",
    }  # fmt: skip
    assert done["level"] == "INFO"
    assert done["duration"] >= 0
    assert (ok, "started") in events
    dead = events[bad, "failed"]
    assert (dead["level"], dead["state"], dead["error"]) == (
        "ERROR",
        "dead",
        "ValueError: cannot parse",
    )
    [said] = [d for d in lines if d["logger"] == "trioforge.job"]
    assert (said["message"], said["job_id"], said["job_name"]) == ("shouting hi", ok, "shout")
    status = [d["message"] for d in lines if d["logger"] == "trioforge.worker"]
    assert any("ready" in m for m in status)
    assert status[-1] == "trioforge worker: stopped"
