"""Reaching the test PostgreSQL server: a fresh schema per test, a visible skip without one.

``$TRIOFORGE_TEST_POSTGRES_URL`` names the server (default: local trust auth, database
``test``). With ``TRIOFORGE_REQUIRE_POSTGRES=1`` (CI) a missing server fails the tests.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import trio_asyncio

from trioforge.storage import opened
from trioforge.storage.postgres import PostgresBackend

URL = os.environ.get("TRIOFORGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def reachable() -> bool:
    parts = urllib.parse.urlsplit(URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip (or, in CI, fail) the calling test when the server is not there."""
    if reachable():
        return
    message = f"PostgreSQL not reachable at {URL}"
    if os.environ.get("TRIOFORGE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{message}, and TRIOFORGE_REQUIRE_POSTGRES=1 says it must be")
    pytest.skip(f"{message}; set TRIOFORGE_TEST_POSTGRES_URL to run these tests")


def fresh_backend() -> PostgresBackend:
    """A backend on a schema of its own; pair with :func:`dropped`."""
    require_postgres()
    return PostgresBackend(URL, schema=f"tf_test_{uuid.uuid4().hex[:12]}")


async def drop_schema(schema: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    if trio_asyncio.current_loop.get() is None:
        async with trio_asyncio.open_loop():
            await trio_asyncio.aio_as_trio(drop)()
    else:
        await trio_asyncio.aio_as_trio(drop)()


async def create_schema(schema: str) -> None:
    async def create() -> None:
        conn = await asyncpg.connect(URL)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await conn.close()

    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(create)()


@asynccontextmanager
async def schema_url() -> AsyncIterator[str]:
    """A URL whose connections use a fresh schema (any process can open it)."""
    require_postgres()
    schema = f"tf_test_{uuid.uuid4().hex[:12]}"
    await create_schema(schema)
    try:
        yield f"{URL}?search_path={schema}"
    finally:
        await drop_schema(schema)


@asynccontextmanager
async def temporary_schema() -> AsyncIterator[PostgresBackend]:
    """An unopened backend whose schema is dropped afterwards."""
    backend = fresh_backend()
    try:
        yield backend
    finally:
        assert backend.schema is not None
        await drop_schema(backend.schema)


#: Runs one SQL statement on a plain connection and returns its rows.
Sql = Callable[[str], Awaitable[list[Any]]]


@asynccontextmanager
async def migrated_sql() -> AsyncIterator[Sql]:
    """A migrated schema of its own (dropped afterwards) and ``sql(statement)`` on a plain
    connection to it, inside a trio-asyncio loop: to fill the tables and read plans."""
    async with temporary_schema() as backend, trio_asyncio.open_loop():
        async with opened(backend):
            pass
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(
            URL, server_settings={"search_path": backend.schema}
        )
        try:

            async def sql(statement: str) -> list[Any]:
                return list(await trio_asyncio.aio_as_trio(conn.fetch)(statement))

            yield sql
        finally:
            await trio_asyncio.aio_as_trio(conn.close)()


async def plans(sql: Sql, prepare: str, explain: str) -> dict[str, dict[str, Any]]:
    """The statement ``prepare`` makes, explained by ``explain`` (an ``EXPLAIN (...,
    FORMAT JSON) EXECUTE``, rolled back) as planned for its values ("custom") and as the
    generic plan a prepared statement may switch to ("generic"): each one's root node."""
    await sql(prepare)
    found = {}
    for mode in ("custom", "generic"):
        await sql("BEGIN")
        await sql(f"SET LOCAL plan_cache_mode = force_{mode}_plan")
        [[plan]] = await sql(explain)
        await sql("ROLLBACK")
        found[mode] = json.loads(plan)[0]["Plan"]
    return found
