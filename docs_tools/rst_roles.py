"""A griffe extension: the docstrings' reStructuredText roles, rendered as Markdown.

The source's docstrings name other objects the way Sphinx reads them (``:class:`~x.Y```,
``:meth:`Client.wait```) and end a paragraph with ``::`` before a literal block. mkdocstrings
reads Markdown, where those would show as typed. Each role becomes a code span (``~`` keeps
the last component, as Sphinx shows it) and ``::`` a colon; the indented block after it is
a Markdown code block already.
"""

from __future__ import annotations

import re
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
