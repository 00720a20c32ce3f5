"""Producers on asyncio (``trioforge.aio``) and transactional enqueue, from real asyncio
programs, with trio workers running in another thread."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
import trio

import trioforge
import trioforge.aio
from tests.support.fast import FAST
from tests.support.postgres import schema_url
from trioforge import JobContext, JobState, Registry


def make_registry() -> Registry:
    registry = Registry()

    @registry.job("greet")
    async def greet(ctx: JobContext, name: str) -> str:
        return f"hello {name}"

    return registry


@contextmanager
def workers(url: str, poll_interval: float = FAST["poll_interval"]) -> Iterator[None]:
    """A trio runtime serving ``url`` in a thread of its own while the block runs."""
    ready, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        options = {**FAST, "poll_interval": poll_interval}
        async with trioforge.open_runtime(make_registry(), database=url, **options):
            ready.set()
            while not stop.is_set():  # noqa: ASYNC110 (a thread's event, not trio's)
                await trio.sleep(0.02)

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run)
    thread.start()
    ready.wait(30)
    try:
        if failure:
            raise failure[0]
        yield
    finally:
        stop.set()
        thread.join(30)


def in_asyncio(main: Callable[[], object]) -> object:
    return asyncio.run(main())  # type: ignore[arg-type]


def test_an_asyncio_program_enqueues_waits_and_operates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def main() -> None:
        async with trioforge.aio.open_client(url, registry=make_registry()) as client:
            with pytest.raises(trioforge.PayloadError):
                await client.enqueue("greet", 42)  # the same checks as on trio
            later = await client.enqueue("greet", "later", delay=3600)
            assert await client.cancel(later)
            job_id = await client.enqueue("greet", "asyncio")
            with workers(url):
                info = await asyncio.wait_for(client.wait(job_id), 30)
            assert (info.status, info.result) == (JobState.COMPLETED, "hello asyncio")
            assert (await client.get(later)).status is JobState.CANCELLED
            assert {j.id for j in await client.list()} == {later, job_id}
            assert await client.delete(later) is JobState.CANCELLED
            assert {j.id for j in await client.list()} == {job_id}

    in_asyncio(main)


def test_enqueue_with_the_callers_sqlite3_connection_commits_or_rolls_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    url = f"sqlite:///{path}"

    async def main() -> None:
        async with trioforge.aio.open_client(url, registry=make_registry()) as client:
            conn = sqlite3.connect(path)
            conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
            conn.commit()
            conn.execute("INSERT INTO orders DEFAULT VALUES")
            await client.enqueue("greet", "nobody", connection=conn)
            conn.rollback()
            conn.execute("INSERT INTO orders DEFAULT VALUES")
            kept = await client.enqueue_many("greet", ["a", "b"], connection=conn)
            conn.commit()
            conn.close()
            # (ids are not a witness: a rolled-back insert hands its id on)
            assert sorted(j.payload for j in await client.list()) == ["a", "b"]
            with workers(url):
                done = [await asyncio.wait_for(client.wait(j), 30) for j in kept]
            assert [d.result for d in done] == ["hello a", "hello b"]
            with pytest.raises(trioforge.InvalidArgumentError, match="connection"):
                await client.enqueue("greet", "x", connection=object())

    in_asyncio(main)


def test_enqueue_with_the_callers_asyncpg_transaction_and_its_wake_up() -> None:
    async def main(url: str) -> None:
        async with trioforge.aio.open_client(url, registry=make_registry()) as client:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("CREATE TABLE orders (id SERIAL PRIMARY KEY)")

                async def rolled_back() -> None:
                    async with conn.transaction():
                        await conn.execute("INSERT INTO orders DEFAULT VALUES")
                        await client.enqueue("greet", "ghost", connection=conn)
                        raise RuntimeError("rolled back")

                with workers(url, poll_interval=60.0):  # only a notice can wake it in time
                    with pytest.raises(RuntimeError, match="rolled back"):
                        await rolled_back()
                    async with conn.transaction():
                        await conn.execute("INSERT INTO orders DEFAULT VALUES")
                        job_id = await client.enqueue("greet", "pg", connection=conn)
                        assert (await client.list()) == []  # not visible before the commit
                    info = await asyncio.wait_for(client.wait(job_id), 30)
                    assert info.result == "hello pg"
                    assert info.started_at is not None
                    # The notice went out at commit: the idle worker did not wait its poll.
                    assert info.started_at - info.created_at < 10.0
                assert [j.payload for j in await client.list()] == ["pg"]  # no ghost
            finally:
                await conn.close()

    async def with_schema() -> None:
        async with schema_url() as url:
            await trio.to_thread.run_sync(lambda: asyncio.run(main(url)))

    trio.run(with_schema)


async def test_a_trio_client_enqueues_in_the_callers_sqlite3_transaction(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    async with trioforge.open_runtime(make_registry(), database=f"sqlite:///{path}", **FAST) as rt:
        conn = sqlite3.connect(path)
        await rt.enqueue("greet", "nobody", connection=conn)
        conn.rollback()
        [job_id] = await rt.enqueue_many("greet", ["trio"], connection=conn)
        conn.commit()
        conn.close()
        with trio.fail_after(30):
            assert (await rt.wait(job_id)).result == "hello trio"
        assert [j.payload for j in await rt.list()] == ["trio"]


#: An asyncio application that uses only the asyncio client on PostgreSQL: it must keep
#: asyncio's own event loop (trio-asyncio, once imported, replaces it process-wide).
_ASYNCIO_APP = """
import asyncio, sys
import trioforge, trioforge.aio
import trioforge.storage.postgres

registry = trioforge.Registry()

@registry.job("greet")
async def greet(ctx: trioforge.JobContext, name: str) -> str:
    return "hello " + name

async def main(url: str) -> None:
    async with trioforge.aio.open_client(url, registry=registry) as client:
        await client.enqueue("greet", "ann")
    loop = asyncio.get_running_loop()
    print(type(loop).__module__, "trio_asyncio" in sys.modules)

asyncio.run(main(sys.argv[1]))
"""


def test_the_asyncio_client_leaves_asyncio_its_own_event_loop() -> None:
    async def with_schema() -> str:
        async with schema_url() as url:
            done = await trio.run_process(
                [sys.executable, "-c", _ASYNCIO_APP, url], capture_stdout=True
            )
            return done.stdout.decode()

    assert trio.run(with_schema).split() == ["asyncio.unix_events", "False"]
