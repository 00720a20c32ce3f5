"""Fixtures shared by the runtime tests: one test, every real backend."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio_asyncio  # noqa: F401  (imported before the policy below is set)
from hypothesis import settings

from tests.support.backends import BACKENDS, SHARED_BY_PROCESSES
from trioforge.storage import Backend

# Hypothesis profiles: fast for `make test`, deep (thousands of examples) for `make test-deep`.
settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile("deep", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Once imported (by the PostgreSQL tests' trio runtimes), trio-asyncio makes
# asyncio.new_event_loop(), and so asyncio.run(), return its own sync loop unless a policy
# is set; `asyncio.to_thread` there hung a test now and then. The tests that play an
# asyncio application run on asyncio's own loop, as that application would.
asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


@pytest.fixture(params=list(BACKENDS))
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str | Backend]:
    """Each backend that runs in real time. Memory and PostgreSQL are backend objects, so a
    test can open one twice (a runtime, then a client) and see the same jobs."""
    async with BACKENDS[request.param].database(tmp_path) as database:
        yield database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture(params=SHARED_BY_PROCESSES)
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL for each backend that several processes can share."""
    url = BACKENDS[request.param].url
    assert url is not None
    async with url(tmp_path) as shared:
        yield shared


@pytest.fixture(params=list(BACKENDS))
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str | Backend]:
    """A database that a runtime and a client open at the same time, each with a storage
    of its own (memory: one backend object, in-process)."""
    backing = BACKENDS[request.param]
    async with (backing.url or backing.backend)(tmp_path) as place:
        yield place
