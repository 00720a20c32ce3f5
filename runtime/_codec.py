"""Payloads, results and signals to and from JSON text, checked strictly against a type.

One codec serves every path (enqueue, the web API, workflows, results), so a value is
accepted or refused the same way wherever it enters. Checking is structuring: a value is
taken either as the Python object (an attrs instance, a datetime) or as its JSON form (a
dict of fields, an ISO string), each field checked against its annotation, and nothing is
ever converted into another type (``"7"`` is not an int, ``2.9`` is not an int, ``None``
is not a str). The JSON forms are listed in docs/payloads.md. Nothing is ever pickled.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import re
import types
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol, Union, get_args, get_origin, runtime_checkable

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ForbiddenExtraKeysError,
    IterableValidationNote,
    StructureHandlerNotFoundError,
)
from cattrs.gen import make_dict_structure_fn

from trioforge._core.errors import PayloadError

__all__ = [
    "DEFAULT_CODEC",
    "NO_PAYLOAD",
    "Codec",
    "StrictCodec",
    "as_codec",
    "by_value",
    "decode_payload",
    "encode_payload",
    "encode_result",
    "type_name",
]


class _NoPayload:
    def __repr__(self) -> str:
        return "NO_PAYLOAD"


#: The payload type of a handler that takes only the context.
NO_PAYLOAD: Any = _NoPayload()


@runtime_checkable
class Codec(Protocol):
    """Turns values into JSON text and back, checked against a type.

    ``what`` names the value in error messages (``"payload of job 'add'"``). Both raise
    :class:`~trioforge.PayloadError`, and only that, for a value that does not fit ``tp``.
    ``encode`` must return ASCII JSON text (every database stores it as is).
    """

    def encode(self, tp: Any, value: Any, what: str) -> str:
        """``value`` as JSON text, checked against ``tp`` (``what`` names it in errors);
        raises :class:`~trioforge.PayloadError` when it does not fit."""

    def decode(self, tp: Any, text: str, what: str) -> Any:
        """The ``tp`` value that JSON ``text`` holds (``what`` names it in errors); raises
        :class:`~trioforge.PayloadError` when the text does not fit ``tp``."""


def type_name(tp: Any) -> str:
    """A short readable name for a type (``P``, ``list[int]``, ``int | None``)."""
    if tp is Any:
        return "Any"
    if tp is type(None) or tp is None:
        return "None"
    if tp is Ellipsis:
        return "..."
    args = get_args(tp)
    if _is_union(tp):
        return " | ".join(type_name(a) for a in args)
    if get_origin(tp) is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if args:
        return f"{type_name(get_origin(tp))}[{', '.join(type_name(a) for a in args)}]"
    name = getattr(tp, "__qualname__", None)
    return name if isinstance(name, str) else repr(tp)


def _got(value: Any) -> str:
    """``int 1``, ``str 'x'``, ``None``: the type and (briefly) the value refused."""
    if value is None:
        return "None"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


class _Mismatch(Exception):
    """A value that does not fit its type; ``at`` is the path below the hook's value."""

    def __init__(self, expected: str, value: Any, at: str = "", detail: str = "") -> None:
        got = detail or f"got {_got(value)}"
        super().__init__(f"expected {expected}, {got}")
        self.at = at


# --- the strict hooks: each takes the Python object or its JSON form ---------------------


def _structure_str(value: Any, cl: Any) -> Any:
    if cl is not str and issubclass(cl, enum.Enum):
        return _structure_enum(value, cl)
    if not isinstance(value, str):
        raise _Mismatch("str", value)
    return value


def _structure_int(value: Any, cl: Any) -> Any:
    if cl is not int and issubclass(cl, enum.Enum):
        return _structure_enum(value, cl)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Mismatch("int", value)
    return value


def _structure_float(value: Any, cl: Any) -> Any:
    if cl is not float and issubclass(cl, enum.Enum):
        return _structure_enum(value, cl)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Mismatch("float", value)
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        raise _Mismatch("a float", value, detail=f"got {_got(value)}, out of range") from None
    if not math.isfinite(number):
        raise _Mismatch("a finite float", value)
    return number


def _structure_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise _Mismatch("bool", value)
    return value


