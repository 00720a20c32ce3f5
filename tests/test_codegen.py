"""``trioforge codegen typescript``: each type as the JSON the codec writes (pure), the
refusals, the CLI, and the module for a registry of every type compiled by tsc --strict."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, NewType, Optional, TypeVar

import attrs
import cattrs
import pytest
from click.testing import CliRunner

from tests.support import codegen_jobs
from tests.support.typescript import compile_ts, with_track
from trioforge import ConfigurationError, JobContext, Registry
from trioforge._cli import main
from trioforge._codegen import _Module, _Types, typescript

T = TypeVar("T")


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Mixed(enum.Enum):
    ONE = 1
    HALF = 0.5
    NAME = "name"
    NONE = None


Email = NewType("Email", str)


def ts(tp: Any, *, sent: bool = False) -> str:
    """``tp`` as the bindings write it."""
    return _Types(_Module(), "job 'x'", "payload").of(tp, sent=sent)


@pytest.mark.parametrize(
    ("tp", "expected"),
    [
        (str, "string"),
        (int, "number"),
        (float, "number"),
        (bool, "boolean"),
        (None, "null"),
        (type(None), "null"),
        (Any, "JsonValue"),
        (object, "JsonValue"),
        (dt.datetime, "string"),
        (dt.date, "string"),
        (dt.time, "string"),
        (dt.timedelta, "string"),
        (uuid.UUID, "string"),
        (decimal.Decimal, "string"),
        (Color, '"red" | "green"'),
        (Mixed, '1 | 0.5 | "name" | null'),
        (Literal["a", 1, -2.5, True, None], '"a" | 1 | -2.5 | true | null'),
        (Literal[Color.GREEN], '"green"'),
        (Literal['say "hi" */'], '"say \\"hi\\" */"'),
        (list[int], "number[]"),
        (list, "JsonValue[]"),
        (list[list[str]], "string[][]"),
        (list[int | None], "(number | null)[]"),
        (tuple[int, ...], "number[]"),
        (tuple[int, str, bool], "[number, string, boolean]"),
        (tuple, "JsonValue[]"),
        (dict[str, int], "{ [key: string]: number }"),
        (dict[Any, list[str]], "{ [key: string]: string[] }"),
        (dict, "{ [key: string]: JsonValue }"),
        (int | None, "number | null"),
        (Optional[str], "string | null"),  # noqa: UP045 (the typing spelling, too)
        (int | float, "number"),
        (Email, "string"),
        (Annotated[int, "a note"], "number"),
        (list[Annotated[Email | None, "x"]], "(string | null)[]"),
    ],
    ids=str,
)
def test_each_type_is_written_as_the_json_the_codec_writes(tp: Any, expected: str) -> None:
    assert ts(tp) == expected
    assert ts(tp, sent=True) == expected  # only classes with defaults differ when sent


@attrs.frozen
class Item:
    sku: str
    quantity: int = 1


@attrs.frozen
class Basket:
    items: list[Item]
    _secret: str
    note: str | None


@dataclasses.dataclass
class Tree:
    name: str
    children: list[Tree]
    size: int = dataclasses.field(init=False, default=0)


@attrs.frozen
class Promise:
    """A class named like a type the module uses."""

    done: bool


def test_a_class_is_an_interface_and_a_second_one_as_sent_when_it_has_defaults() -> None:
    module = _Module()
    types = _Types(module, "job 'x'", "payload")
    assert types.of(Basket, sent=False) == "Basket"
    assert types.of(list[Basket], sent=True) == "BasketInput[]"  # Item has a default
    assert types.of(Tree, sent=True) == "Tree"  # no default: one form
    assert types.of(Promise, sent=False) == "Promise2"
    text = "\n".join(module.interfaces)
    assert "export interface Item {\n  sku: string;\n  quantity: number;\n}" in text
    assert "export interface ItemInput {\n  sku: string;\n  quantity?: number;\n}" in text
    assert "export interface BasketInput {\n  items: ItemInput[];\n  _secret: string;\n" in text
    assert "  note: string | null;\n}" in text  # Optional, no default: must be sent
    assert "export interface Tree {\n  name: string;\n  children: Tree[];\n}" in text
    assert "size" not in text  # init=False: not in the JSON
    assert text.count("export interface Item ") == 1  # written once however often met


def job_with(payload: Any = None, result: Any = Any, *, name: str = "bad") -> Registry:
    registry = Registry()

    async def handler(ctx: JobContext, value: Any) -> Any:
        return value

    handler.__annotations__["return"] = result
    registry.job(name, public=True, payload=payload)(handler)
    return registry


@attrs.frozen
class Box(Generic[T]):
    value: T


class Pairs(enum.Enum):
    ONE = (1, 2)


@attrs.frozen
class Tagged:
    tags: set[str]


@attrs.frozen
class Unresolved:
    later: Missing  # type: ignore[name-defined]  # noqa: F821


@pytest.mark.parametrize(
    ("payload", "shown", "where"),
    [
        (set[int], "set[int]", "at $"),
        (bytes, "bytes", "at $"),
        (Tagged, "set[str]", "at $.tags"),
        (list[frozenset[int]], "frozenset[int]", "at $[*]"),
        (dict[int, str], "dict[int, str]", "keys are not str"),
        (dict[Email, str], "dict[Email, str]", "keys are not str"),  # the codec refuses it
        (Box[int], "Box[int]", "generic class"),
        (Pairs, "Pairs", "(1, 2) is not a JSON scalar"),
        (Unresolved, "Unresolved", "cannot be resolved"),
    ],
    ids=str,
)
def test_a_type_without_a_known_json_form_is_refused_naming_job_and_type(
    payload: Any, shown: str, where: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        typescript(job_with(payload))
    message = str(caught.value)
    assert message.startswith("cannot generate TypeScript for job 'bad': its payload holds ")
    assert shown in message
    assert where in message
    assert "docs/payloads.md" in message


def test_a_result_type_is_checked_too() -> None:
    with pytest.raises(ConfigurationError, match=r"job 'bad': its result holds set\[int\] at \$"):
        typescript(job_with(int, set[int]))


def test_private_jobs_are_left_out_whatever_their_types() -> None:
    registry = Registry()

    @registry.job("hidden")
    async def hidden(ctx: JobContext, tags: set[str]) -> None: ...

    assert "hidden" not in typescript(registry)


class OwnCodec:
    def encode(self, tp: Any, value: Any, what: str) -> str:
        return json.dumps(value)

    def decode(self, tp: Any, text: str, what: str) -> Any:
        return json.loads(text)


def test_a_codec_of_ones_own_is_refused_and_a_converter_is_not() -> None:
    registry = Registry(converter=OwnCodec())

    @registry.job("mine", public=True)
    async def mine(ctx: JobContext, n: int) -> int:
        return n

    with pytest.raises(ConfigurationError, match=r"job 'mine': its registry's codec OwnCodec"):
        typescript(registry)
    converted = Registry(converter=cattrs.Converter())
    converted.job("mine", public=True)(mine.handler)
    assert "export async function mine(" in typescript(converted)


def test_names_become_functions_and_clashes_are_refused() -> None:
    registry = Registry()

    async def handler(ctx: JobContext) -> None: ...

    for name in ("images:resize", "2fa", "import", "send_welcome-email", "track"):
        registry.job(name, public=True)(handler)
    text = typescript(registry)
    for function in ("imagesResize", "_2fa", "import_", "sendWelcomeEmail", "track_"):
        assert f"export async function {function}(\n" in text
    assert "export type ImportResult = null;" in text
    registry.job("images_resize", public=True)(handler)
    with pytest.raises(ConfigurationError, match="'images:resize' and 'images_resize' both give"):
        typescript(registry)
    nameless = Registry()
    nameless.job("::", public=True)(handler)
    with pytest.raises(ConfigurationError, match="no letter or digit"):
        typescript(nameless)


def test_the_module_imports_only_what_it_uses() -> None:
    assert "import { track } from" in typescript(job_with(int, int, name="only"))
    empty = typescript(Registry())
    assert "import { " not in empty
    assert "async function enqueue" not in empty
    assert 'import type { TrackOptions } from "./track.js";' in empty


def test_the_cli_prints_the_module_or_one_error_line() -> None:
    runner = CliRunner()
    command = ["codegen", "typescript", "--registry", "tests.support.codegen_jobs:registry"]
    done = runner.invoke(main, command)
    assert done.exit_code == 0, done.output
    assert done.output == typescript(codegen_jobs.registry)
    moved = runner.invoke(main, [*command, "--track-module", "/track.js"])
    assert 'import { track, trackRun } from "/track.js";' in moved.output
    refused = runner.invoke(main, ["codegen", "typescript", "--registry", f"{__name__}:BAD"])
    assert refused.exit_code == 1
    assert refused.output.startswith("error: cannot generate TypeScript for job 'bad': ")
    none = runner.invoke(main, ["codegen", "typescript", "--registry", f"{__name__}:NONE"])
    assert none.exit_code == 0
    assert "declares no job or workflow public=True" in none.output


BAD = job_with(Tagged)
NONE = Registry()


def sample_json(value: Any, tp: Any) -> str:
    return codegen_jobs.registry.codec.encode(tp, value, "sample")


USE = """\
import { EnqueueError, delete_, echoAny, ordersShip, ping, reportsExport, settings }
  from "./jobs.js";
