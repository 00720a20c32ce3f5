"""The README's quickstart runs as written, and is the same program as examples/app.py
(which the getting-started page includes and mypy checks)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quickstart() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"^## Quickstart\n.*?^```python\n(.*?)^```", text, re.M | re.S)
    assert found, "README.md has no ```python block under '## Quickstart'"
    return found.group(1)


def test_the_readme_quickstart_is_examples_app() -> None:
    assert quickstart() == (ROOT / "examples" / "app.py").read_text()


def test_the_readme_quickstart_runs_as_written_in_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(quickstart())
    done = subprocess.run(
        [sys.executable, "app.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin"},  # no $TRIOFORGE_DATABASE_URL: the default file
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sent to ada\n"
    assert (tmp_path / ".trioforge" / "jobs.db").exists()


def test_every_relative_link_in_the_readme_leads_to_a_file() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((?!https?://)([^)#]+)(?:#[^)]*)?\)", text)
    assert targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing
