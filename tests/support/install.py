"""The package as a user gets it: the wheel built from this tree, installed into a fresh
virtualenv with the extras a test names (pip's cache and the configured index serve the
dependencies)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The top-level modules of every optional dependency (and of what they pull in).
OPTIONAL = frozenset(
    {
        "asyncpg",
        "trio_asyncio",
        "greenlet",
        "starlette",
        "hypercorn",
        "h2",
        "wsproto",
        "jinja2",
        "anyio",
        "prometheus_client",
        "opentelemetry",
        "hypothesis",
    }
)

_wheels: dict[str, Path] = {}


@attrs.frozen
class Venv:
    """A virtualenv with the wheel installed."""

    path: Path

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    @property
    def trioforge(self) -> str:
        return str(self.path / "bin" / "trioforge")

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )


#: Never part of a build: a copy without them keeps stale build output out of the wheel.
_NOT_SOURCE = shutil.ignore_patterns(
    ".*", "build", "*.egg-info", "__pycache__", "*.db", "*.db-*", "screenshots"
)


def wheel(factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree, built once per test session from a clean copy of it."""
    if "wheel" not in _wheels:
        source, out = factory.mktemp("source") / "trioforge", factory.mktemp("wheel")
        shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
        _check(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source))
        [built] = out.glob("trioforge-*.whl")
        _wheels["wheel"] = built
    return _wheels["wheel"]


def venv(factory: pytest.TempPathFactory, extras: str = "") -> Venv:
    """A fresh virtualenv with the wheel installed, with ``extras`` (``postgres,web``)."""
    built = wheel(factory)
    env = Venv(factory.mktemp("venv"))
    _check(sys.executable, "-m", "venv", str(env.path))
    target = f"trioforge[{extras}] @ {built.as_uri()}" if extras else str(built)
    _check(env.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", target)
    return env


def _check(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
