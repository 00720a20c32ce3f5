"""Payloads and results to and from JSON, checked against the job's declared type.

attrs classes go through cattrs (unknown keys are refused, so a typo is an error, not a
silently dropped field); other annotations through cattrs too; ``Any`` means any JSON value.
Nothing is ever pickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from trioforge._errors import PayloadError

__all__ = ["NO_PAYLOAD", "decode", "encode", "encode_result", "type_name"]

_converter = make_converter(forbid_extra_keys=True)


class _NoPayload:
    def __repr__(self) -> str:
        return "NO_PAYLOAD"


#: The payload type of a handler that takes only the context.
NO_PAYLOAD: Any = _NoPayload()

_PLAIN = (str, int, float, bool, list, dict)


def type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} is not JSON-serialisable ({exc}); use JSON values or attrs classes"
        ) from None


def encode(job_name: str, tp: Any, payload: Any) -> str:
    """JSON text of ``payload`` for job ``job_name`` whose payload type is ``tp``."""
    if tp is NO_PAYLOAD:
        if payload is not None:
            raise PayloadError(f"job {job_name!r} takes no payload; enqueue it with payload=None")
        return "null"
    if tp is Any:
        return _dumps(payload, f"payload for job {job_name!r}")
    if attrs.has(tp):
        if isinstance(payload, tp):
            return _dumps(_converter.unstructure(payload, tp), f"payload for job {job_name!r}")
        if not isinstance(payload, Mapping):
            raise PayloadError(
                f"job {job_name!r} takes a {type_name(tp)} payload, got {type(payload).__name__}; "
                f"pass {type_name(tp)}(...) or a dict of its fields"
            )
    elif tp in _PLAIN:
        ok = isinstance(payload, tp) and not (tp is int and isinstance(payload, bool))
        if tp is float and isinstance(payload, int) and not isinstance(payload, bool):
            ok = True
        if not ok:
            raise PayloadError(
                f"job {job_name!r} takes a {tp.__name__} payload, got {type(payload).__name__}"
            )
        return _dumps(payload, f"payload for job {job_name!r}")
    try:
        value = _converter.structure(
            _converter.unstructure(payload) if attrs.has(type(payload)) else payload, tp
        )
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        detail = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise PayloadError(
            f"payload for job {job_name!r} does not fit {type_name(tp)}: {detail}"
        ) from None
    return _dumps(_converter.unstructure(value, tp), f"payload for job {job_name!r}")


def decode(job_name: str, tp: Any, text: str) -> Any:
    """The payload object from stored JSON text (the inverse of :func:`encode`)."""
    data = json.loads(text)
    if tp is NO_PAYLOAD or tp is Any:
        return data
    try:
        return _converter.structure(data, tp)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise PayloadError(
            f"stored payload of job {job_name!r} no longer fits {type_name(tp)} ({exc}); "
            "was the payload class changed incompatibly?"
        ) from None


def encode_result(job_name: str, value: Any) -> str | None:
    """JSON text of a handler's return value (None stays None)."""
    if value is None:
        return None
    if attrs.has(type(value)):
        value = _converter.unstructure(value)
    return _dumps(value, f"return value of job {job_name!r}")
