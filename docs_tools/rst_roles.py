"""A griffe extension: the source's Sphinx-style documentation, rendered as Markdown.

The docstrings name other objects the way Sphinx reads them (``:class:`~x.Y```,
``:meth:`Client.wait```) and end a paragraph with ``::`` before a literal block; attributes
are documented by ``#:`` comments above them. mkdocstrings reads Markdown docstrings only.
Each role becomes a code span (``~`` keeps the last component, as Sphinx shows it), ``::``
a colon (the indented block after it is a Markdown code block already), and an attribute
with no docstring takes its ``#:`` comment lines as one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj):`(~?)([^`]+)`")
LITERAL_BLOCK = re.compile(r"(\S)::$", re.M)


def markdown(text: str) -> str:
    """``text`` with its roles as code spans and its ``::`` as a colon."""

    def span(match: re.Match[str]) -> str:
        short, target = match.groups()
        return f"`{target.rsplit('.', 1)[-1] if short else target}`"

    return LITERAL_BLOCK.sub(r"\1:", ROLE.sub(span, text))


class RstRoles(griffe.Extension):
    """Rewrites every docstring griffe loads (objects of every kind, aliases' targets too)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        path = attr.filepath
        if attr.docstring is not None or attr.lineno is None or not isinstance(path, Path):
            return  # documented already, or not from one source file
        text = comment_above(attr.lines_collection[path], attr.lineno)
        if text:
            attr.docstring = griffe.Docstring(markdown(text), lineno=attr.lineno, parent=attr)


def comment_above(lines: list[str], lineno: int) -> str:
    """The ``#:`` comment lines right above line ``lineno`` (1-based), joined."""
    found: list[str] = []
    at = lineno - 2
    while at >= 0 and lines[at].lstrip().startswith("#:"):
        found.insert(0, lines[at].lstrip()[2:].strip())
        at -= 1
    return "\n".join(found)
