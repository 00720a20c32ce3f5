"""The public surface is exactly what ``__all__`` says, and it is documented."""

from __future__ import annotations

import inspect
import types

import trioforge
import trioforge.actors
import trioforge.logging
import trioforge.otel
import trioforge.storage
import trioforge.testing


def test_all_lists_exactly_the_public_names() -> None:
    for module in (
        trioforge,
        trioforge.actors,
        trioforge.logging,
        trioforge.otel,
        trioforge.storage,
        trioforge.testing,
    ):
        is_package = hasattr(module, "__path__")  # a package re-exports; a module defines
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not isinstance(value, types.ModuleType)
            and (is_package or getattr(value, "__module__", module.__name__) == module.__name__)
        }
        exported = {
            n for n in module.__all__ if not isinstance(getattr(module, n), types.ModuleType)
        }
        assert exported == public, module.__name__
        assert sorted(module.__all__) == list(module.__all__), f"{module.__name__}.__all__ unsorted"


def test_every_public_class_and_function_has_a_docstring() -> None:
    for name in trioforge.__all__:
        value = getattr(trioforge, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name


def test_every_blocking_client_method_documents_cancellation() -> None:
    # Either the method says it, or the class-level doc covers every method.
    assert "cancel" in (trioforge.Client.__doc__ or "").lower()
    for name, member in inspect.getmembers(trioforge.Client):  # its bases' methods too
        if inspect.iscoroutinefunction(member) and not name.startswith("_"):
            assert member.__doc__, f"Client.{name} has no docstring"


def test_errors_share_one_root_and_refine_builtins() -> None:
    assert issubclass(trioforge.PayloadError, TypeError)
    assert issubclass(trioforge.UnknownJobError, LookupError)
    assert issubclass(trioforge.JobNotFoundError, LookupError)
    assert issubclass(trioforge.ConfigurationError, ValueError)
    assert issubclass(trioforge.InvalidArgumentError, ValueError)
    assert issubclass(trioforge.DatabaseUnavailableError, ConnectionError)
    assert issubclass(trioforge.JobTimeoutError, TimeoutError)
    for name in trioforge.__all__:
        value = getattr(trioforge, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            assert issubclass(value, trioforge.TrioforgeError), name
