"""The TypeScript compiler (npm's ``typescript``), for the generated bindings, or a visible
skip.

npm installs it once into ``$TRIOFORGE_NODE_CACHE`` (default ``~/.cache/trioforge/node``).
Without npm the tests skip with the reason; with ``TRIOFORGE_REQUIRE_BROWSER=1`` (CI,
which installs npm the way it installs Chromium) they fail instead. npm present but unable
to install it is a failure, never a skip.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

#: The major version the bindings are checked with.
TYPESCRIPT = "typescript@5"
#: What a frontend compiling the bindings may turn on, beyond --strict: they must pass it.
STRICT_FLAGS = [
    "--strict", "--noUnusedLocals", "--noUnusedParameters", "--noImplicitReturns",
    "--exactOptionalPropertyTypes", "--noUncheckedIndexedAccess", "--isolatedModules",
    "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler",
]  # fmt: skip


def cache() -> Path:
    default = Path.home() / ".cache" / "trioforge" / "node"
    return Path(os.environ.get("TRIOFORGE_NODE_CACHE") or default)


@functools.cache
def _installed() -> Path | str:
    """The ``tsc`` binary, or why there is none (npm missing)."""
    tsc = cache() / "node_modules" / ".bin" / "tsc"
    if tsc.exists():
        return tsc
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed (apt-get install -y npm)"
    cache().mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--prefix", str(cache()), "--no-save", "--no-audit", "--no-fund",
         TYPESCRIPT],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"npm install {TYPESCRIPT}: {done.stderr}"
    assert tsc.exists(), f"npm install {TYPESCRIPT} left no {tsc}"
    return tsc


def tsc() -> Path:
    """The compiler; skip (or, in CI, fail) the calling test when npm is missing."""
    found = _installed()
    if isinstance(found, Path):
        return found
    if os.environ.get("TRIOFORGE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{found}, and TRIOFORGE_REQUIRE_BROWSER=1 says it must be there")
    pytest.skip(f"{found}; the TypeScript tests need npm's typescript")


def with_track(folder: Path) -> Path:
    """``folder`` with track.js and track.d.ts beside the generated module."""
    for name in ("track.js", "track.d.ts"):
        (folder / name).write_bytes(track_file(name))
    return folder


def track_file(name: str) -> bytes:
    """``track.js`` or ``track.d.ts`` as the web app serves it."""
    return resources.files("trioforge.web").joinpath("static", name).read_bytes()


def compile_ts(folder: Path, *files: str, out: Path | None = None) -> str:
    """Run tsc with :data:`STRICT_FLAGS` on ``files`` of ``folder`` (JavaScript into
    ``out``; none without it) and answer its output; a compile error fails the test."""
    emit = ["--outDir", str(out)] if out is not None else ["--noEmit"]
    done = subprocess.run(
        [str(tsc()), *STRICT_FLAGS, *emit, *files],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"tsc {' '.join(files)}:\n{done.stdout}{done.stderr}"
    return done.stdout
