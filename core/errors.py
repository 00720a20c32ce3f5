"""The exception hierarchy.

One root, :class:`TrioforgeError`; each subclass also inherits the built-in exception it
refines, so ``except ValueError`` in an application keeps working. Messages say what to do.
This module imports nothing from the project: storage and actors may raise these too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = [
    "ChildFailed",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "Discard",
    "InvalidArgumentError",
    "InvalidStateError",
    "JobNotFoundError",
    "JobTimeoutError",
    "LifespanError",
    "MissingExtraError",
    "NonDeterminismError",
    "PayloadError",
    "ResultTimeoutError",
    "SchemaError",
    "StepFailed",
    "TrioforgeError",
    "UnknownJobError",
    "WorkflowTimeoutError",
    "unwrapped",
]


class TrioforgeError(Exception):
    """Root of every error trioforge raises on purpose."""


class ConfigurationError(TrioforgeError, ValueError):
    """A setting (URL, queue spec, retry policy, ...) is malformed."""


class InvalidArgumentError(TrioforgeError, ValueError):
    """An argument outside its allowed range (negative delay, progress above 100, ...)."""


class MissingExtraError(ConfigurationError, ImportError):
    """A part of trioforge was used whose optional dependencies are not installed; the
    message names the extra to install (``pip install 'trioforge[postgres]'``)."""

    def __init__(self, message: str, *, extra: str, module: str | None) -> None:
        super().__init__(message)
        #: The extra that provides the missing module.
        self.extra = extra
        #: The module that could not be imported (``ImportError.name``).
        self.name = module


class LifespanError(TrioforgeError, RuntimeError):
    """The registry's lifespan raised while opening or closing; the lifespan's own
    exception is the ``__cause__``."""


class UnknownJobError(TrioforgeError, LookupError):
    """A job name that the registry in use does not define."""


class PayloadError(TrioforgeError, TypeError):
    """A payload, result or signal does not fit its declared type (the message names the
    JSON path and both types: ``$.format: expected str, got int 1``).

    ``final`` is True when retrying cannot help: a job's stored payload no longer decodes,
    or its handler returned a value that cannot be encoded. Such an attempt goes ``dead``
    at once.
    """

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class JobNotFoundError(TrioforgeError, LookupError):
    """No job with the given id exists in the database."""


class InvalidStateError(TrioforgeError, ValueError):
    """An operation that the job's current state does not allow."""


class DatabaseUnavailableError(TrioforgeError, ConnectionError):
    """The database cannot be opened or reached."""


class SchemaError(TrioforgeError, RuntimeError):
    """The database schema is missing, or newer than this version of trioforge."""


class JobTimeoutError(TrioforgeError, TimeoutError):
    """An attempt ran past its job's ``timeout``; it counts as a failed attempt."""


class WorkflowTimeoutError(TrioforgeError, TimeoutError):
    """A workflow run went past its ``timeout`` (counted from its start); it is undone."""


class ResultTimeoutError(TrioforgeError, TimeoutError):
    """``await job.result(timeout=...)`` gave up waiting. The job itself goes on (only
    ``job.cancel()`` stops it); ``job_id`` says which."""

    def __init__(self, job_id: int, timeout: float) -> None:
        super().__init__(
            f"job {job_id} did not finish within {timeout}s; it goes on (wait again, or "
            "stop it with job.cancel())"
        )
        self.job_id = job_id


class NonDeterminismError(TrioforgeError, RuntimeError):
    """A run's code made other durable calls than its record holds (the code changed under
    a running version); the run goes dead instead of mixing the two."""


class StepFailed(TrioforgeError, RuntimeError):
    """A workflow step failed on its last allowed attempt. Catch it to go on without the
    step; uncaught, the run is undone (compensated) and ends."""

    def __init__(self, step: str, attempts: int, error: str | None) -> None:
        super().__init__(f"step {step!r} failed after {attempts} attempt(s): {error}")
        self.step = step
        self.attempts = attempts
        self.error = error


class ChildFailed(TrioforgeError, RuntimeError):
    """A child job of a workflow run ended dead, cancelled or compensated (see ``gather``)."""

    def __init__(self, job_id: int, status: str, error: str | None) -> None:
        super().__init__(f"child job {job_id} ended {status}: {error}")
        self.job_id = job_id
        self.status = status
        self.error = error


class Discard(TrioforgeError):
    """Raise from a handler to send the job straight to ``dead`` without further retries."""

    def __init__(self, reason: str = "discarded by handler") -> None:
        super().__init__(reason)
        self.reason = reason


@asynccontextmanager
async def unwrapped() -> AsyncIterator[None]:
    """Let a lone exception from the block surface as itself, not wrapped in the
    ExceptionGroups of the nurseries it crossed (ours, or trio-asyncio's loop)."""
    try:
        yield
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        raise inner from inner.__cause__
