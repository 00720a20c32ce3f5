"""Per-job policy: discard_on, per-enqueue max_attempts and timeout, queue defaults."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import attrs
import pytest
import trio

import trioforge
from tests.support.fast import FAST
from trioforge import JobContext, JobState, Queue, RateLimit, Registry, Retry
from trioforge.storage import Backend

FLAKY = Retry(max_attempts=4, base_delay=0, discard_on=(TypeError,))


def make_registry() -> Registry:
    registry = Registry()

    @registry.job("fail", retry=FLAKY)
    async def fail(ctx: JobContext, kind: str) -> None:
        raise TypeError("bad payload") if kind == "type" else ConnectionError("flaky")

    @registry.job("hang", retry=Retry(max_attempts=1), timeout=60.0)
    async def hang(ctx: JobContext) -> None:
        await trio.sleep_forever()

    @registry.job("plain", queue="strict")
    async def plain(ctx: JobContext) -> None:
        raise ConnectionError("down")

    @registry.job("slow", queue="strict")
    async def slow(ctx: JobContext) -> None:
        await trio.sleep_forever()

    @registry.job("own", queue="strict", retry=Retry(max_attempts=3, base_delay=0))
    async def own(ctx: JobContext) -> None:
        raise ConnectionError("down")

    return registry


async def test_discard_on_errors_skip_the_remaining_attempts(database: str | Backend) -> None:
    async with trioforge.open_runtime(make_registry(), database=database, **FAST) as rt:
        fatal = await rt.wait(await rt.enqueue("fail", "type"))
        flaky = await rt.wait(await rt.enqueue("fail", "io"))
    assert (fatal.status, fatal.attempt) == (JobState.DEAD, 1)
    assert "TypeError" in (fatal.error or "")
    assert (flaky.status, flaky.attempt) == (JobState.DEAD, 4)


async def test_per_enqueue_max_attempts_and_timeout_override_the_job(
    database: str | Backend,
) -> None:
    async with trioforge.open_runtime(make_registry(), database=database, **FAST) as rt:
        once = await rt.wait(await rt.enqueue("fail", "io", max_attempts=2))
        with trio.fail_after(30):  # the job's own timeout is 60 s
            timed = await rt.wait(await rt.enqueue("hang", timeout=0.05))
    assert (once.status, once.attempt, once.max_attempts) == (JobState.DEAD, 2, 2)
    assert timed.status is JobState.DEAD
    assert "JobTimeoutError" in (timed.error or "")


async def test_a_queue_policy_gives_defaults_to_jobs_that_set_none(
    database: str | Backend,
) -> None:
    strict = Queue(2, retry=Retry(max_attempts=2, base_delay=0), timeout=0.05)
    async with trioforge.open_runtime(
        make_registry(), database=database, queues={"strict": strict, "default": 1}, **FAST
    ) as rt:
        inherited = await rt.wait(await rt.enqueue("plain"))
        own = await rt.wait(await rt.enqueue("own"))
        with trio.fail_after(30):
            timed = await rt.wait(await rt.enqueue("slow"))
        overridden = await rt.wait(await rt.enqueue("plain", max_attempts=1))
        assert rt.statistics().queues == {"strict": 2, "default": 1}
    assert (inherited.attempt, inherited.max_attempts) == (2, 2)
    assert (own.attempt, own.max_attempts) == (3, 3)  # its own Retry wins
    assert timed.status is JobState.DEAD
    assert "JobTimeoutError" in (timed.error or "")
    assert overridden.attempt == 1


async def test_a_client_with_queue_policies_stores_their_attempts(sqlite_url: str) -> None:
    policies = {"strict": Queue(0, retry=Retry(max_attempts=7))}
    async with trioforge.open_client(sqlite_url, registry=make_registry(), queues=policies) as c:
        assert (await c.get(await c.enqueue("plain"))).max_attempts == 7
        assert (await c.get(await c.enqueue("own"))).max_attempts == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": "5"}, "timeout"),
    ],
)
async def test_bad_overrides_are_refused_and_store_nothing(
    sqlite_url: str, options: dict[str, object], match: str
) -> None:
    async with trioforge.open_client(sqlite_url, registry=make_registry()) as client:
        with pytest.raises(trioforge.InvalidArgumentError, match=match):
            await client.enqueue("plain", **options)  # type: ignore[call-overload]
        assert await client.list() == []


@pytest.mark.parametrize(
    "queues",
    [{"q": -1}, {"q": "8"}, {"": 1}, {"q": True}],
)
def test_bad_queue_settings_are_refused(queues: dict[str, object]) -> None:
    async def main() -> None:
        async with trioforge.open_runtime(
            make_registry(),
            database="memory://",
            queues=queues,  # type: ignore[arg-type]
        ):
            pass

    with pytest.raises(trioforge.ConfigurationError, match="queue"):
        trio.run(main)


def test_a_queue_policy_checks_its_fields() -> None:
    with pytest.raises(trioforge.ConfigurationError, match="workers"):
        Queue(-1)
    with pytest.raises(trioforge.ConfigurationError, match="timeout"):
        Queue(1, timeout=0)
    with pytest.raises(trioforge.ConfigurationError, match="Retry"):
        Queue(1, retry=3)  # type: ignore[arg-type]
    with pytest.raises(trioforge.ConfigurationError, match=r"trioforge\.RateLimit"):
        Queue(1, rate_limit=5)  # type: ignore[arg-type]
    with pytest.raises(trioforge.ConfigurationError, match=r"cannot have a key.*of their own"):
        Queue(1, rate_limit=RateLimit("emails", 5, key=lambda p: p))


def test_a_queue_rate_limit_must_agree_with_limits_of_its_name() -> None:
    registry = Registry()
    registry.job("send", queue="emails", rate_limit=RateLimit("smtp", 10))(slow_handler)
    same = {"emails": Queue(2, rate_limit=RateLimit("smtp", 10))}
    other: dict[str, Queue | int] = {
        "emails": Queue(2, rate_limit=RateLimit("emails", 3)),
        "bulk": 1,
    }

    async def main(queues: Mapping[str, Queue | int]) -> None:
        async with trioforge.open_runtime(registry, database="memory://", queues=queues):
            pass

    trio.run(main, same)  # one bucket, one set of settings
    trio.run(main, other)  # another name: a bucket of its own
    clash = {"emails": Queue(2, rate_limit=RateLimit("smtp", 20))}
    with pytest.raises(trioforge.ConfigurationError, match=r"queue 'emails'.*same settings"):
        trio.run(main, clash)
    queues = {
        "a": Queue(1, rate_limit=RateLimit("x", 1)),
        "b": Queue(1, rate_limit=RateLimit("x", 2)),
    }
    with pytest.raises(trioforge.ConfigurationError, match=r"queue 'b': rate limit 'x'"):
        trio.run(main, queues)


async def slow_handler(ctx: JobContext) -> None:
    await trio.sleep_forever()


@attrs.frozen
class Order:
    order_id: str
    amount: int


def keyed_registry() -> Registry:
    registry = Registry()

    @registry.job("charge", idempotency_key=lambda order: f"charge:{order.order_id}",
                  unique_for=dt.timedelta(hours=1))  # fmt: skip
    async def charge(ctx: JobContext, order: Order) -> int:
        return order.amount

    @registry.job("bad-key", idempotency_key=lambda order: order["missing"])
    async def bad_key(ctx: JobContext, order: dict[str, int]) -> None:
        pass

    return registry


async def test_keys_derived_from_the_payload_block_even_after_the_job_finished(
    database: str | Backend,
) -> None:
    async with trioforge.open_runtime(keyed_registry(), database=database, **FAST) as rt:
        first = await rt.enqueue(
            "charge", {"order_id": "o1", "amount": 5}
        )  # as the handler sees it
        assert (await rt.wait(first)).result == 5
        assert await rt.enqueue("charge", Order("o1", 7)) == first  # finished, still blocking
        other = await rt.enqueue("charge", Order("o1", 7), idempotency_key="manual")
        assert other != first
        assert (await rt.get(first)).idempotency_key == "charge:o1"
        ids = await rt.enqueue_many(
            "charge",
            [Order("o2", 1), Order("o2", 2), Order("o3", 3), Order("o1", 4)],
        )
        assert ids[0] == ids[1] != ids[2]
        assert ids[3] == first
        explicit = await rt.enqueue_many(
            "charge", [Order("o9", 1), Order("o9", 1)], idempotency_keys=["x", None],
            unique_for=0,
        )  # fmt: skip
        assert explicit[0] != explicit[1]
        with pytest.raises(trioforge.InvalidArgumentError, match="one per payload"):
            await rt.enqueue_many("charge", [Order("z", 1)], idempotency_keys=[])
        with pytest.raises(trioforge.PayloadError, match="idempotency_key function"):
            await rt.enqueue("bad-key", {"x": 1})
