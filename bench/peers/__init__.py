"""The peers the table compares trioforge with, installed by the bench itself.

They go into a virtualenv of their own outside the repository (``$TRIOFORGE_BENCH_CACHE``,
default ``~/.cache/trioforge-bench``), at the pinned versions below, and are driven only
through their public APIs by the small driver scripts beside this file (``pgqueuer_side``,
``huey_side``), which run in that virtualenv and speak the same line protocol as
``bench.trioforge_side``: one JSON line of figures on stdout, then they wait for their stdin
to close (so the bench can read their CPU time with every connection still open).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

#: Pinned so that pairs taken on different days compare the same peer; both install here
#: with their asyncpg driver and attrs, which the drivers' payloads use.
PINS = ("pgqueuer[asyncpg]==1.6.0", "huey==3.5.4", "attrs==26.1.0")

HERE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "trioforge-bench"
    return Path(os.environ.get("TRIOFORGE_BENCH_CACHE", default))


def peers_python() -> Path:
    """The peers' interpreter, building their virtualenv first if these pins lack one."""
    tag = hashlib.sha256("\n".join(PINS).encode()).hexdigest()[:10]
    venv = cache_dir() / f"peers-{tag}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.exists():
        return python
    print(f"installing the peers ({', '.join(PINS)}) into {venv} ...", flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PINS],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"installing the peers failed: {' '.join(step)}\n{done.stderr[-4000:]}"
            )
    stamp.write_text("\n".join(PINS) + "\n")
    return python


def driver(name: str) -> Path:
    """The path of a peer's driver script (run by the peers' interpreter, not imported)."""
    return HERE / f"{name}_side.py"
