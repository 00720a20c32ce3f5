"""The strict codec on every path: payloads are checked, never converted (the client, the
asyncio client and ``POST /api/jobs/{name}`` refuse the same values with the same path);
results that cannot be encoded, and stored payloads that no longer decode, go dead at once;
``Registry(converter=...)`` brings types of your own."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import attrs
import cattrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import trioforge
import trioforge.aio
import trioforge.testing
import trioforge.web
from tests.support.fast import FAST
from tests.support.strategies import Everything
from tests.test_web_api import served
from trioforge import JobContext, JobState, Registry
from trioforge.storage import Backend


@attrs.frozen
class P:
    format: str
    n: int


@attrs.frozen
class Welcome:
    user: str


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: dt.datetime


#: The issue's table: each payload, and the refusal it now gets (``format: str``, ``n: int``).
TABLE: list[tuple[Any, str]] = [
    ({"format": 1, "n": 2}, "$.format: expected str, got int 1"),
    ({"format": None, "n": 2}, "$.format: expected str, got None"),
    ({"format": "x", "n": "7"}, "$.n: expected int, got str '7'"),
    ({"format": "x", "n": 2.9}, "$.n: expected int, got float 2.9"),
    ({"format": "x", "n": 2.0}, "$.n: expected int, got float 2.0"),
    ({"format": "x", "n": True}, "$.n: expected int, got bool True"),
    ({"format": "x", "n": 2, "size": 3}, "$: unknown key(s) 'size' for P"),
    (P(format=5, n="x"), "$.format: expected str, got int 5"),  # type: ignore[arg-type]
    (Welcome("x"), "$: expected P or a dict of its fields, got Welcome Welcome(user='x')"),
    ("nonsense", "$: expected P or a dict of its fields, got str 'nonsense'"),
]
#: The rows a JSON body can carry (no instances over HTTP).
JSON_ROWS = [(payload, error) for payload, error in TABLE if isinstance(payload, dict | str)]


def make_registry(calls: list[str] | None = None) -> Registry:
    registry = Registry()
    calls = [] if calls is None else calls

    @registry.job("convert", public=True)
    async def convert(ctx: JobContext, payload: P) -> str:
        return payload.format * payload.n

    @registry.job("order")
    async def order(ctx: JobContext, payload: Order) -> Order:
        return payload

    @registry.job("stamp")
    async def stamp(ctx: JobContext):  # type: ignore[no-untyped-def]  # no annotation: by value
        calls.append("stamp")
        return dt.datetime.now(dt.UTC)

    @registry.job("count")
    async def count(ctx: JobContext) -> int:
        calls.append("count")
        return "three"  # type: ignore[return-value]

    return registry


@pytest.mark.parametrize(("payload", "error"), TABLE)
async def test_the_client_refuses_each_row_and_stores_nothing(
    database: str | Backend, payload: Any, error: str
) -> None:
    async with trioforge.open_runtime(make_registry(), database=database, queues={}) as rt:
        with pytest.raises(trioforge.PayloadError) as caught:
            await rt.enqueue("convert", payload)
        assert str(caught.value).startswith(f"payload of job 'convert' does not fit P: {error}")
        with pytest.raises(trioforge.PayloadError, match="does not fit P"):
            await rt.enqueue_many("convert", [P("ok", 1), payload])
        assert await rt.list() == []


def test_the_asyncio_client_refuses_each_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def main() -> None:
        async with trioforge.aio.open_client(url, registry=make_registry()) as client:
            for payload, error in TABLE:
                with pytest.raises(trioforge.PayloadError) as caught:
                    await client.enqueue("convert", payload)
                assert f"does not fit P: {error}" in str(caught.value)
            assert await client.list() == []

    asyncio.run(main())


async def test_post_api_jobs_refuses_each_row(sqlite_url: str) -> None:
    async with (
        trioforge.open_client(sqlite_url, registry=make_registry()) as client,
        served(trioforge.web.app(client=client, registry=client._registry)) as http,
    ):
        for payload, error in JSON_ROWS:
            response = await http.post(
                "/api/jobs/convert",
                content=json.dumps(payload),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 422
            assert response.json()["error"] == f"payload of job 'convert' does not fit P: {error}"
        assert await client.list() == []
        accepted = await http.post("/api/jobs/convert", json={"format": "x", "n": 2})
        assert accepted.status_code == 201


async def test_dataclasses_uuids_and_aware_datetimes_round_trip(
    database: str | Backend,
) -> None:
    order = Order(uuid.uuid4(), dt.datetime(2026, 1, 2, 3, 4, 5, 6, dt.UTC))
    async with trioforge.open_runtime(make_registry(), database=database, **FAST) as rt:
        as_dict = await rt.enqueue(
            "order", {"id": str(order.id), "placed": "2026-01-02T03:04:05.000006Z"}
        )
        instance = await rt.enqueue("order", order)
        for job_id in (as_dict, instance):
            info = await rt.wait(job_id)
            assert info.status is JobState.COMPLETED
            assert info.payload == {
                "id": str(order.id),
                "placed": "2026-01-02T03:04:05.000006+00:00",
            }
            assert rt._registry is not None
            back = rt._registry.codec.decode(Order, json.dumps(info.result), "result")
            assert back == order
        with pytest.raises(trioforge.PayloadError, match=r"\$\.placed: expected an aware datetime"):
            await rt.enqueue("order", Order(order.id, dt.datetime(2026, 1, 1)))


async def test_a_result_that_cannot_be_encoded_goes_dead_after_one_run(
    database: str | Backend, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    async with trioforge.open_runtime(make_registry(calls), database=database, **FAST) as rt:
        stamp = await rt.wait(await rt.enqueue("stamp"))
        count = await rt.wait(await rt.enqueue("count"))
    assert calls == ["stamp", "count"]  # each ran once: no retries of their side effects
    assert (stamp.status, stamp.attempt) == (JobState.DEAD, 1)
    assert "PayloadError: return value of job 'stamp' does not fit Any" in (stamp.error or "")
    assert "got datetime" in (stamp.error or "")
    assert (count.status, count.attempt) == (JobState.DEAD, 1)
    assert "return value of job 'count' does not fit int: $: expected int, got str 'three'" in (
        count.error or ""
    )
    # One record per job, which says the job went dead with attempts left.
    ended = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(ended) == 2
    assert all(message.endswith("; dead, not retried") for message in ended)


@attrs.frozen
class OldShape:
    format: str


@attrs.frozen
class NewShape:
    format: int


async def test_a_stored_payload_that_no_longer_decodes_goes_dead_at_once(
    database: str | Backend, caplog: pytest.LogCaptureFixture
) -> None:
    before, after = Registry(), Registry()
    ran: list[NewShape] = []

    @before.job("render")
    async def render_v1(ctx: JobContext, payload: OldShape) -> None:
        pass

    @after.job("render")
    async def render_v2(ctx: JobContext, payload: NewShape) -> None:
        ran.append(payload)

    async with trioforge.open_runtime(before, database=database, queues={}) as rt:
        job_id = await rt.enqueue("render", OldShape("pdf"))
    caplog.set_level(logging.ERROR)
    async with trioforge.open_runtime(after, database=database, **FAST) as rt:
        info = await rt.wait(job_id)
    assert ran == []
    assert (info.status, info.attempt) == (JobState.DEAD, 1)
    assert "$.format: expected int, got str 'pdf'" in (info.error or "")
    assert "was the payload class changed incompatibly?" in (info.error or "")
    # One error record, the attempt's, which says why and that it is not retried.
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage().startswith(f"job {job_id} default:render attempt 1/3 failed")
    assert "was the payload class changed incompatibly?" in record.getMessage()
    assert record.getMessage().endswith("; dead, not retried")


async def test_perform_checks_the_result_as_a_worker_does() -> None:
    registry = make_registry()
    with pytest.raises(trioforge.PayloadError, match="return value of job 'count'"):
        await trioforge.testing.perform(registry.get("count"))
    with pytest.raises(trioforge.PayloadError, match=r"\$\.n: expected int, got str '7'"):
        await trioforge.testing.perform(registry.get("convert"), {"format": "x", "n": "7"})


class Money:
    """A type of the application's own, not attrs: it needs hooks."""

    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (
            other.cents,
            other.currency,
        )

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))


