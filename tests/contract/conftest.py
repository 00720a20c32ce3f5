"""One contract, every backend: each test gets a fresh, open backend of each kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.postgres import drop_schema, fresh_backend
from trioforge.storage import Backend, MemoryBackend, opened
from trioforge.storage.postgres import PostgresBackend
from trioforge.storage.sqlite import SQLiteBackend

#: name -> factory(tmp_path); a new backend is one more entry here.
BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "memory": lambda tmp: MemoryBackend(),
    "sqlite": lambda tmp: SQLiteBackend(tmp / "contract.db"),
    "postgres": lambda tmp: fresh_backend(),
}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = BACKENDS[request.param](tmp_path)
    try:
        async with opened(b):
            yield b
    finally:
        if isinstance(b, PostgresBackend) and b.schema is not None:
            await drop_schema(b.schema)
