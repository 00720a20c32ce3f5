"""Stored text as the CLI prints it: never able to drive the terminal.

Job names, queue names, errors and progress messages come from the database, so from
whoever could enqueue or fail a job. Printed raw, ``"\\x1b]0;pwned\\x07"`` retitles the
window, other escape sequences rewrite or hide what is on screen, and a newline forges a
row. The CLI prints every such text through :func:`terminal_text`; its own layout (the
newlines between rows, the spaces between columns) is the only structure that reaches the
terminal.
"""

from __future__ import annotations

__all__ = ["terminal_text"]


_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0)]  # C0, DEL and C1
#: Bidirectional overrides and isolates: they reorder how the rest of the line reads.
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_SURROGATES = range(0xD800, 0xE000)  # alone, they cannot even be encoded for the terminal

_ONE_LINE = {code: _escape(code) for code in (*_CONTROLS, *_BIDI, *_SURROGATES)}
_LINES = {code: text for code, text in _ONE_LINE.items() if chr(code) not in "\n\t"}


def terminal_text(text: str, *, lines: bool = False) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\u202e``).

    ``lines``: keep newlines and tabs (a traceback shown as a block); otherwise the text
    stays on one line (a table cell, a field).
    """
    return text.translate(_LINES if lines else _ONE_LINE)
