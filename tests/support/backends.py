"""The backends the suite runs on, in one table: a new backend is one more entry here.

Both conftests parametrize over it, and an entry's name is the test id, so ``-k sqlite``
or ``-k postgres`` picks one backend's runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import attrs

from tests.support.pgbouncer import pooled_backend
from tests.support.postgres import schema_url, temporary_schema
from trioforge.storage import Backend, MemoryBackend
from trioforge.storage.sqlite import SQLiteBackend

T = TypeVar("T")

#: Each form of a backend is made from the test's ``tmp_path`` and removed on exit.
Form = Callable[[Path], AbstractAsyncContextManager[T]]


@attrs.frozen
class Backing:
    """One kind of backend, in each form a test may want it."""

    #: A fresh backend object, not opened yet (the contract suite opens it).
    backend: Form[Backend]
    #: What the runtime tests open: a backend object where a test opens the same storage
    #: twice (a runtime, then a client), else a URL.
    database: Form[str | Backend]
    #: A URL that several processes can open at once; None for in-process storage.
    url: Form[str] | None = None


@asynccontextmanager
async def _given(value: T) -> AsyncIterator[T]:
    """A form that needs no setup or removal."""
    yield value


def _sqlite_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'jobs.db'}"


BACKENDS: dict[str, Backing] = {
    "memory": Backing(
        backend=lambda tmp: _given(MemoryBackend()),
        database=lambda tmp: _given(MemoryBackend()),
    ),
    "sqlite": Backing(
        backend=lambda tmp: _given(SQLiteBackend(tmp / "jobs.db")),
        database=lambda tmp: _given(_sqlite_url(tmp)),
        url=lambda tmp: _given(_sqlite_url(tmp)),
    ),
    "postgres": Backing(
        backend=lambda tmp: temporary_schema(),
        database=lambda tmp: temporary_schema(),
        url=lambda tmp: schema_url(),
    ),
}

#: Backends the contract suite also runs on (the runtime tests are covered by
#: tests/test_pgbouncer.py): PostgreSQL through PgBouncer in transaction pooling mode.
CONTRACT_ONLY: dict[str, Form[Backend]] = {"pgbouncer": pooled_backend}

#: The backends several processes can share.
SHARED_BY_PROCESSES = [name for name, backing in BACKENDS.items() if backing.url is not None]