def _structure_none(value: Any, _: Any) -> None:
    if value is not None:
        raise _Mismatch("None", value)


def _structure_enum(value: Any, cl: type[enum.Enum]) -> enum.Enum:
    if isinstance(value, cl):
        return value
    for member in cl:
        if type(member.value) is type(value) and member.value == value:
            return member
    values = ", ".join(repr(m.value) for m in cl)
    raise _Mismatch(f"{cl.__qualname__} (one of {values})", value)


def _structure_datetime(value: Any, _: Any) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _Mismatch("an ISO 8601 datetime", value) from None
    elif isinstance(value, dt.datetime):
        parsed = value
    else:
        raise _Mismatch("datetime", value)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _Mismatch(
            "an aware datetime", value, detail=f"got naive {_got(value)}; attach a tzinfo"
        )
    return parsed


def _structure_date(value: Any, _: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise _Mismatch("date (or an ISO 8601 date)", value)


def _structure_time(value: Any, _: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(value)
        except ValueError:
            pass
    raise _Mismatch("time (or an ISO 8601 time)", value)


_DURATION = re.compile(
    r"(?P<sign>-)?P(?!$)(?:(?P<days>\d+)D)?(?:T(?=\d)(?:(?P<hours>\d+)H)?"
    r"(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)(?:\.(?P<micro>\d{1,6}))?S)?)?"
)


def _parse_duration(text: str) -> dt.timedelta | None:
    """An ISO 8601 duration of days, hours, minutes and seconds (None: not one)."""
    m = _DURATION.fullmatch(text)
    if m is None:
        return None
    micro = int(((m["micro"] or "") + "000000")[:6])
    us = (
        (int(m["days"] or 0) * 86400)
        + int(m["hours"] or 0) * 3600
        + int(m["minutes"] or 0) * 60
        + int(m["seconds"] or 0)
    ) * 1_000_000 + micro
    return dt.timedelta(microseconds=-us if m["sign"] else us)


def _format_duration(value: dt.timedelta) -> str:
    """``value`` as an ISO 8601 duration (``PT30S``, ``-P1DT0.5S``): exact to the µs."""
    us = abs(value // dt.timedelta(microseconds=1))
    days, us = divmod(us, 86_400_000_000)
    hours, us = divmod(us, 3_600_000_000)
    minutes, us = divmod(us, 60_000_000)
    seconds, micro = divmod(us, 1_000_000)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n) + (
        f"{seconds}.{micro:06d}".rstrip("0") + "S" if micro else f"{seconds}S" if seconds else ""
    )
    text = ("-" if value < dt.timedelta(0) else "") + "P" + (f"{days}D" if days else "")
    if time:
        return f"{text}T{time}"
    return text if days else "PT0S"


def _structure_timedelta(value: Any, _: Any) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    try:
        if isinstance(value, str):
            parsed = _parse_duration(value)
            if parsed is not None:
                return parsed
        elif isinstance(value, int | float) and not isinstance(value, bool | str):
            return dt.timedelta(seconds=value)
    except (OverflowError, ValueError):  # too large, or not finite
        raise _Mismatch("a timedelta within 999999999 days", value) from None
    raise _Mismatch("timedelta (an ISO 8601 duration or a number of seconds)", value)


def _structure_uuid(value: Any, _: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise _Mismatch("UUID (or its text)", value)


def _structure_decimal(value: Any, _: Any) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise _Mismatch("Decimal (or its text)", value) from None
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    else:
        raise _Mismatch("Decimal (its text, or an int)", value)
    if not number.is_finite():
        raise _Mismatch("a finite Decimal", value)
    return number


def _check_json(value: Any, at: str = "") -> None:
    """``Any`` means any JSON value: dicts with str keys, lists, str, int, finite float,
    bool, None."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Mismatch("a finite float", value, at)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{at}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Mismatch("str keys", key, at, detail=f"got key {_got(key)}")
            _check_json(item, f"{at}{_key(key)}")
        return
    raise _Mismatch("a JSON value (dict, list, str, int, float, bool or None)", value, at)


def _structure_any(value: Any, _: Any) -> Any:
    _check_json(value)
    return value


def _structure_literal(tp: Any) -> Callable[[Any, Any], Any]:
    allowed = get_args(tp)

    def structure(value: Any, _: Any) -> Any:
        for option in allowed:
            if type(option) is type(value) and option == value:
                return option
            if (
                isinstance(option, enum.Enum)
                and type(option.value) is type(value)
                and option.value == value
            ):
                return option
        raise _Mismatch(" or ".join(repr(a) for a in allowed), value)

    return structure


def _is_any(tp: Any) -> bool:
    return tp is Any or tp is object


def _is_literal(tp: Any) -> bool:
    return get_origin(tp) is Literal


def _of(origin: type) -> Callable[[Any], bool]:
    """Whether a type is ``origin`` or ``origin[...]``."""

    def check(tp: Any) -> bool:
        return tp is origin or get_origin(tp) is origin

    return check


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_record(tp: Any) -> bool:
    cl = get_origin(tp) or tp
    return isinstance(cl, type) and (attrs.has(cl) or dataclasses.is_dataclass(cl))


def _fields_of(value: Any) -> dict[str, Any]:
    """The fields of an attrs or dataclass instance, as its JSON dict would hold them."""
    if attrs.has(type(value)):
        return {a.name: getattr(value, a.name) for a in attrs.fields(type(value)) if a.init}
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}


def _key(key: str) -> str:
    return f".{key}" if key.isidentifier() else f"[{key!r}]"


#: Payloads' JSON text: what ``json.dumps`` with these arguments gives (it builds this very
#: encoder on every call; one built once saves a third of an encode).
_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=True, separators=(",", ":"))


class StrictCodec:
    """The default codec: a cattrs converter with strict hooks.

    ``StrictCodec(converter)`` starts from a copy of your cattrs converter, so its hooks for
    your own types (a pydantic model, a pendulum time) apply; trioforge's strict hooks for
    the built-in types, attrs classes and dataclasses are added on top.
    """

    def __init__(self, converter: cattrs.Converter | None = None) -> None:
        base = converter.copy() if converter is not None else cattrs.Converter()
        self.converter = base
        self._install(base)

    def _install(self, c: cattrs.Converter) -> None:
        for cl, hook in (
            (str, _structure_str),
            (int, _structure_int),
            (float, _structure_float),
            (bool, _structure_bool),
            (type(None), _structure_none),
            (enum.Enum, _structure_enum),
            (dt.datetime, _structure_datetime),
            (dt.date, _structure_date),
            (dt.time, _structure_time),
            (dt.timedelta, _structure_timedelta),
            (uuid.UUID, _structure_uuid),
            (Decimal, _structure_decimal),
        ):
            c.register_structure_hook(cl, hook)
        c.register_structure_hook_func(_is_any, _structure_any)
        c.register_structure_hook_factory(_is_literal, _structure_literal)
        c.register_structure_hook_factory(_is_union, self._union)
        c.register_structure_hook_factory(_is_record, self._record)
        c.register_structure_hook_factory(_of(list), self._sequence(list))
        c.register_structure_hook_factory(_of(tuple), self._sequence(tuple))
        c.register_structure_hook_factory(_of(dict), self._mapping)
        for cl, unstructure in (
            (dt.datetime, dt.datetime.isoformat),
            (dt.date, dt.date.isoformat),
            (dt.time, dt.time.isoformat),
            (dt.timedelta, _format_duration),
            (uuid.UUID, str),
            (Decimal, str),
        ):
            c.register_unstructure_hook(cl, unstructure)

    def _union(self, tp: Any) -> Callable[[Any, Any], Any]:
        members = get_args(tp)
        optional = type(None) in members
        others = [m for m in members if m is not type(None)]
        structure = self.converter.structure

        def hook(value: Any, _: Any) -> Any:
            if value is None and optional:
                return None
            if len(others) == 1:  # Optional[X]: X's own refusal says more (its path)
                return structure(value, others[0])
            exact = [m for m in others if type(value) is (get_origin(m) or m)]
            for member in exact + [m for m in others if m not in exact]:
                try:
                    return structure(value, member)
                except Exception:
                    continue
            raise _Mismatch(type_name(tp), value)

        return hook

    def _record(self, tp: Any) -> Callable[[Any, Any], Any]:
        cl = get_origin(tp) or tp
        # The same checks twice: a fast one that stops at the first refusal, and, only
        # when it refuses, the detailed one that names every refused field (it costs
        # twice as much, per decoded payload on the worker's hot path).
        fast, detailed = (
            make_dict_structure_fn(
                tp, self.converter, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=d
            )
            for d in (False, True)
        )

        def hook(value: Any, _: Any) -> Any:
            if type(value) is not dict:  # a decoded payload is one: no ABC check for it
                if isinstance(value, cl):
                    value = _fields_of(value)  # an instance is checked like its dict
                elif not isinstance(value, Mapping):
                    raise _Mismatch(f"{type_name(tp)} or a dict of its fields", value)
            try:
                return fast(value, tp)
            except Exception:
                return detailed(value, tp)

        return hook

    def _sequence(self, kind: type) -> Callable[[Any], Callable[[Any, Any], Any]]:
        def factory(tp: Any) -> Callable[[Any, Any], Any]:
            args = get_args(tp)
            structure = self.converter.structure

            def hook(value: Any, _: Any) -> Any:
                if not isinstance(value, list | tuple):
                    raise _Mismatch(f"{type_name(tp)} (a list)", value)
                if kind is tuple and args and args[-1] is not Ellipsis:
                    if len(value) != len(args):
                        raise _Mismatch(
                            type_name(tp), value, detail=f"got {len(value)} items, not {len(args)}"
                        )
                    item_types = list(args)
                else:
                    item_types = [args[0] if args else Any] * len(value)
                items, errors = [], []
                for i, (item, item_type) in enumerate(zip(value, item_types, strict=True)):
                    try:
                        items.append(structure(item, item_type))
                    except Exception as exc:
                        errors.append(
                            _note(exc, IterableValidationNote(f"@ index {i}", i, item_type))
                        )
                if errors:
                    raise cattrs.IterableValidationError(
                        f"While structuring {type_name(tp)}", errors, tp
                    )
                return kind(items)

            return hook

        return factory

    def _mapping(self, tp: Any) -> Callable[[Any, Any], Any]:
        args = get_args(tp)
        key_type, value_type = args if args else (Any, Any)
        if key_type is not str and key_type is not Any:
            raise StructureHandlerNotFoundError(
                f"{type_name(tp)}: JSON object keys are strings; use dict[str, ...]", tp
            )
        structure = self.converter.structure

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, Mapping):
                raise _Mismatch(f"{type_name(tp)} (a dict)", value)
            result: dict[str, Any] = {}
            errors: list[Exception] = []
            for key, item in value.items():
                if not isinstance(key, str):
                    errors.append(_Mismatch("str keys", key, detail=f"got key {_got(key)}"))
                    continue
                try:
                    result[key] = structure(item, value_type)
                except Exception as exc:
                    errors.append(
                        _note(exc, IterableValidationNote(f"@ key {key!r}", key, value_type))
                    )
            if errors:
                raise cattrs.IterableValidationError(
                    f"While structuring {type_name(tp)}", errors, tp
                )
            return result

        return hook

    # --- the Codec protocol -----------------------------------------------------------

    def check(self, tp: Any, value: Any, what: str) -> Any:
        """``value`` (an object or its JSON form) as ``tp``; PayloadError if it does not fit."""
        try:
            return self.converter.structure(value, tp)
        except Exception as exc:
            raise PayloadError(f"{what} does not fit {type_name(tp)}: {_describe(exc)}") from None

    def encode(self, tp: Any, value: Any, what: str) -> str:
        """``value`` as JSON text, checked against ``tp`` and never converted; raises
        :class:`~trioforge.PayloadError` naming the JSON path that does not fit."""
        checked = self.check(tp, value, what)
        try:
            data = self.converter.unstructure(checked, tp)
            return _JSON.encode(data)
        except Exception as exc:
            raise PayloadError(
                f"{what} has no JSON form as {type_name(tp)} ({type(exc).__name__}: {exc})"
            ) from None

    def decode(self, tp: Any, text: str, what: str) -> Any:
        """The ``tp`` value that JSON ``text`` holds, checked and never converted; raises
        :class:`~trioforge.PayloadError` naming the JSON path that does not fit."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PayloadError(f"{what} is not JSON text ({exc})") from None
        return self.check(tp, data, what)


def _note(exc: Exception, note: IterableValidationNote) -> Exception:
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]
    return exc


def _location(note: object) -> str:
    if isinstance(note, AttributeValidationNote):
        return _key(note.name)
    if isinstance(note, IterableValidationNote):
        index = note.index
        return f"[{index}]" if isinstance(index, int) else _key(str(index))
    return ""


def _leaves(exc: BaseException, at: str) -> list[str]:
    """Every refusal in ``exc`` (a cattrs error tree), as ``$.path: what was wrong``."""
    if isinstance(exc, cattrs.BaseValidationError):
        found: list[str] = []
        for sub in exc.exceptions:
            notes = [
                n
                for n in getattr(sub, "__notes__", [])
                if isinstance(n, AttributeValidationNote | IterableValidationNote)
            ]
            where = "".join(_location(n) for n in notes[-1:])
            found.extend(_leaves(sub, at + where))
        return found
    if isinstance(exc, _Mismatch):
        return [f"{at}{exc.at}: {exc}"]
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(repr(k) for k in sorted(exc.extra_fields))
        return [f"{at}: unknown key(s) {keys} for {type_name(exc.cl)}"]
    if isinstance(exc, KeyError):
        return [f"{at}: required field missing"]
    if isinstance(exc, StructureHandlerNotFoundError):
        return [
            f"{at}: no JSON form known for {type_name(exc.type_)}; give Registry(converter=...)"
            " hooks for it (docs/payloads.md)"
        ]
    return [f"{at}: {type(exc).__name__}: {exc}"]


def _describe(exc: BaseException) -> str:
    leaves = _leaves(exc, "$")
    shown = "; ".join(leaves[:5])
    return shown + (f"; and {len(leaves) - 5} more" if len(leaves) > 5 else "")


#: The codec a registry uses unless given ``converter=``.
DEFAULT_CODEC = StrictCodec()


def as_codec(converter: cattrs.Converter | Codec | None) -> Codec:
    """The codec for ``Registry(converter=...)``: a cattrs converter (made strict), a
    :class:`Codec` of your own, or None for the default."""
    if converter is None:
        return DEFAULT_CODEC
    if isinstance(converter, cattrs.BaseConverter):
        if not isinstance(converter, cattrs.Converter):
            raise TypeError("Registry(converter=...) takes a cattrs.Converter, not a BaseConverter")
        return StrictCodec(converter)
    if isinstance(converter, Codec):
        return converter
    raise TypeError(
        f"Registry(converter=...) takes a cattrs.Converter or a trioforge.Codec, got {converter!r}"
    )


def by_value(tp: Any, value: Any) -> Any:
    """The type to encode ``value`` by when ``tp`` says nothing (Any): an attrs or
    dataclass instance by its class; anything else must be a JSON value."""
    if (tp is Any or tp is object) and _is_record(type(value)):
        return type(value)
    return tp


def encode_payload(codec: Codec, job_name: str, tp: Any, payload: Any) -> str:
    """JSON text of ``payload`` for job ``job_name``, whose payload type is ``tp``."""
    if tp is NO_PAYLOAD:
        if payload is not None:
            raise PayloadError(f"job {job_name!r} takes no payload; enqueue it with payload=None")
        return "null"
    return codec.encode(tp, payload, f"payload of job {job_name!r}")


def decode_payload(codec: Codec, job_name: str, tp: Any, text: str) -> Any:
    """A stored payload as its type; one that no longer fits is final (never retried)."""
    if tp is NO_PAYLOAD:
        return None
    try:
        return codec.decode(tp, text, f"stored payload of job {job_name!r}")
    except PayloadError as exc:
        raise PayloadError(
            f"{exc}; was the payload class changed incompatibly?", final=True
        ) from None


def encode_result(codec: Codec, what: str, tp: Any, value: Any) -> str | None:
    """JSON text of a handler's return value ``value`` (None stays None), by its declared
    type ``tp`` (Any: by the value). One that cannot be encoded is final: the handler's
    side effects already happened, so no retry would help."""
    if value is None and (tp is Any or tp is object or tp is type(None) or tp is None):
        return None
    try:
        return codec.encode(by_value(tp, value), value, f"return value of {what}")
    except PayloadError as exc:
        raise PayloadError(str(exc), final=True) from None
