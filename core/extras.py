"""Optional dependencies: which extra provides which module, and the error naming it.

``import trioforge`` needs only the core dependencies; each optional part imports its
libraries inside ``needs_extra``, so a missing one is one line naming the install command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from trioforge._core.errors import MissingExtraError

__all__ = ["EXTRAS", "needs_extra"]

#: The top-level modules each extra installs (pyproject's optional-dependencies).
EXTRAS: dict[str, frozenset[str]] = {
    "postgres": frozenset({"asyncpg", "trio_asyncio"}),
    "web": frozenset({"starlette", "hypercorn", "jinja2"}),
    "metrics": frozenset({"prometheus_client"}),
    "otel": frozenset({"opentelemetry"}),
    "testing": frozenset({"hypothesis"}),
}


@contextmanager
def needs_extra(extra: str, part: str) -> Iterator[None]:
    """Turn the block's failure to import one of ``extra``'s modules into a
    :class:`~trioforge.MissingExtraError` saying that ``part`` needs it; any other import
    error propagates unchanged."""
    try:
        yield
    except ModuleNotFoundError as exc:
        module = exc.name or ""
        if module.partition(".")[0] not in EXTRAS[extra]:
            raise
        raise MissingExtraError(
            f"{part} needs the {extra} extra: pip install 'trioforge[{extra}]'",
            extra=extra,
            module=module,
        ) from None
