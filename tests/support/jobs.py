"""Job definitions shared by the runtime tests (payload classes must be importable)."""

from __future__ import annotations

import attrs


@attrs.frozen
class Greeting:
    user: str
    times: int = 1


@attrs.frozen
class Summary:
    text: str
    length: int
