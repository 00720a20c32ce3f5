"""Shared hypothesis strategies: scheduling, and payloads of every type the codec takes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import uuid
from decimal import Decimal
from typing import Any, Literal

import attrs
from hypothesis import strategies as st

import trioforge
from trioforge import Priority

priorities = st.sampled_from(list(Priority))

#: Delays in whole milliseconds, so virtual-time comparisons are exact.
delays = st.integers(min_value=0, max_value=60_000).map(lambda ms: ms / 1000)

retry_policies = st.builds(
    trioforge.Retry,
    max_attempts=st.integers(min_value=1, max_value=6),
    backoff=st.sampled_from(["exponential", "constant"]),
    base_delay=st.integers(min_value=0, max_value=30),
    max_delay=st.integers(min_value=0, max_value=120),
)

#: Text as a careless caller or a handler's error may hold it: NUL, lone surrogates (high,
#: low, or a pair written as two code points), control and bidi characters and non-BMP
#: characters, among ordinary ones.
_AWKWARD = ["\x00", "\ud800", "\udfff", "\udbff", "\x1b", "\x07", "\x7f", "\n", "\u202e"]
#: A list joined, not ``st.text``: that merges its alphabet into one range of code points
#: without surrogates, where the awkward ones would be all but never drawn.
awkward_text = st.lists(
    st.one_of(
        st.sampled_from([*_AWKWARD, "\U0001f600", "\U0010ffff", "\\", "'", "%"]),
        st.characters(),
    ),
    min_size=1,
    max_size=24,
).map("".join)

# --- payloads: every type the codec supports, and values of the wrong type -------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Inner:
    label: str
    at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float


@attrs.frozen
class Everything:
    """One field of each supported type (nested ones included)."""

    text: str
    count: int
    ratio: float
    flag: bool
    when: dt.datetime
    day: dt.date
    clock: dt.time
    span: dt.timedelta
    ident: uuid.UUID
    amount: Decimal
    colour: Colour
    level: Level
    mode: Literal["fast", "slow", 3]
    numbers: list[int]
    pair: tuple[str, Decimal]
    many: tuple[dt.date, ...]
    scores: dict[str, float]
    maybe: int | None
    either: int | str
    inners: list[Inner]
    point: Point
    extra: Any


#: Fixed UTC offsets, to the second (what an ISO 8601 offset can carry).
offsets = st.integers(min_value=-86399, max_value=86399).map(
    lambda s: dt.timezone(dt.timedelta(seconds=s))
)
aware_datetimes = st.datetimes(timezones=offsets)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
finite_decimals = st.decimals(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)

#: A strategy per field of :class:`Everything`.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "text": st.text(),
    "count": st.integers(),
    "ratio": finite_floats,
    "flag": st.booleans(),
    "when": aware_datetimes,
    "day": st.dates(),
    "clock": st.times(timezones=st.none() | offsets),
    "span": st.timedeltas(),
    "ident": st.uuids(),
    "amount": finite_decimals,
    "colour": st.sampled_from(Colour),
    "level": st.sampled_from(Level),
    "mode": st.sampled_from(["fast", "slow", 3]),
    "numbers": st.lists(st.integers(), max_size=4),
    "pair": st.tuples(st.text(), finite_decimals),
    "many": st.lists(st.dates(), max_size=3).map(tuple),
    "scores": st.dictionaries(st.text(), finite_floats, max_size=3),
    "maybe": st.none() | st.integers(),
    "either": st.integers() | st.text(),
    "inners": st.lists(st.builds(Inner, st.text(), aware_datetimes), max_size=3),
    "point": st.builds(Point, finite_floats, finite_floats),
    "extra": json_values,
}
everythings = st.fixed_dictionaries(FIELDS).map(lambda fields: Everything(**fields))

_words = st.text(alphabet="abcxyz ", min_size=1)  # never a number, date or member value
_not_finite = st.sampled_from([math.nan, math.inf, -math.inf])

#: For each field of :class:`Everything`, values the codec must refuse there.
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "text": st.integers() | finite_floats | st.booleans() | st.none() | st.lists(st.text()),
    "count": st.text() | st.floats() | st.booleans() | st.none() | finite_decimals,
    "ratio": st.text() | st.booleans() | st.none() | _not_finite | finite_decimals,
    "flag": st.integers() | st.text() | st.none() | finite_floats,
    "when": st.datetimes() | st.integers() | st.dates() | _words | st.none(),
    "day": aware_datetimes | st.datetimes() | st.integers() | _words,
    "clock": st.integers() | _words | st.datetimes() | st.none(),
    "span": _words | st.booleans() | st.none() | _not_finite | st.lists(st.integers()),
    "ident": st.integers() | _words | st.none(),
    "amount": st.floats() | st.booleans() | _words | st.none(),
    "colour": _words | st.integers() | st.just(Level.LOW),
    "level": st.booleans() | _words | st.integers(min_value=3) | st.just(Colour.RED),
    "mode": _words | st.booleans() | st.integers(min_value=4) | st.just(3.0),
    "numbers": st.text(min_size=1)
    | st.lists(st.text(), min_size=1)
    | st.lists(st.booleans(), min_size=1)
    | st.lists(st.floats(), min_size=1),
    "pair": st.tuples(st.text())
    | st.tuples(st.integers(), st.text())
    | st.tuples(st.text(), finite_floats)
    | st.text(),
    "many": st.lists(st.integers(), min_size=1) | st.text() | st.lists(aware_datetimes, min_size=1),
    "scores": st.lists(finite_floats, min_size=1)
    | st.dictionaries(st.text(), st.text(), min_size=1)
    | st.dictionaries(st.integers(), finite_floats, min_size=1),
    "maybe": st.text() | finite_floats | st.booleans(),
    "either": finite_floats | st.none() | st.booleans() | st.lists(st.integers(), min_size=1),
    "inners": st.lists(st.builds(Inner, st.text(), st.datetimes()), min_size=1)
    | st.lists(st.integers(), min_size=1)
    | st.lists(st.builds(dict, label=st.integers()), min_size=1),
    "point": st.builds(dict, x=st.text(), y=finite_floats)
    | st.builds(Inner, st.text(), aware_datetimes)
    | st.none()
    | st.text(),
    "extra": st.dates()
    | st.uuids()
    | st.tuples(st.integers())
    | _not_finite
    | st.dictionaries(st.integers(), st.integers(), min_size=1)
    | finite_decimals,
}


def same(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are equal and of the same types all the way down (a datetime's
    offset and a Decimal's digits included): an exact round trip."""
    if type(a) is not type(b):
        return False
    if attrs.has(type(a)) or dataclasses.is_dataclass(a):
        return same(_fields(a), _fields(b))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, Decimal):
        return bool(a.as_tuple() == b.as_tuple())
    if isinstance(a, dt.datetime | dt.time):
        return a == b and a.utcoffset() == b.utcoffset() and str(a) == str(b)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def _fields(value: Any) -> dict[str, Any]:
    if attrs.has(type(value)):
        return {a.name: getattr(value, a.name) for a in attrs.fields(type(value))}
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
