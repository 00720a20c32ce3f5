"""Awkward text through every stored string, on every backend: escaped where the runtime
writes it, refused where a caller gives it, never blocking or hiding anything else."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

import trioforge
import trioforge.web
from tests.support.fast import FAST
from tests.support.postgres import URL as PG_URL
from tests.support.postgres import create_schema, drop_schema, require_postgres
from tests.support.strategies import awkward_text
from tests.test_web_api import served
from trioforge import JobContext, JobState, Registry, Retry, WorkflowContext
from trioforge._cli import main
from trioforge._core.text import storable
from trioforge.storage import MemoryBackend


def test_storable_escapes_nul_and_lone_surrogates_and_nothing_else() -> None:
    assert storable("a\x00b\ud800c\udfff") == "a\\x00b\\ud800c\\udfff"
    assert storable("\ud83d\ude00") == "\\ud83d\\ude00"  # a pair as two code points
    for kept in ("plain", "\x1b[31m\x07\n", "\U0001f600 \u202e é", "\\x00 already"):
        assert storable(kept) == kept


def unstorable(text: str) -> bool:
    return any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in text)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where each example stores its jobs: a URL shared by every example of the test (a
    real SQLite file, a PostgreSQL schema of its own), or "memory" (a fresh backend)."""
    if request.param == "memory":
        yield "memory"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        require_postgres()
        schema = f"tf_test_{uuid.uuid4().hex[:12]}"
        trio.run(create_schema, schema)
        try:
            yield f"{PG_URL}?search_path={schema}"
        finally:
            trio.run(drop_schema, schema)


async def refused(call: Awaitable[Any], error: type[Exception]) -> Any:
    """What ``call`` returned, or the ``error`` it raised (any other error fails the test)."""
    try:
        return await call
    except error as exc:
        return exc


def play(place: str, text: str) -> tuple[dict[str, trioforge.JobInfo], dict[str, Any]]:
    """``text`` through every string the runtime stores; the final state of each job and
    what each call a caller makes with it gave."""
    registry = Registry()

    @registry.job("raise", retry=Retry(max_attempts=1))
    async def raise_(ctx: JobContext, t: str) -> None:
        raise RuntimeError(t)

    @registry.job("discard")
    async def discard(ctx: JobContext, t: str) -> None:
        raise trioforge.Discard(t)

    @registry.job("report")
    async def report(ctx: JobContext, t: str) -> str:
        await ctx.progress(50, t)
        return t

    @registry.job("plain")
    async def plain(ctx: JobContext) -> None:
        pass

    @registry.workflow("signalled")
    async def signalled(ctx: WorkflowContext) -> Any:
        return await ctx.wait_for_signal("go")

    calls: dict[str, Any] = {}
    try:
        named = registry.job(text, retry=Retry(max_attempts=1))(plain.handler)
    except trioforge.ConfigurationError as exc:
        calls["name"] = exc
        named = None
    finals: dict[str, trioforge.JobInfo] = {}

    async def scenario() -> None:
        database = MemoryBackend() if place == "memory" else place
        async with trioforge.open_runtime(
            registry, database=database, queues={"default": 8}, **FAST
        ) as rt:
            ids = {
                "raise": await rt.enqueue(raise_, text),
                "discard": await rt.enqueue(discard, text),
                "report": await rt.enqueue(report, text),
                "run": await rt.enqueue(signalled),
                "operator": await rt.enqueue(plain, delay=3600),
            }
            await rt.discard(ids["operator"], text)
            invalid = trioforge.InvalidArgumentError
            calls["queue"] = await refused(rt.enqueue(plain, queue=text), invalid)
            # Held while it waits (an earlier example's job may hold it: the same one).
            for label in ("key", "key again"):
                calls[label] = await refused(
                    rt.enqueue(plain, idempotency_key=text, delay=3600), invalid
                )
            calls["signal"] = await refused(rt.signal(ids["run"], text, text), invalid)
            await rt.signal(ids["run"], "go", text)
            if named is not None:
                ids["named"] = await rt.enqueue(named)
            ids["after"] = await rt.enqueue(plain)  # the last one: nothing may hold it up
            for label in ("queue", "key"):
                if isinstance(calls[label], trioforge.Job):
                    ids[label] = calls[label]
            with trio.fail_after(20):
                for label, job_id in ids.items():
                    waiting = label in ("queue", "key")  # never claimed here
                    finals[label] = await (rt.get(job_id) if waiting else rt.wait(job_id))
            listed = {info.id for info in await rt.list(limit=10_000)}
            assert set(ids.values()) <= listed
            calls["listed"] = await refused(rt.list(queue=text), invalid)

    trio.run(scenario)
    return finals, calls