@attrs.frozen
class Invoice:
    total: Money
    due: dt.date


def money_converter() -> cattrs.Converter:
    converter = cattrs.Converter()

    def structure(value: Any, _: type) -> Money:
        if isinstance(value, Money):  # at enqueue: the object itself
            return value
        cents, currency = value.split(" ")  # from JSON: "1250 EUR"
        return Money(int(cents), currency)

    converter.register_structure_hook(Money, structure)
    converter.register_unstructure_hook(Money, lambda m: f"{m.cents} {m.currency}")
    return converter


async def test_a_registry_converter_brings_hooks_for_the_applications_types(
    database: str | Backend,
) -> None:
    registry = Registry(converter=money_converter())
    seen: list[Invoice] = []

    @registry.job("bill")
    async def bill(ctx: JobContext, invoice: Invoice) -> Money:
        seen.append(invoice)
        return invoice.total

    invoice = Invoice(Money(1250, "EUR"), dt.date(2026, 2, 1))
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:
        info = await rt.wait(await rt.enqueue(bill, invoice))
        assert info.payload == {"total": "1250 EUR", "due": "2026-02-01"}
        assert info.result == "1250 EUR"
        # The strict hooks still apply to the built-in types around it.
        with pytest.raises(trioforge.PayloadError, match=r"\$\.due: expected date"):
            await rt.enqueue(bill, {"total": "1 EUR", "due": 20260201})  # type: ignore[misc]
        with pytest.raises(trioforge.PayloadError, match=r"\$\.total: ValueError"):
            await rt.enqueue(bill, {"total": "nonsense", "due": "2026-02-01"})  # type: ignore[misc]
    assert seen == [invoice]


