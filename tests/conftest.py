"""Fixtures shared by the runtime tests: one test, every real backend."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.postgres import schema_url, temporary_schema
from trioforge.storage import Backend, MemoryBackend

# Hypothesis profiles: fast for `make test`, deep (thousands of examples) for `make test-deep`.
settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile("deep", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: Short intervals so real-time tests finish fast; never used as synchronisation.
FAST: dict[str, Any] = {"heartbeat_interval": 0.05, "lease_seconds": 5.0, "poll_interval": 0.05}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str | Backend]:
    """Each backend that runs in real time. Memory and PostgreSQL are backend objects, so a
    test can open one twice (a runtime, then a client) and see the same jobs."""
    if request.param == "memory":
        yield MemoryBackend()
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        async with temporary_schema() as backend:
            yield backend


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL for each backend that several processes can share."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        async with schema_url() as url:
            yield url


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A database that a runtime and a client open at the same time, each with a storage
    of its own (memory: one backend object, in-process)."""
    if request.param == "memory":
        yield MemoryBackend()
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        async with schema_url() as url:
            yield url
