"""One contract, every backend: each test gets a fresh, open backend of each kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.backends import BACKENDS
from trioforge.storage import Backend, opened


@pytest.fixture(params=list(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with BACKENDS[request.param].backend(tmp_path) as b, opened(b):
        yield b
