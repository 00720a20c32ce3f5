"""What only the SQLite backend promises: a durable file, shared by processes, versioned."""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from trioforge import DatabaseUnavailableError, JobState, SchemaError
from trioforge.storage import NewJob, ops
from trioforge.storage import _sqlite_watch as sqlite_watch
from trioforge.storage._sqlite_watch import watching
from trioforge.storage.sqlite import MIGRATIONS, SQLiteBackend

NEW = NewJob("a", "q", '{"x": 1}', 10, 0.0, 3)


async def run(backend: SQLiteBackend, op: ops.Op) -> Any:
    [result] = await backend.execute([op], 1.0)
    return result


async def test_jobs_survive_closing_and_reopening(tmp_path: Path) -> None:
    first = SQLiteBackend(tmp_path / "jobs.db")
    await first.open()
    [enqueued] = await run(first, ops.Enqueue((NEW,)))
    await first.aclose()
    await first.aclose()  # twice is fine
    again = SQLiteBackend(tmp_path / "jobs.db")
    await again.open()
    info = await run(again, ops.Get(enqueued.id))
    await again.aclose()
    assert info.payload == {"x": 1}


async def test_two_connections_share_one_file(tmp_path: Path) -> None:
    one, two = SQLiteBackend(tmp_path / "jobs.db"), SQLiteBackend(tmp_path / "jobs.db")
    async with trio.open_nursery() as nursery:  # both migrate at the same moment
        nursery.start_soon(one.open)
        nursery.start_soon(two.open)
    [enqueued] = await run(one, ops.Enqueue((NEW,)))
    claim = await run(two, ops.Claim("q", {"a"}, 5, "w2", 60.0))
    assert [j.id for j in claim.jobs] == [enqueued.id]
    assert (await run(one, ops.Get(enqueued.id))).status is JobState.RUNNING
    await one.aclose()
    await two.aclose()


async def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    fresh = SQLiteBackend(path)
    with pytest.raises(SchemaError, match="trioforge db migrate"):
        await fresh.open(migrate=False)
    await fresh.open()
    assert (await fresh.schema_status()).up_to_date
    assert (await fresh.migrate()).current == len(MIGRATIONS)
    await fresh.aclose()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT version FROM trioforge_schema ORDER BY version").fetchall()
    assert rows == [(v,) for v in range(1, len(MIGRATIONS) + 1)]  # each applied once


async def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    backend = SQLiteBackend(path)
    await backend.open()
    await backend.aclose()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO trioforge_schema (version) VALUES (?)", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaError, match="upgrade trioforge"):
        await SQLiteBackend(path).open()


async def test_an_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(DatabaseUnavailableError, match="taken"):
        await SQLiteBackend(tmp_path / "taken").open()
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(DatabaseUnavailableError, match="check the path"):
        await SQLiteBackend(tmp_path / "file" / "jobs.db").open()


