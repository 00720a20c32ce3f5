"""TypeScript bindings for a registry's public jobs and workflows (pure: a registry in, the
text of one ``.ts`` module out; ``trioforge codegen typescript`` prints it).

For each job and workflow declared ``public=True`` the module holds its payload and result
types, written as the JSON the strict codec reads and writes (docs/payloads.md), and an
async function that enqueues it through the web API (``POST /api/jobs/{name}``, or
``/api/workflows/{name}`` for a workflow's newest version) and returns the store that
``track.js`` follows it with. An attrs class or dataclass becomes an interface of its
fields; one with defaults gets a second, ``<Name>Input``, where those fields may be left
out (a payload may omit them; a result always carries them). A type whose JSON form the
generator does not know is a :class:`~trioforge.ConfigurationError` naming the job and the
type: never a silent ``any``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import re
import types
import typing
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

import attrs

from trioforge._codec import NO_PAYLOAD, StrictCodec, type_name
from trioforge._core.errors import ConfigurationError
from trioforge._registry import JobDefinition, Registry

__all__ = ["typescript"]

#: What the module is told to import ``track`` and ``trackRun`` from, unless told otherwise.
TRACK_MODULE = "./track.js"

#: Types whose JSON form is a string (ISO 8601 text, a UUID's or a Decimal's text).
_TEXT_TYPES = (dt.datetime, dt.date, dt.time, dt.timedelta, uuid.UUID, decimal.Decimal)
#: What a field of each of those types holds, said above the field.
_TEXT_NOTES: dict[Any, str] = {
    dt.datetime: "ISO 8601 date and time with an offset (`Date.toISOString()` writes one).",
    dt.date: "ISO 8601 date (2026-01-02).",
    dt.time: "ISO 8601 time (03:04:05, optionally with an offset).",
    dt.timedelta: "ISO 8601 duration (PT30S, P1DT2H).",
    uuid.UUID: "A UUID's text.",
    decimal.Decimal: "A decimal number as text, its digits kept exactly (12.50).",
}
_SCALARS: dict[Any, str] = {str: "string", int: "number", float: "number", bool: "boolean"}

#: Words an identifier of the module cannot be (reserved in strict-mode modules).
_RESERVED = frozenset({
    "await", "break", "case", "catch", "class", "const", "continue", "debugger", "default",
    "delete", "do", "else", "enum", "export", "extends", "false", "finally", "for",
    "function", "if", "implements", "import", "in", "instanceof", "interface", "let", "new",
    "null", "package", "private", "protected", "public", "return", "static", "super",
    "switch", "this", "throw", "true", "try", "typeof", "var", "void", "while", "with",
    "yield", "any", "boolean", "never", "number", "object", "string", "symbol", "undefined",
    "unknown",
})  # fmt: skip
#: Names the module defines or uses itself; a job's function or a class takes another.
_TAKEN = frozenset({
    "track", "trackRun", "settings", "enqueue", "JsonValue", "EnqueueOptions",
    "EnqueueError", "JobStore", "RunStore", "TrackOptions", "Promise", "Error",
    "AbortSignal", "Response", "JSON", "Array", "Object", "String", "Number", "Boolean",
    "Record", "Date", "fetch",
})  # fmt: skip

_PRELUDE = """\
/** Any JSON value: what a payload or result typed `Any` may be. */
export type JsonValue =
  | string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** Where the trioforge web app is: "" for this page's own origin (the default), else its
 * URL ("https://jobs.example", allowed by the app's `cors_origins`). */
export const settings: { baseUrl: string } = { baseUrl: "" };

export interface EnqueueOptions extends TrackOptions {
  /** The web app's URL for this call (default: `settings.baseUrl`). */
  baseUrl?: string;
  /** Aborts the enqueue request. */
  signal?: AbortSignal;
}

/** The app refused the enqueue: 422 when the payload does not fit the job's type (the
 * message says where), 404 when the job is not public there, 403 from a page whose origin
 * the app does not allow. */
export class EnqueueError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "EnqueueError";
    this.status = status;
  }
}

