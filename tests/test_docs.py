"""The documentation site covers the public API: every name in the ``__all__`` of each
public module has an entry on its API reference page (``make docs`` renders them, strict),
under its public path, and every page file is in the site's navigation."""

from __future__ import annotations

import importlib
import inspect
import re
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: Public module -> its reference page.
PAGES = {
    "trioforge": "reference/trioforge.md",
    "trioforge.aio": "reference/aio.md",
    "trioforge.testing": "reference/testing.md",
    "trioforge.web": "reference/web.md",
    "trioforge.metrics": "reference/metrics.md",
    "trioforge.otel": "reference/otel.md",
    "trioforge.logging": "reference/logging.md",
}


def documented(module: str) -> set[str]:
    """The names a reference page renders: ``::: module.Name`` entries, or the members
    listed under a ``::: module`` entry."""
    text = (DOCS / PAGES[module]).read_text()
    names = set(re.findall(rf"^::: {re.escape(module)}\.(\w+)$", text, re.M))
    listed = re.search(rf"^::: {re.escape(module)}\n(?:\s+.*\n)*?\s+members:\n((?:\s+- \w+\n)+)",
                       text, re.M)  # fmt: skip
    if listed:
        names |= set(re.findall(r"- (\w+)", listed.group(1)))
    return names


@pytest.mark.parametrize("module", sorted(PAGES))
def test_every_public_name_has_a_reference_entry(module: str) -> None:
    public = set(importlib.import_module(module).__all__)
    assert documented(module) == public


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    missing = {p for p in pages if not re.search(rf":\s+{re.escape(p)}$", nav, re.M)}
    assert not missing, f"pages left out of mkdocs.yml's nav: {sorted(missing)}"


def test_ci_builds_the_site_strictly() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make docs$", ci, re.M)
    assert re.search(r"^make test$", ci, re.M)  # the README's test command
    makefile = (ROOT / "Makefile").read_text()
    assert "mkdocs build --strict" in makefile


def test_docstring_roles_render_as_code_spans() -> None:
    from docs_tools.rst_roles import markdown

    text = "A :class:`~trioforge.Queue` or :meth:`Runtime.resize`; an example::\n\n    x = 1\n"
    assert markdown(text) == "A `Queue` or `Runtime.resize`; an example:\n\n    x = 1\n"


def test_attribute_comments_become_docstrings() -> None:
    from docs_tools.rst_roles import comment_above

    lines = ["x = 1", "#: The first line", "#: and the second.", "y = 2", "z = 3"]
    assert comment_above(lines, 4) == "The first line\nand the second."
    assert comment_above(lines, 5) == ""


def test_every_public_name_and_member_has_a_docstring() -> None:
    """What the reference renders: a name with no docstring would show as a bare heading."""
    missing = []
    for module in PAGES:
        namespace = importlib.import_module(module)
        for name in namespace.__all__:
            value = getattr(namespace, name)
            if isinstance(value, type | types.FunctionType) and not inspect.getdoc(value):
                missing.append(f"{module}.{name}")
            if not isinstance(value, type):
                continue
            for member, attribute in vars(value).items():
                function = attribute.fget if isinstance(attribute, property) else attribute
                function = getattr(function, "__func__", function)
                inherited = any(member in vars(base) for base in value.__mro__[1:]
                                if base.__module__ in ("logging", "builtins"))  # fmt: skip
                if (member.startswith("_") or inherited
                        or not isinstance(function, types.FunctionType)):  # fmt: skip
                    continue
                if not (function.__doc__ or "").strip():
                    missing.append(f"{module}.{name}.{member}")
    assert not missing
