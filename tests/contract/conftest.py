"""One contract, every backend: each test gets a fresh, open backend of each kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.backends import BACKENDS, CONTRACT_ONLY
from trioforge.storage import Backend, opened


@pytest.fixture(params=[*BACKENDS, *CONTRACT_ONLY])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    backing = BACKENDS.get(request.param)
    form = backing.backend if backing is not None else CONTRACT_ONLY[request.param]
    async with form(tmp_path) as b, opened(b):
        yield b
