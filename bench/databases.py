"""Where the PostgreSQL benches run: the ``--postgres-url`` option, and fresh databases or
schemas on that server, each dropped at the end (also when a bench stops at its deadline).
"""

from __future__ import annotations

import argparse
import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import asyncpg
import trio
import trio_asyncio

if TYPE_CHECKING:
    from trioforge.storage import Backend


async def drop_schemas(url: str, schemas: list[str]) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(url)
        try:
            for schema in schemas:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(drop)()


@asynccontextmanager
async def postgres_databases(url: str) -> AsyncIterator[Callable[[], Awaitable[tuple[str, str]]]]:
    """A factory of fresh databases on ``url``'s server (``await fresh()``: its URL and
    name), all dropped at the end: a run alone in its database is what bench/cpu.py needs
    to tell its PostgreSQL backends from everyone else's."""
    names: list[str] = []

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def run(statement: str) -> None:
        async with trio_asyncio.open_loop():
            await trio_asyncio.aio_as_trio(admin)(statement)

    async def fresh() -> tuple[str, str]:
        names.append(f"tf_bench_{uuid.uuid4().hex[:10]}")
        await run(f'CREATE DATABASE "{names[-1]}"')
        parts = urllib.parse.urlsplit(url)
        return urllib.parse.urlunsplit(parts._replace(path=f"/{names[-1]}")), names[-1]

    try:
        yield fresh
    finally:
        with trio.CancelScope(shield=True):
            for name in names:
                await run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_postgres_url(parser: argparse.ArgumentParser) -> None:
    """Every bench's ``--postgres-url`` (default ``$TRIOFORGE_BENCH_POSTGRES_URL``)."""
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "TRIOFORGE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="the PostgreSQL server; each run uses (and drops) schemas of its own",
    )


@asynccontextmanager
async def postgres_schemas(url: str) -> AsyncIterator[Callable[[], Backend]]:
    """A factory of backends on ``url``, each on a fresh schema, all dropped at the end."""
    schemas: list[str] = []

    from trioforge.storage.postgres import PostgresBackend

    def postgres() -> Backend:
        schemas.append(f"tf_bench_{uuid.uuid4().hex[:10]}")
        return PostgresBackend(url, schema=schemas[-1])

    try:
        yield postgres
    finally:
        with trio.CancelScope(shield=True):
            await drop_schemas(url, schemas)
