"""A plain ``pip install trioforge`` (no extras) in a fresh virtualenv: nothing optional is
installed or imported, the SQLite quickstart runs, and each optional part says which extra
it needs in one line."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.support.install import OPTIONAL, ROOT, Venv, venv

pytestmark = pytest.mark.slow

PROBE = """
import importlib.util, json, sys
optional = set(json.loads(sys.argv[1]))
import trioforge, trioforge._cli, trioforge.aio, trioforge.storage.sqlite, trioforge.testing
print(json.dumps({
    "version": trioforge.__version__,
    "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in optional),
    "installed": sorted(m for m in optional if importlib.util.find_spec(m) is not None),
}))
"""


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return venv(tmp_path_factory)


def test_nothing_optional_is_installed_or_imported(core: Venv) -> None:
    done = core.run(core.python, "-c", PROBE, json.dumps(sorted(OPTIONAL)))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["loaded"] == []
    assert seen["installed"] == []
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert seen["version"] == declared


def test_the_sqlite_quickstart_runs(core: Venv, tmp_path: Path) -> None:
    shutil.copy(ROOT / "examples" / "quickstart.py", tmp_path)
    done = core.run(core.python, "quickstart.py", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all jobs reached a terminal state" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["jobs", "list", "--database", "postgresql://postgres@127.0.0.1:5432/test"],
            "error: PostgreSQL needs the postgres extra: pip install 'trioforge[postgres]'",
        ),
        (
            ["web", "--database", "sqlite:///web.db"],
            "error: The web app (trioforge.web) needs the web extra: pip install 'trioforge[web]'",
        ),
        (
            ["worker", "jobs:registry", "--database", "sqlite:///w.db", "--metrics-port", "0"],
            "error: --metrics-port: Prometheus metrics (trioforge.metrics) needs the metrics "
            "extra: pip install 'trioforge[metrics]'",
        ),
        (
            ["worker", "jobs:registry", "--database", "sqlite:///w.db", "--otel"],
            "error: --otel: Tracing (trioforge.otel) needs the otel extra: "
            "pip install 'trioforge[otel]'",
        ),
    ],
)
def test_the_cli_names_the_missing_extra_in_one_line(
    core: Venv, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "jobs.py").write_text("import trioforge\nregistry = trioforge.Registry()\n")
    done = core.run(core.trioforge, *args, cwd=tmp_path)
    assert (done.returncode, done.stderr.splitlines()) == (1, [message])
