"""Text every backend can store: the rule for what the runtime writes and callers give.

PostgreSQL refuses NUL in text and neither database can encode a lone surrogate (a Python
string may hold both). Text the runtime writes (tracebacks, discard reasons, progress
messages, results, step errors) is escaped so it is stored the same on every backend;
names and keys a caller gives are refused instead (:func:`check_storable`), as escaping them
would make two different names one. Pure functions, no I/O.
"""

from __future__ import annotations

import re

__all__ = ["check_storable", "storable", "storable_or_none"]

#: NUL and every surrogate code point (in a str, a surrogate is always unpaired: a pair
#: written as two code points cannot be encoded as UTF-8 either).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return "\\x00" if code == 0 else f"\\u{code:04x}"


def storable(text: str) -> str:
    """``text`` with each NUL written as the four characters ``\\x00`` and each lone
    surrogate as its six-character escape (``\\ud800``); any other text unchanged."""
    if text.isascii() and "\x00" not in text:  # the common case, without a scan by regex
        return text
    return _UNSTORABLE.sub(_escape, text)


def storable_or_none(text: str | None) -> str | None:
    """:func:`storable`, letting None through (for optional columns)."""
    return None if text is None else storable(text)


def check_storable(text: str, what: str, error: type[Exception]) -> str:
    """``text`` if every backend can store it as given; else ``error`` naming ``what``
    and the character that cannot be stored (a name or key is refused, not escaped)."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return text
    char = "a NUL character" if found.group() == "\x00" else "a lone surrogate"
    raise error(
        f"{what} {text!a} holds {char} (at index {found.start()}), which no database "
        "stores; remove it"
    )