"""

#: The helper every generated function calls (left out of a module with no function).
_ENQUEUE = """\
/** POST the payload as JSON (the API takes nothing else) and answer the new job's id. */
async function enqueue(
  path: string, payload: unknown, options: EnqueueOptions,
): Promise<{ base: string; id: number }> {
  const base = (options.baseUrl ?? settings.baseUrl).replace(/\\/+$/, "");
  const response = await fetch(`${base}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
    signal: options.signal ?? null,
  });
  const body: unknown = await response.json().catch(() => null);
  if (response.status !== 201 || typeof body !== "object" || body === null
      || !("id" in body) || typeof body.id !== "number") {
    const error = typeof body === "object" && body !== null && "error" in body
      && typeof body.error === "string" ? body.error : `${response.status} ${response.statusText}`;
    throw new EnqueueError(response.status, `POST ${path}: ${error}`);
  }
  return { base, id: body.id };
}
"""


def typescript(registry: Registry[Any], *, track_module: str = TRACK_MODULE) -> str:
    """The TypeScript module of ``registry``'s public jobs and workflows (a workflow by its
    newest version, the one ``POST /api/workflows/{name}`` starts), importing ``track`` and
    ``trackRun`` from ``track_module``.

    Raises:
        ConfigurationError: a public job's payload or result type has no JSON form the
            generator knows, its registry has a codec of its own, or two public jobs'
            names give one function name.
    """
    public = sorted(
        (d for d in registry if d.public and registry.latest(d) is d),
        key=lambda d: d.name,
    )
    module = _Module()
    for definition in public:
        module.name_function(_public_name(definition))
    blocks = [_job_block(module, definition, _public_name(definition)) for definition in public]
    # Only what is used: a frontend compiling with noUnusedLocals takes the module too.
    runs = any(d.workflow is not None for d in public)
    jobs = any(d.workflow is None for d in public)
    values = ["track"] * jobs + ["trackRun"] * runs
    stores = ["JobStore"] * jobs + ["RunStore"] * runs
    where = _string(track_module)
    head = [
        "// Generated by `trioforge codegen typescript`: the public jobs and workflows of a",
        "// trioforge registry. Do not edit; generate it again when their types change.",
        "",
        *([f"import {{ {', '.join(values)} }} from {where};"] if public else []),
        f"import type {{ {', '.join([*stores, 'TrackOptions'])} }} from {where};",
        "",
        _PRELUDE,
        *([_ENQUEUE] if public else []),
    ]
    return "\n".join([*head, *module.interfaces, *blocks]).rstrip("\n") + "\n"


def _public_name(definition: JobDefinition[Any, Any]) -> str:
    """The name the API starts it by: a job's name, a workflow's name without version."""
    return definition.workflow.name if definition.workflow is not None else definition.name


def _job_block(module: _Module, definition: JobDefinition[Any, Any], name: str) -> str:
    """The payload and result types of one job and the function that enqueues it."""
    function = module.functions[name]
    pascal = function[0].upper() + function[1:].rstrip("_")
    workflow = definition.workflow is not None
    what = f"workflow {name!r}" if workflow else f"job {name!r}"
    if not isinstance(definition.codec, StrictCodec):
        raise ConfigurationError(
            f"cannot generate TypeScript for {what}: its registry's codec "
            f"{type(definition.codec).__name__} is not trioforge's StrictCodec, so the JSON "
            "forms of its types are unknown; declare it without public=True or use "
            "Registry(converter=cattrs.Converter(...))"
        )
    kind = "workflow" if workflow else "job"
    path = f"/api/{'workflows' if workflow else 'jobs'}/{urllib.parse.quote(name, safe=':@')}"
    quoted = _comment(json.dumps(name))
    lines = []
    params = ""
    payload_arg = "null"
    if definition.payload_type is not NO_PAYLOAD:
        payload = module.type_name(f"{pascal}Payload")
        shape = _Types(module, what, "payload").of(definition.payload_type, sent=True)
        lines += [
            f"/** The payload of {kind} {quoted}. */",
            f"export type {payload} = {shape};",
            "",
        ]
        params, payload_arg = f"payload: {payload}, ", "payload"
    result = module.type_name(f"{pascal}Result")
    shape = _Types(module, what, "result").of(definition.result_type, sent=False)
    lines += [f"/** The result of {kind} {quoted}. */", f"export type {result} = {shape};", ""]
    store, follow = ("RunStore", "trackRun") if workflow else ("JobStore", "track")
    action = "Start a run of workflow" if workflow else "Enqueue job"
    lines += [
        f"/** {action} {quoted} (POST {_comment(path)}) and follow it live. */",
        f"export async function {function}(",
        f"  {params}options: EnqueueOptions = {{}},",
        f"): Promise<{store}<{result}>> {{",
        f"  const {{ base, id }} = await enqueue({_string(path)}, {payload_arg}, options);",
        f"  return {follow}<{result}>(base, id, options);",
        "}",
        "",
    ]
    return "\n".join(lines)


class _Module:
    """The names the module has given out, and the interfaces of the classes it met."""

    def __init__(self) -> None:
        self.taken: set[str] = set(_TAKEN)
        #: Public name -> its function's name.
        self.functions: dict[str, str] = {}
        #: (class, sent form?) -> its interface's name.
        self.records: dict[tuple[type, bool], str] = {}
        self.interfaces: list[str] = []

    def name_function(self, name: str) -> None:
        """``images:resize`` gives ``imagesResize``; a reserved word gets a ``_``."""
        words = [w for w in re.split(r"[^0-9A-Za-z]+", name) if w]
        if not words:
            raise ConfigurationError(
                f"cannot generate TypeScript for job {name!r}: its name has no letter or "
                "digit to make a function name of"
            )
        first, *rest = words
        function = first[0].lower() + first[1:] + "".join(w[0].upper() + w[1:] for w in rest)
        if function[0].isdigit():
            function = "_" + function
        if function in _RESERVED or function in _TAKEN:
            function += "_"
        other = next((n for n, f in self.functions.items() if f == function), None)
        if other is not None:
            raise ConfigurationError(
                f"cannot generate TypeScript: public jobs {other!r} and {name!r} both give "
                f"the function name {function}; rename one"
            )
        self.taken.add(function)
        self.functions[name] = function

    def type_name(self, wanted: str) -> str:
        """``wanted``, or ``wanted2``, ``wanted3``... when another type has it."""
        name, n = wanted, 1
        while name in self.taken or name in _RESERVED:
            n += 1
            name = f"{wanted}{n}"
        self.taken.add(name)
        return name


class _Types:
    """The TypeScript type of a payload or result type of one job (``what``)."""

    def __init__(self, module: _Module, what: str, role: str) -> None:
        self.module, self.what, self.role = module, what, role

    def refuse(self, tp: Any, at: str, why: str) -> ConfigurationError:
        return ConfigurationError(
            f"cannot generate TypeScript for {self.what}: its {self.role} holds "
            f"{type_name(tp)} at {at}, {why}; use the types listed in docs/payloads.md, or "
            "declare it without public=True"
        )

    def of(self, tp: Any, *, sent: bool, at: str = "$") -> str:
        """``tp`` as TypeScript; ``sent``: the form a payload is sent in (fields with a
        default may be left out), else the form the codec writes (every field)."""
        tp = _unwrapped(tp)
        if tp is Any or tp is object:
            return "JsonValue"
        if tp is None or tp is type(None):
            return "null"
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self.literals([m.value for m in tp], tp, at)
        if isinstance(tp, type) and tp in _SCALARS:
            return _SCALARS[tp]
        if tp in _TEXT_TYPES:
            return "string"
        origin, args = get_origin(tp), get_args(tp)
        if origin is Literal:
            return self.literals([a.value if isinstance(a, enum.Enum) else a for a in args], tp, at)
        if origin in (Union, types.UnionType):
            return _union(self.of(a, sent=sent, at=at) for a in args)
        if _is_record(tp):
            if args:
                raise self.refuse(tp, at, "a generic class, which the generator does not write")
            return self.record(tp, sent=sent, at=at)
        if tp is list or origin is list or tp is tuple or (origin is tuple and not args):
            item = self.of(args[0], sent=sent, at=f"{at}[*]") if args else "JsonValue"
            return f"{_grouped(item)}[]"
        if origin is tuple:
            if args[-1] is Ellipsis:
                return f"{_grouped(self.of(args[0], sent=sent, at=f'{at}[*]'))}[]"
            items = (self.of(a, sent=sent, at=f"{at}[{i}]") for i, a in enumerate(args))
            return f"[{', '.join(items)}]"
        if tp is dict or origin is dict:
            if args and args[0] is not str and args[0] is not Any:
                raise self.refuse(tp, at, "whose keys are not str (JSON object keys are)")
            value = self.of(args[1], sent=sent, at=f"{at}[*]") if args else "JsonValue"
            return f"{{ [key: string]: {value} }}"
        raise self.refuse(tp, at, "which has no JSON form the generator knows")

    def literals(self, values: list[Any], tp: Any, at: str) -> str:
        """A union of literal types, each a JSON scalar's."""
        shown = []
        for value in values:
            if value is None:
                shown.append("null")
            elif isinstance(value, bool):
                shown.append("true" if value else "false")
            elif isinstance(value, str):
                shown.append(_string(value))
            elif isinstance(value, int | float) and math.isfinite(value):
                shown.append(repr(value))
            else:
                raise self.refuse(tp, at, f"whose value {value!r} is not a JSON scalar")
        return _union(shown)

    def record(self, cl: type, *, sent: bool, at: str) -> str:
        """The interface of attrs class or dataclass ``cl`` (written once per form)."""
        sent = sent and self.defaults_within(cl, at)
        key = (cl, sent)
        known = self.module.records.get(key)
        if known is not None:
            return known
        name = self.module.type_name(cl.__name__ + ("Input" if sent else ""))
        self.module.records[key] = name  # before its fields: a class may hold itself
        form = (
            "as a payload sends it (fields with a default may be left out)" if sent else "as JSON"
        )
        title = f"{cl.__module__}.{cl.__qualname__}"
        lines = [f"/** {_comment(title)}, {form}. */", f"export interface {name} {{"]
        for field, field_type, has_default in self.fields(cl, at):
            optional = "?" if sent and has_default else ""
            shape = self.of(field_type, sent=sent, at=f"{at}.{field}")
            note = _TEXT_NOTES.get(_text_type(field_type))
            if note is not None:
                lines.append(f"  /** {note} */")
            lines.append(f"  {_property(field)}{optional}: {shape};")
        lines += ["}", ""]
        self.module.interfaces.append("\n".join(lines))
        return name

    def fields(self, cl: type, at: str) -> list[tuple[str, Any, bool]]:
        """``cl``'s fields as its JSON object holds them: (name, type, has a default)."""
        try:
            hints = typing.get_type_hints(cl, include_extras=True)
        except NameError as exc:
            raise self.refuse(
                cl, at, f"whose field annotations cannot be resolved ({exc}); define the "
                "types they name at module level"
            ) from None  # fmt: skip
        if attrs.has(cl):
            return [
                (a.name, hints.get(a.name, a.type), a.default is not attrs.NOTHING)
                for a in attrs.fields(cl) if a.init
            ]  # fmt: skip
        missing = dataclasses.MISSING
        return [
            (f.name, hints.get(f.name, f.type),
             f.default is not missing or f.default_factory is not missing)
            for f in dataclasses.fields(cl) if f.init
        ]  # fmt: skip

    def defaults_within(self, cl: type, at: str) -> bool:
        """Whether ``cl`` or a class it holds (at any depth) has a field with a default:
        then its sent form differs from its written one."""
        seen: set[type] = set()
        todo = [cl]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            for _, field_type, has_default in self.fields(current, at):
                if has_default:
                    return True
                todo.extend(_records_in(field_type))
        return False


def _unwrapped(tp: Any) -> Any:
    """``tp`` without what the codec looks through: ``Annotated`` and ``NewType``."""
    while True:
        if get_origin(tp) is typing.Annotated:
            tp = get_args(tp)[0]
        elif isinstance(tp, typing.NewType):
            tp = tp.__supertype__
        else:
            return tp


def _text_type(tp: Any) -> Any:
    """The text type (``datetime``...) ``tp`` is, or is optionally; else None."""
    tp = _unwrapped(tp)
    if get_origin(tp) in (Union, types.UnionType):
        others = [a for a in get_args(tp) if a is not type(None)]
        tp = _unwrapped(others[0]) if len(others) == 1 else None
    return tp if tp in _TEXT_TYPES else None


def _is_record(tp: Any) -> bool:
    cl = get_origin(tp) or tp
    return isinstance(cl, type) and (attrs.has(cl) or dataclasses.is_dataclass(cl))


def _records_in(tp: Any) -> Iterator[type]:
    """The attrs classes and dataclasses ``tp`` names (not those inside them)."""
    tp = _unwrapped(tp)
    if _is_record(tp):
        yield get_origin(tp) or tp
        return
    if get_origin(tp) is Literal:
        return
    for arg in get_args(tp):
        if arg is not Ellipsis:
            yield from _records_in(arg)


def _union(members: Iterator[str] | list[str]) -> str:
    """``A | B`` without repeats (``int | float`` is ``number``); ``never`` for none."""
    unique = list(dict.fromkeys(members))
    return " | ".join(unique) if unique else "never"


def _grouped(tp: str) -> str:
    """``tp`` as an array's item type: a union needs brackets (``(A | B)[]``)."""
    return f"({tp})" if " | " in tp else tp


def _string(text: str) -> str:
    """A TypeScript string literal (ASCII, as JSON writes it)."""
    return json.dumps(text)


def _property(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", name) else _string(name)


def _comment(text: str) -> str:
    """``text`` safe inside a ``/** ... */`` comment."""
    return text.replace("*/", "*\\/")
