"""Each optional part, used without its extra, fails with one line naming the install
command: checked in a subprocess where the extra's modules cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trioforge._core.extras import EXTRAS

BLOCKED = """
import json, sys
for name in json.loads(sys.argv[1]):
    sys.modules[name] = None  # `import name` now fails as if it were not installed
"""

USE = """
import trioforge
try:
    {statement}
except trioforge.MissingExtraError as exc:
    assert isinstance(exc, ImportError) and isinstance(exc, trioforge.ConfigurationError)
    print(json.dumps([str(exc), exc.extra, exc.name]))
"""


def blocked(extra: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKED + code
    return subprocess.run(
        [sys.executable, "-c", script, json.dumps(sorted(EXTRAS[extra])), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "statement", "part"),
    [
        ("postgres", "import trioforge.storage.postgres", "PostgreSQL"),
        ("postgres", "trioforge.storage.backend_for_url('postgresql://h/db')", "PostgreSQL"),
        ("web", "import trioforge.web", "The web app (trioforge.web)"),
        ("metrics", "import trioforge.metrics", "Prometheus metrics (trioforge.metrics)"),
        ("otel", "import trioforge.otel", "Tracing (trioforge.otel)"),
        (
            "testing",
            "import trioforge.testing; trioforge.testing.cron_expressions()",
            "trioforge.testing's strategies",
        ),
    ],
)
def test_a_missing_extra_is_named_with_its_install_command(
    extra: str, statement: str, part: str
) -> None:
    done = blocked(extra, USE.format(statement=statement))
    assert done.returncode == 0, done.stderr
    message, named, module = json.loads(done.stdout)
    assert message == f"{part} needs the {extra} extra: pip install 'trioforge[{extra}]'"
    assert named == extra
    assert module.partition(".")[0] in EXTRAS[extra]


def test_the_core_imports_with_every_extra_missing() -> None:
    every = sorted(set().union(*EXTRAS.values()))
    code = "import trioforge, trioforge._cli, trioforge.aio, trioforge.testing\nprint('ok')"
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED + code, json.dumps(every)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


def test_the_cli_says_it_in_one_line() -> None:
    code = "from trioforge._cli import main\nmain(sys.argv[2:])"
    done = blocked("postgres", code, "jobs", "list", "--database", "postgresql://h:5432/db")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: PostgreSQL needs the postgres extra: pip install 'trioforge[postgres]'"
    ]