class UpperCodec:
    """A codec of the application's own: it stores str payloads upper-cased."""

    def encode(self, tp: Any, value: Any, what: str) -> str:
        if not isinstance(value, str):
            raise trioforge.PayloadError(f"{what}: only str here")
        return json.dumps(value.upper())

    def decode(self, tp: Any, text: str, what: str) -> Any:
        return json.loads(text)


async def test_a_registry_takes_a_codec_of_its_own() -> None:
    registry = Registry(converter=UpperCodec())

    @registry.job("shout")
    async def shout(ctx: JobContext, word: str) -> str:
        return word + "!"

    assert registry.get("shout").codec is registry.codec
    async with trioforge.open_runtime(
        registry, database=trioforge.storage.MemoryBackend(), **FAST
    ) as rt:
        info = await rt.wait(await rt.enqueue(shout, "hey"))
    assert (info.payload, info.result) == ("HEY", "HEY!")
    with pytest.raises(
        trioforge.ConfigurationError, match=r"cattrs\.Converter or a trioforge\.Codec"
    ):
        Registry(converter="json")  # type: ignore[arg-type]


def test_encoded_text_is_ascii_and_none_is_only_for_optional() -> None:
    codec = trioforge.StrictCodec()
    text = codec.encode(P, P("café\x00", 1), "payload")
    assert text.isascii()
    assert codec.decode(P, text, "payload") == P("café\x00", 1)
    assert codec.decode(int | None, "null", "x") is None
    with pytest.raises(trioforge.PayloadError, match=r"\$: expected int, got None"):
        codec.decode(int, "null", "x")


async def test_signals_and_workflow_results_go_through_the_codec(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = Registry()
    tries: list[int] = []

    @registry.workflow("waits")
    async def waits(ctx: trioforge.WorkflowContext) -> None:
        await ctx.wait_for_signal("go")

    @registry.workflow("stamps")
    async def stamps(ctx: trioforge.WorkflowContext):  # type: ignore[no-untyped-def]
        tries.append(ctx.attempt)
        return dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # no annotation: a JSON value needed

    async with trioforge.testing.open_test_runtime(registry) as rt:
        run = await rt.enqueue(waits)
        with pytest.raises(trioforge.PayloadError, match=r"\$: expected a JSON value"):
            await rt.signal(run, "go", dt.date(2026, 1, 1))
        with pytest.raises(trioforge.PayloadError, match=r"\$\.format: expected str, got int 5"):
            await rt.signal(run, "go", P(format=5, n=1))  # type: ignore[arg-type]
        info = await rt.wait(await rt.enqueue(stamps))
    assert (info.status, tries) == (JobState.DEAD, [1])  # never retried
    assert "return value of job 'stamps@v1' does not fit Any" in (info.error or "")


@settings(max_examples=30)
@given(st.data())
def test_the_testing_payloads_strategy_gives_payloads_the_codec_accepts(
    data: st.DataObject,
) -> None:
    registry = Registry()

    @registry.job("everything")
    async def everything(ctx: JobContext, payload: Everything) -> None:
        pass

    @registry.job("orders")
    async def orders(ctx: JobContext, payload: list[Order] | None) -> None:
        pass

    for job in (everything, orders):
        value = data.draw(trioforge.testing.payloads(job))
        registry.codec.encode(job.payload_type, value, "payload")