async def test_a_purge_batch_reads_its_state_by_index_not_the_whole_table(
    tmp_path: Path,
) -> None:
    """Retention deletes a million finished jobs 500 at a time: each batch must walk its
    state's index range, not scan the table and sort."""
    from trioforge.storage._sqlite_claims import _PURGE_PICK

    SQLiteBackend(tmp_path / "jobs.db").open_sync()
    db = sqlite3.connect(tmp_path / "jobs.db")
    db.execute(
        "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, max_attempts, "
        "created_at, status, finished_at) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
        "SELECT x + 1 FROM c WHERE x < 5000) SELECT 'a', 'q', '[]', 0, 0, 3, 0, "
        "CASE WHEN x % 5 = 0 THEN 'completed' ELSE 'available' END, "
        "CASE WHEN x % 5 = 0 THEN x END FROM c"
    )
    db.execute("ANALYZE")
    plan = [row[-1] for row in db.execute(
        "EXPLAIN QUERY PLAN " + _PURGE_PICK, ("completed", 2000.0, None, "[]", 500, True)
    )]  # fmt: skip
    db.close()
    assert any("USING INDEX trioforge_jobs_finished_by_state" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan  # no sort


def test_outcomes_and_renewals_look_up_each_row_by_id_beside_many_running(
    tmp_path: Path,
) -> None:
    """A wide pool has 50,000 jobs running: one batch of outcomes or lease renewals must
    look each of its rows up by id, never walk the running jobs for each row (the generic
    plan that cost PostgreSQL seconds per batch)."""
    from trioforge.storage._sqlite_sql import _FINISH, _RENEW

    SQLiteBackend(tmp_path / "jobs.db").open_sync()
    db = sqlite3.connect(tmp_path / "jobs.db")
    db.execute(
        "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, max_attempts, "
        "created_at, status, attempt, lease) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
        "SELECT x + 1 FROM c WHERE x < 20000) SELECT 'a', 'q', '[]', 0, 0, 3, 0, "
        "'running', 1, 1 FROM c"
    )
    db.execute("ANALYZE")
    rows = json.dumps([[n, 1, "completed", None, 0, 1.0, None, None] for n in range(1, 3001)])
    leases = json.dumps([[n, 1] for n in range(1, 3001)])
    for sql, params in ((_FINISH, (rows, 1.0)), (_RENEW, (leases, 2.0, "owner"))):
        plan = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
        assert plan[0].startswith("SCAN json_each"), plan  # the batch's rows, once
        assert [step for step in plan[1:] if step.startswith(("SCAN", "SEARCH"))] == [
            "SEARCH j USING INTEGER PRIMARY KEY (rowid=?)"
        ], plan
    db.close()


async def test_a_watch_cancelled_before_its_thread_starts_closes_its_connection(
    tmp_path: Path,
) -> None:
    backend = SQLiteBackend(tmp_path / "jobs.db")
    await backend.open()
    await backend.aclose()
    seen: list[sqlite3.Connection] = []

    def reader(db: sqlite3.Connection) -> Callable[[], list[None]]:
        seen.append(db)
        return list

    with trio.CancelScope() as scope:
        async with watching(
            backend.path, busy_timeout=1.0, interval=0.005, reader=reader,
            report=lambda item: None, ended=lambda: None,
        ):  # fmt: skip
            scope.cancel()  # the watching thread's task sees it before it can start
    assert scope.cancelled_caught
    [db] = seen
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        db.execute("SELECT 1")


@pytest.fixture(params=["file events", "polling"])
def watch_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a watch learns of commits: the kernel's file events (Linux) and polling
    (elsewhere, here by having no events)."""
    if request.param == "polling":
        monkeypatch.setattr(sqlite_watch, "_log_events", lambda path: None)
    return str(request.param)


async def commit(backend: SQLiteBackend) -> None:
    """One commit by the backend's own connection (a pause flipped)."""
    [paused] = await backend.execute([ops.PauseQueue("q", True)], 0.0)
    if not paused:
        await backend.execute([ops.PauseQueue("q", False)], 0.0)


@asynccontextmanager
async def counting_watch(tmp_path: Path) -> AsyncIterator[tuple[SQLiteBackend, trio.Semaphore]]:
    """A backend on a new file, and a watch of that file whose every look that finds the
    file changed releases the semaphore."""
    backend = SQLiteBackend(tmp_path / "jobs.db")
    await backend.open()
    looked = trio.Semaphore(0)
    try:
        async with watching(
            backend.path, busy_timeout=1.0, interval=0.005,
            reader=lambda db: lambda: [None], report=lambda item: looked.release(),
            ended=lambda: None,
        ):  # fmt: skip
            yield backend, looked
    finally:
        await backend.aclose()


def log_events_made(monkeypatch: pytest.MonkeyPatch, before: Callable[[Path], None]) -> list[Any]:
    """The file events each watch gets (None: none), ``before(path)`` run first."""
    made: list[Any] = []
    real = sqlite_watch._log_events

    def log_events(path: Path) -> Any:
        before(path)
        made.append(real(path))
        return made[-1]

    monkeypatch.setattr(sqlite_watch, "_log_events", log_events)
    return made


async def test_a_watch_hears_each_commit_of_another_connection(
    tmp_path: Path, watch_kind: str
) -> None:
    with trio.fail_after(5):
        async with counting_watch(tmp_path) as (backend, looked):
            for _ in range(3):
                await commit(backend)
                await looked.acquire()


async def test_leaving_a_watch_waiting_for_file_events_wakes_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its thread waits for an event for up to EVENTLESS_SECONDS: leaving wakes it."""
    waiting = threading.Event()  # set as the watch's thread starts waiting for an event
    real_poll = select.poll

    class Poll:
        def __init__(self) -> None:
            self._poll = real_poll()

        def register(self, fd: int, mask: int) -> None:
            self._poll.register(fd, mask)

        def poll(self, timeout: float) -> list[tuple[int, int]]:
            waiting.set()
            return self._poll.poll(timeout)

    monkeypatch.setattr(select, "poll", Poll)
    made = log_events_made(monkeypatch, lambda path: None)
    with trio.fail_after(5):
        async with counting_watch(tmp_path):
            if made[0] is None:
                pytest.skip("no file events on this platform")
            await trio.to_thread.run_sync(waiting.wait)
            left = trio.current_time()
    assert trio.current_time() - left < sqlite_watch.EVENTLESS_SECONDS / 2


async def test_a_commit_as_the_watch_starts_is_seen_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit between the watch's baseline read and the start of its file events made
    no event the watch hears: its first look is at once, not after EVENTLESS_SECONDS."""

    def commit_elsewhere(path: Path) -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("CREATE TABLE elsewhere (x)")  # after the baseline, before the events
        other.close()

    log_events_made(monkeypatch, commit_elsewhere)
    with trio.fail_after(sqlite_watch.EVENTLESS_SECONDS / 2):
        async with counting_watch(tmp_path) as (_, looked):
            await looked.acquire()


def refuse(error: int) -> Callable[..., Any]:
    """What stands in for the making of an inotify instance or watch when the kernel has
    none left: it fails with ``error``, as the kernel's call does."""

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OSError(error, os.strerror(error))

    return refused


@pytest.mark.parametrize(
    ("where", "error", "setting"),
    [("INotify", errno.EMFILE, "max_user_instances"),
     ("INotify.add_watch", errno.ENOSPC, "max_user_watches")],
    ids=["no instance left", "no watch left"],
)  # fmt: skip
async def test_a_watch_without_file_events_polls_and_says_why_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
    error: int,
    setting: str,
) -> None:
    """No inotify instance or watch left (the kernel's per-user limits, shared by every
    process of the user): the watch polls, and the process logs once why, naming the
    setting to raise. A second watch, of another file, says nothing more."""
    inotify_simple = pytest.importorskip("inotify_simple")
    owner, _, name = where.rpartition(".")
    monkeypatch.setattr(getattr(inotify_simple, owner) if owner else inotify_simple, name,
                        refuse(error))  # fmt: skip
    monkeypatch.setattr(sqlite_watch, "_LOGGED", set())
    caplog.set_level(logging.WARNING, logger="trioforge.storage")
    with trio.fail_after(5):
        for folder in ("one", "another"):  # two database files: still one line
            (tmp_path / folder).mkdir()
            async with counting_watch(tmp_path / folder) as (backend, looked):
                await commit(backend)
                await looked.acquire()
    [record] = caplog.records
    assert setting in record.getMessage()
    assert "polls the file" in record.getMessage()
