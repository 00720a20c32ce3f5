"""The enqueue pipeline on its own: definitions, payloads and options to the rows an
``Enqueue`` stores, with no storage and no clock."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioforge import (
    InvalidArgumentError,
    JobContext,
    PayloadError,
    Queue,
    RateLimit,
    Registry,
    Retry,
)
from trioforge._core.states import MAX_STORED_INT, Priority, PriorityLike
from trioforge._new_jobs import new_jobs

NOW = 1_700_000_000.0

registry = Registry()


@attrs.frozen
class Order:
    item: str
    qty: int


@registry.job(
    "buy",
    queue="shop",
    priority="high",
    requires=["till", "card"],
    idempotency_key=lambda order: order.item,
    rate_limit=RateLimit("per-item", 5, 1.0, key=lambda order: order.item),
)
async def buy(ctx: JobContext, order: Order) -> None:
    return None


@registry.job("ping")
async def ping(ctx: JobContext) -> None:
    return None


def test_defaults_come_from_the_definition_and_now() -> None:
    [job] = new_jobs(buy, [Order("tea", 2)], now=NOW)
    assert (job.name, job.queue, job.priority, job.run_at) == ("buy", "shop", 20, NOW)
    assert job.requires == ("card", "till")  # sorted, as stored
    assert job.idempotency_key == "tea"  # the job's key function, on the payload
    assert job.rate_key == "per-item:tea"  # the limit's bucket, keyed by the payload
    assert job.concurrency_key is None
    assert job.payload == '{"item":"tea","qty":2}'


def test_options_override_the_definition() -> None:
    jobs = new_jobs(
        buy,
        [Order("tea", 1), Order("tea", 2)],
        now=NOW,
        delay=dt.timedelta(minutes=1),
        priority="low",
        queue="later",
        idempotency_keys=["a", None],
        max_attempts=3,
        timeout=5,
        requires=[],
    )
    assert [j.run_at for j in jobs] == [NOW + 60] * 2
    assert [(j.queue, j.priority, j.max_attempts, j.timeout) for j in jobs] == [
        ("later", 0, 3, 5.0)
    ] * 2
    assert [j.idempotency_key for j in jobs] == ["a", "tea"]
    assert [j.requires for j in jobs] == [()] * 2


def test_the_queue_policy_gives_max_attempts_unless_given() -> None:
    policies = {"shop": Queue(workers=1, retry=Retry(max_attempts=7))}
    [job] = new_jobs(buy, [Order("tea", 1)], now=NOW, policies=policies)
    assert job.max_attempts == 7
    [job] = new_jobs(buy, [Order("tea", 1)], now=NOW, policies=policies, max_attempts=2)
    assert job.max_attempts == 2


def test_bad_options_store_nothing() -> None:
    with pytest.raises(InvalidArgumentError, match="either delay= or run_at="):
        new_jobs(ping, [None], now=NOW, delay=1, run_at=NOW)
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        new_jobs(ping, [None], now=NOW, run_at=dt.datetime(2030, 1, 1))
    with pytest.raises(InvalidArgumentError, match="outside the years 1 to 9999"):
        new_jobs(ping, [None], now=NOW, delay=1e13)
    with pytest.raises(InvalidArgumentError, match="one per payload"):
        new_jobs(ping, [None, None], now=NOW, idempotency_keys=["k"])
    with pytest.raises(InvalidArgumentError, match="max_attempts"):
        new_jobs(ping, [None], now=NOW, max_attempts=0)
    with pytest.raises(InvalidArgumentError, match="unknown priority"):
        new_jobs(ping, [None], now=NOW, priority="urgent")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="over the limit of 4"):
        new_jobs(ping, [None], now=NOW, idempotency_keys=["kkkkk"], max_key_bytes=4)
    with pytest.raises(PayloadError, match="over the limit of 10"):
        new_jobs(buy, [Order("tea" * 9, 1)], now=NOW, max_payload_bytes=10)


priorities = st.one_of(
    st.sampled_from(list(Priority)),
    st.sampled_from(["low", "normal", "high", "critical"]),
    st.integers(-MAX_STORED_INT, MAX_STORED_INT),
)
#: Keys as storable text (no NUL, no lone surrogate), or none.
keys = st.one_of(
    st.none(),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1),
)
delays = st.floats(0, 1e6).map(lambda d: {"delay": d})
run_ats = st.datetimes(
    min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(9000, 1, 1), timezones=st.just(dt.UTC)
).map(lambda d: {"run_at": d})


def _level(priority: PriorityLike | None) -> int:
    if priority is None:
        return int(Priority.HIGH)  # buy's own
    return int(Priority[priority.upper()]) if isinstance(priority, str) else int(priority)


@given(
    now=st.floats(0, 4e9),
    when=st.one_of(st.just({}), delays, run_ats),
    priority=st.one_of(st.none(), priorities),
    given_keys=st.lists(keys, min_size=1, max_size=5),
)
def test_every_job_of_a_call_shares_its_normalised_options(
    now: float,
    when: dict[str, Any],
    priority: PriorityLike | None,
    given_keys: list[str | None],
) -> None:
    orders = [Order(f"item{i}", i) for i in range(len(given_keys))]
    jobs = new_jobs(buy, orders, now=now, priority=priority, idempotency_keys=given_keys, **when)
    if "delay" in when:
        expected_at = now + when["delay"]
    elif "run_at" in when:
        expected_at = when["run_at"].timestamp()
    else:
        expected_at = now
    assert [j.run_at for j in jobs] == [expected_at] * len(orders)
    assert [j.priority for j in jobs] == [_level(priority)] * len(orders)
    # A payload given no key takes the one the job derives from it.
    assert [j.idempotency_key for j in jobs] == [
        key if key is not None else order.item
        for key, order in zip(given_keys, orders, strict=True)
    ]
