"""Public jobs and workflows whose payloads and results hold every type the codec has a JSON
form for: tests/test_codegen.py generates their TypeScript bindings and compiles them, and
tests/test_browser.py drives the compiled module in Chromium against these handlers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from typing import Annotated, Any, Literal, NewType

import attrs

import trioforge

registry = trioforge.Registry()

UserId = NewType("UserId", str)


class Format(enum.Enum):
    CSV = "csv"
    XLSX = "xlsx"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Column:
    name: str
    width: int | None = None


@attrs.frozen
class Node:
    """A class that holds itself."""

    label: str
    children: list[Node]


@attrs.frozen
class ExportRequest:
    format: Format
    columns: list[Column]
    since: dt.datetime | None = None
    owner: UserId = UserId("anyone")
    note: Annotated[str, "shown to the user"] = ""


@dataclasses.dataclass(frozen=True)
class Export:
    url: str
    rows: int
    ratio: float
    done: bool
    nothing: None
    level: Level
    mode: Literal["full", "delta", 3, None]
    at: dt.datetime
    day: dt.date
    clock: dt.time
    took: dt.timedelta
    id: uuid.UUID
    total: decimal.Decimal
    pair: tuple[int, str]
    sizes: tuple[int, ...]
    counts: dict[str, int]
    meta: dict[str, Any]
    anything: Any
    loose: list  # type: ignore[type-arg]  # a bare list: any JSON values
    tree: Node
    columns: list[Column]
    maybe: int | str | None
    owner: UserId
    #: Not a constructor argument: not in the JSON either.
    computed: int = dataclasses.field(init=False, default=0)


def export_of(request: ExportRequest) -> Export:
    """What ``reports:export`` answers ``request``."""
    return Export(
        url=f"/exports/{request.owner}.{request.format.value}",
        rows=len(request.columns),
        ratio=0.5,
        done=True,
        nothing=None,
        level=Level.HIGH,
        mode="delta",
        at=dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        day=dt.date(2026, 1, 2),
        clock=dt.time(3, 4, 5),
        took=dt.timedelta(days=1, seconds=30, microseconds=500_000),
        id=uuid.UUID("0b9c4ad5-8e4f-4c8e-9d3a-54a5b6f1c2d3"),
        total=decimal.Decimal("12.50"),
        pair=(7, "seven"),
        sizes=(1, 2, 3),
        counts={c.name: c.width or 0 for c in request.columns},
        meta={"since": None if request.since is None else request.since.isoformat()},
        anything=[1, "two", {"three": 3.0}],
        loose=[True, None],
        tree=Node("root", [Node("leaf", [])]),
        columns=request.columns,
        maybe="many",
        owner=request.owner,
    )


@registry.job("reports:export", public=True)
async def export_report(ctx: trioforge.JobContext, request: ExportRequest) -> Export:
    await ctx.progress(50, "halfway")
    await ctx.progress(100, "written")
    return export_of(request)


@registry.job("ping", public=True)
async def ping(ctx: trioforge.JobContext) -> None:
    """No payload, no result."""


@registry.job("delete", public=True)
async def delete(ctx: trioforge.JobContext, job: int) -> int:
    """A name that is a reserved word: its function is ``delete_``."""
    return job


@registry.job("echo-any", public=True)
async def echo_any(ctx: trioforge.JobContext, value: Any) -> Any:
    return value


@registry.job("internal")
async def internal(ctx: trioforge.JobContext, tags: set[str]) -> None:
    """Not public: its payload type (no JSON form) is no concern of the bindings."""


@attrs.frozen
class ShipOrder:
    order: str
    parcels: int = 1


@registry.workflow("orders:ship", public=True)
async def ship_v1(ctx: trioforge.WorkflowContext, order: str) -> str:
    """An older version: new runs take version 2, so the bindings write that one."""
    return order


@registry.workflow("orders:ship", version=2, public=True)
async def ship(ctx: trioforge.WorkflowContext, request: ShipOrder) -> list[str]:
    packed = await ctx.step(
        "pack", lambda: [f"{request.order}/{n + 1}" for n in range(request.parcels)]
    )
    label = await ctx.step("label", lambda: f"label for {len(packed)} parcels")
    return [*packed, label]
