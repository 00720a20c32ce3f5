"""A registry's lifespan: resources its handlers share (a database pool, an HTTP client),
opened once per runtime before its pools start and closed after they drain."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from trioforge._core.errors import ConfigurationError, LifespanError

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    #: What a registry's lifespan yields: ``ctx.state`` in its handlers (default Any).
    StateT = TypeVar("StateT", default=Any)
else:
    from typing import TypeVar

    StateT = TypeVar("StateT")

__all__ = ["CLOSE_SECONDS", "NO_STATE", "Lifespan", "StateT", "as_lifespan", "entered"]

log = logging.getLogger("trioforge.runtime")

#: The longest a lifespan's closing may take; it runs shielded from the cancellation that
#: may be stopping the runtime, so that a pool or client is closed, not abandoned.
CLOSE_SECONDS = 10.0

#: ``ctx.state`` of a handler whose registry has no lifespan.
NO_STATE: Any = object()

Lifespan = Callable[[], AbstractAsyncContextManager[Any]]


def as_lifespan(fn: Callable[[], Any]) -> Lifespan:
    """``fn`` as a function returning an async context manager: an async generator
    function is wrapped as ``contextlib.asynccontextmanager`` would."""
    if inspect.isasyncgenfunction(fn):
        return asynccontextmanager(fn)
    if not callable(fn) or inspect.iscoroutinefunction(fn):
        raise ConfigurationError(
            f"lifespan {fn!r} must be an async generator function (async def with one "
            "yield) or a function returning an async context manager"
        )
    return fn


@asynccontextmanager
async def entered(lifespan: Lifespan, name: str) -> AsyncIterator[Any]:
    """The lifespan's value while the block runs.

    An error opening it, or closing it after the block ended normally, is raised as
    :class:`~trioforge.LifespanError` (the original as ``__cause__``). Closing runs
    shielded from cancellation for at most :data:`CLOSE_SECONDS`; when the block raised
    (or was cancelled), an error closing is logged and the block's error propagates: the
    lifespan neither hides nor swallows why the runtime stopped.
    """
    manager = lifespan()
    if not isinstance(manager, AbstractAsyncContextManager):
        raise ConfigurationError(
            f"lifespan {name} returned {type(manager).__name__}, not an async context manager"
        )
    try:
        state = await manager.__aenter__()
    except Exception as exc:
        raise LifespanError(f"lifespan {name} failed to start: {_line(exc)}") from exc
    try:
        yield state
    except BaseException as error:
        try:
            await _close(manager, name, error)
        except LifespanError as exc:
            log.error("%s", exc, exc_info=exc.__cause__)
        raise
    await _close(manager, name, None)


async def _close(
    manager: AbstractAsyncContextManager[Any], name: str, error: BaseException | None
) -> None:
    with trio.move_on_after(CLOSE_SECONDS, shield=True) as scope:
        try:
            if error is None:
                await manager.__aexit__(None, None, None)
            else:
                await manager.__aexit__(type(error), error, error.__traceback__)
        except Exception as exc:
            if exc is error:  # a plain manager re-raising what it was given
                return
            raise LifespanError(f"lifespan {name} failed to close: {_line(exc)}") from exc
    if scope.cancelled_caught:
        log.warning("lifespan %s took over %gs to close: left unfinished", name, CLOSE_SECONDS)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