import type {
  ColumnInput, ReportsExportPayload, ReportsExportResult, OrdersShipPayload, PingResult,
} from "./jobs.js";

/** What the codec wrote for a result: it must fit the result type. */
export const written: ReportsExportResult = %(written)s;
// @ts-expect-error: without one of its fields it is no result (the check above can fail)
export const partial: ReportsExportResult = %(partial)s;
/** A payload sent with its defaults left out. */
export const sent: ReportsExportPayload = { format: "csv", columns: [{ name: "id" }] };
export const column: ColumnInput = { name: "email", width: null };
// @ts-expect-error: no such format
export const wrongFormat: ReportsExportPayload = { format: "pdf", columns: [] };
// @ts-expect-error: a column's name is required
export const noName: ColumnInput = { width: 3 };
// @ts-expect-error: a run's payload is its class, not a string any more (version 2)
export const oldPayload: OrdersShipPayload = "o-1";

export async function use(): Promise<void> {
  settings.baseUrl = "https://jobs.example";
  const job = await reportsExport(sent, { retryDelay: 100 });
  job.subscribe((j) => {
    const rows: number | undefined = j.result?.rows;
    const at: string | undefined = j.result?.at;
    const progress: number | null = j.progress;
    console.log(rows, at, progress, j.status);
  });
  const run = await ordersShip({ order: "o-1" });
  run.subscribe((r) => {
    const first: string | undefined = r.result?.[0];
    console.log(first, r.steps.map((s) => `${s.name} ${s.status}`), r.workflow);
  });
  const pinged: PingResult | null = (await ping()).getSnapshot().result;
  const deleted = (await delete_(3)).getSnapshot().result;
  const echoed = (await echoAny({ any: ["json", 1, null] })).getSnapshot().result;
  // @ts-expect-error: the result is a number
  const wrong: string | null = deleted;
  console.log(pinged, echoed, wrong);
  try {
    await ping({ signal: AbortSignal.timeout(1000) });
  } catch (error) {
    if (error instanceof EnqueueError) console.log(error.status, error.message);
  }
}
"""


def test_the_module_of_every_type_compiles_with_tsc_strict(tmp_path: Path) -> None:
    folder = with_track(tmp_path)
    (folder / "jobs.ts").write_text(typescript(codegen_jobs.registry))
    request = codegen_jobs.ExportRequest(
        codegen_jobs.Format.XLSX,
        [codegen_jobs.Column("id", 4)],
        since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    written = sample_json(codegen_jobs.export_of(request), codegen_jobs.Export)
    partial = {k: v for k, v in json.loads(written).items() if k != "took"}
    (folder / "use.ts").write_text(USE % {"written": written, "partial": json.dumps(partial)})
    compile_ts(folder, "jobs.ts", "use.ts")


def test_the_generated_module_is_the_one_the_docs_show() -> None:
    """docs/web.md quotes the bindings of a job; they are what the generator writes."""
    registry = Registry()

    @registry.job("export-users", public=True)
    async def export_users(ctx: JobContext, request: ExportRequest) -> Export:
        return Export(f"/exports/users.{request.format}", 0)

    text = typescript(registry)
    docs = (Path(__file__).resolve().parent.parent / "docs" / "web.md").read_text()
    start = text.index(f"/** {__name__}.ExportRequest")
    shown = text[start:].replace(f"{__name__}.", "app.jobs.")
    assert shown in docs


@attrs.frozen
class ExportRequest:
    format: Literal["csv", "xlsx"]
    since: dt.datetime | None = None


@attrs.frozen
class Export:
    url: str
    rows: int
