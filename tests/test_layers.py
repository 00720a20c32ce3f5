"""The folder order ``core ← storage ← actors ← runtime ← (web, CLI)``, read off the imports.

``docs/architecture.md`` draws these layers; this test keeps the tree true to the drawing.
Every ``import`` of every module counts, those under ``TYPE_CHECKING`` included: a type
that points upward is a dependency a reader has to follow too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Folder -> the package its modules are installed as (see pyproject's package-dir).
FOLDERS = {"core": "trioforge._core", "storage": "trioforge.storage", "actors": "trioforge.actors"}
RANKS = {"core": 0, "storage": 1, "actors": 2, "runtime": 3, "top": 4}


def layer(module: str) -> str:
    """The layer a ``trioforge`` module belongs to."""
    for folder, package in FOLDERS.items():
        if module == package or module.startswith(package + "."):
            return folder
    if module in ("trioforge.web", "trioforge._cli", "trioforge.__main__"):
        return "top"
    if module.startswith("trioforge._cli_"):  # the CLI's command groups (runtime/_cli_*.py)
        return "top"
    if module.startswith("trioforge.web."):
        return "top"
    return "runtime"


def modules() -> list[tuple[str, Path]]:
    found = []
    for folder in ("core", "storage", "actors", "runtime"):
        package = FOLDERS.get(folder, "trioforge")
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append((".".join([package, *parts]), path))
    return found


def imported(path: Path, module: str) -> set[str]:
    """The ``trioforge`` modules ``path`` imports (``from trioforge import x``: x may be a
    module or a name, so it counts as ``trioforge``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                is_package = path.name == "__init__.py"
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in names if name == "trioforge" or name.startswith("trioforge.")}


def known(name: str, everything: set[str]) -> str:
    """``name`` as a module: itself if one, else its parent (it named an attribute)."""
    return name if name in everything else name.rsplit(".", 1)[0]


MODULES = modules()


def test_the_tree_was_found() -> None:
    folders = {layer(name) for name, _ in MODULES}
    assert folders == set(RANKS), folders
    assert len(MODULES) > 40


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[name for name, _ in MODULES])
def test_imports_point_down(module: str, path: Path) -> None:
    everything = {name for name, _ in MODULES}
    mine = layer(module)
    upward = sorted(
        target
        for name in imported(path, module)
        if RANKS[layer(target := known(name, everything))] > RANKS[mine]
    )
    assert not upward, f"{module} ({mine}) imports from a higher layer: {upward}"


def test_the_kernel_imports_nothing_else_of_the_project() -> None:
    everything = {name for name, _ in MODULES}
    for module, path in MODULES:
        if layer(module) != "core":
            continue
        others = {known(n, everything) for n in imported(path, module)}
        assert all(layer(name) == "core" for name in others), (module, others)