def check(finals: dict[str, trioforge.JobInfo], calls: dict[str, Any], text: str) -> None:
    bad = unstorable(text)
    # What a handler gets as its payload: the JSON round trip of ``text`` (two surrogate
    # code points that form a pair come back as the one character they encode).
    seen = json.loads(json.dumps(text))
    assert (finals["raise"].status, finals["raise"].error is not None) == (JobState.DEAD, True)
    assert f"RuntimeError: {storable(seen)}" in (finals["raise"].error or "")
    assert (finals["discard"].status, finals["discard"].error) == (JobState.DEAD, storable(seen))
    assert (finals["operator"].status, finals["operator"].error) == (JobState.DEAD, storable(text))
    report = finals["report"]
    assert (report.status, report.result, report.progress_message) == (
        JobState.COMPLETED, seen, storable(seen),
    )  # fmt: skip
    assert (finals["run"].status, finals["run"].result) == (JobState.COMPLETED, seen)
    assert finals["after"].status is JobState.COMPLETED
    if bad:
        assert isinstance(calls["name"], trioforge.ConfigurationError)
        for label in ("queue", "key", "key again", "signal", "listed"):
            assert isinstance(calls[label], trioforge.InvalidArgumentError), label
    else:
        assert (finals["named"].status, finals["named"].name) == (JobState.COMPLETED, text)
        assert (finals["queue"].status, finals["queue"].queue) == (JobState.AVAILABLE, text)
        assert finals["key"].idempotency_key == text
        assert calls["key again"] == calls["key"]  # the key holds: the same job
        assert isinstance(calls["signal"], int)
        assert finals["queue"].id in [j.id for j in calls["listed"]]  # examples share it
        assert {j.queue for j in calls["listed"]} == {text}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=awkward_text)
def test_any_text_is_stored_escaped_or_refused_and_blocks_nothing(place: str, text: str) -> None:
    finals, calls = play(place, text)
    check(finals, calls, text)
    if place == "memory":
        return
    # The command line reads back what the API does, every row of it.
    listed = CliRunner().invoke(
        main, ["jobs", "list", "--json", "--limit", "10000", "--database", place]
    )
    assert listed.exit_code == 0, listed.output
    rows = {row["id"]: row for row in map(json.loads, listed.output.splitlines())}
    for info in finals.values():
        row = rows[info.id]
        assert (row["name"], row["queue"], row["status"]) == (
            info.name,
            info.queue,
            info.status.value,
        )
        assert (row["error"], row["result"], row["progress_message"]) == (
            info.error, info.result, info.progress_message,
        )  # fmt: skip
    shown = CliRunner().invoke(
        main, ["jobs", "show", str(finals["discard"].id), "--json", "--database", place]
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["error"] == finals["discard"].error


async def test_sqlite_rows_holding_invalid_utf8_read_with_replacement(tmp_path: Path) -> None:
    # Rows written before text was made storable hold a lone surrogate as raw bytes (ED A0
    # 80, invalid UTF-8): listings, pages and commands still show them, and their neighbours.
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    registry = Registry()

    @registry.job("plain")
    async def plain(ctx: JobContext) -> None:
        pass

    async with trioforge.open_client(url, registry=registry) as client:
        bad, good = await client.enqueue(plain), await client.enqueue(plain)
        await client.discard(bad, "to be overwritten")
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        db.execute(
            "UPDATE trioforge_jobs SET error = CAST(X'6261642000EDA080' AS TEXT), "
            "progress_message = CAST(X'FF' AS TEXT) WHERE id = ?",
            (bad.id,),
        )
    replaced = "bad \x00\ufffd\ufffd\ufffd"  # each invalid byte one replacement character

    async with trioforge.open_client(url) as client:
        listed = await client.list()
        dead = await client.list(status="dead")
        one = await client.get(bad)
        async with served(trioforge.web.app(client=client, token="")) as http:
            pages = {
                path: await http.get(path)
                for path in ("/jobs", "/dead", f"/jobs/{bad}", f"/api/jobs/{bad}", f"/jobs/{good}")
            }
    assert [j.id for j in listed] == [good, bad]
    assert [j.id for j in dead] == [bad]
    assert (one.error, one.progress_message) == (replaced, "\ufffd")
    assert {path: r.status_code for path, r in pages.items()} == dict.fromkeys(pages, 200)
    assert pages[f"/api/jobs/{bad}"].json()["error"] == replaced
    for args in (
        ["jobs", "list"],
        ["jobs", "list", "--status", "dead"],
        ["jobs", "show", str(bad)],
    ):
        # In a thread: the command runs trio itself.
        result = await trio.to_thread.run_sync(CliRunner().invoke, main, [*args, "--database", url])
        assert result.exit_code == 0, result.output
        assert str(bad) in result.output
