"""Wake-ups addressed to one process (PostgreSQL): an enqueue tells one process that
serves the queue of its due jobs, not every process (each of which would claim, all but
one for nothing); that process takes them or passes the wake-up on to all of them.

The runtimes here poll every 30 s, so a job that starts within seconds was started by a
notice; some listen through :class:`Unaddressable`, whose listener has no address (as a
deaf one would not), so the wake-ups go where the test says.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import trioforge
from tests.support.addressing import SLOW_POLL, Pool, advertised, claims_for_a_trickle
from tests.support.postgres import schema_url, temporary_schema
from trioforge import Registry
from trioforge.actors.relay import Relay
from trioforge.actors.storage_actor import open_storage_channel, storage_actor
from trioforge.storage import (
    ClaimResult,
    Listening,
    NewJob,
    Notice,
    ProcessDetails,
    WakeNotice,
    opened,
    ops,
)
from trioforge.storage import _pg_listen as pg_listen
from trioforge.storage.postgres import PostgresBackend

NOW = 10.0
SLOW: dict[str, Any] = {
    "heartbeat_interval": 0.1, "lease_seconds": 5.0, "poll_interval": SLOW_POLL,
}  # fmt: skip


class Unaddressable(PostgresBackend):
    """A PostgreSQL backend whose listener hears everything sent to all processes but
    offers no address: no enqueue tells its process alone."""

    @asynccontextmanager
    async def listen(self, on_notice: Callable[[Notice], None]) -> AsyncIterator[Listening]:
        async with super().listen(on_notice) as listening:
            yield attrs.evolve(listening, address=None)


def details(address: str | None = None, until: float = NOW + 100) -> ProcessDetails:
    return ProcessDetails(
        "h", 1, (("q", 4),), (), 0, wake_channel=address,
        wake_until=None if address is None else until,
    )  # fmt: skip


class Heard:
    """The wake-ups one listener hears for the given queues, in order."""

    def __init__(self, *queues: str) -> None:
        self.queues = queues
        self._send, self._receive = trio.open_memory_channel[WakeNotice](math.inf)

    def __call__(self, notice: Notice) -> None:
        if isinstance(notice, WakeNotice) and notice.queue in self.queues:
            self._send.send_nowait(notice)

    async def next(self) -> WakeNotice:
        with trio.fail_after(10):
            return await self._receive.receive()


async def one(backend: PostgresBackend, op: ops.Op, now: float = NOW) -> Any:
    [result] = await backend.execute([op], now)
    if isinstance(result, Exception):
        raise result
    return result


@asynccontextmanager
async def two_listeners(
    queue: str, marker: str, *, a_until: float = NOW + 100, names: Sequence[str] = ("x",)
) -> AsyncIterator[tuple[PostgresBackend, Heard, Heard]]:
    """Processes "a" (addressable until ``a_until``) and "b" (not addressable), both
    serving ``queue`` and running ``names``, each with its listener."""
    a_heard, b_heard = Heard(queue, marker), Heard(queue, marker)
    async with temporary_schema() as backend:
        other = PostgresBackend(backend.url, schema=backend.schema)  # b's: an address of its own
        async with (
            opened(backend),
            opened(other),
            backend.listen(a_heard) as a,
            other.listen(b_heard) as b,
        ):
            assert a.address is not None
            assert b.address not in (None, a.address)
            await one(backend, ops.Beat("a", (queue,), details(a.address, a_until), tuple(names)))
            await one(backend, ops.Beat("b", (queue,), details(), tuple(names)))
            yield backend, a_heard, b_heard


def new_job(queue: str, **fields: Any) -> NewJob:
    return attrs.evolve(NewJob("x", queue, "{}", 10, 5.0, 3), **fields)


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
async def test_due_jobs_are_announced_to_one_addressable_process_alone(keyed: bool) -> None:
    queue, marker = f"q{uuid.uuid4().hex}", f"m{uuid.uuid4().hex}"
    async with two_listeners(queue, marker) as (backend, a, b):
        jobs = [
            new_job(queue, idempotency_key=f"k{n}" if keyed else None, run_at=5.0 - n)
            for n in range(3)
        ]
        await one(backend, ops.Enqueue(tuple(jobs)))
        await one(backend, ops.Enqueue((new_job(marker),)))  # nobody serves it: all hear
        assert await a.next() == WakeNotice(queue, 3.0, owed=3)
        assert await a.next() == WakeNotice(marker, 5.0)
        # Notices arrive in commit order: b heard nothing of the first enqueue.
        assert await b.next() == WakeNotice(marker, 5.0)


@pytest.mark.parametrize(
    "case", ["due later", "requires a capability", "address expired", "name not run there"]
)
async def test_jobs_no_one_process_can_be_told_of_wake_every_process(case: str) -> None:
    queue, marker = f"q{uuid.uuid4().hex}", f"m{uuid.uuid4().hex}"
    job = {
        "due later": new_job(queue, run_at=NOW + 60),
        "requires a capability": new_job(queue, requires=("gpu",)),
        "address expired": new_job(queue),
        "name not run there": new_job(queue, name="y"),
    }[case]
    a_until = NOW - 0.5 if case == "address expired" else NOW + 100
    async with two_listeners(queue, marker, a_until=a_until) as (backend, a, b):
        await one(backend, ops.Enqueue((job,)))
        assert await a.next() == WakeNotice(queue, job.run_at)
        assert await b.next() == WakeNotice(queue, job.run_at)


async def test_a_batch_of_names_goes_to_a_process_that_runs_them_all_or_to_every_process() -> None:
    queue, marker = f"q{uuid.uuid4().hex}", f"m{uuid.uuid4().hex}"
    async with two_listeners(queue, marker, names=("x", "z")) as (backend, a, b):
        await one(backend, ops.Enqueue((new_job(queue), new_job(queue, name="y"))))
        assert await a.next() == WakeNotice(queue, 5.0)  # a runs "x", not "y": all hear
        assert await b.next() == WakeNotice(queue, 5.0)
        await one(backend, ops.Enqueue((new_job(queue), new_job(queue, name="z"))))
        assert await a.next() == WakeNotice(queue, 5.0, owed=2)
        await one(backend, ops.Enqueue((new_job(marker),)))
        assert await b.next() == WakeNotice(marker, 5.0)  # b heard nothing of the second


async def test_a_queues_due_jobs_are_addressed_and_its_later_ones_wake_every_process() -> None:
    queue, marker = f"q{uuid.uuid4().hex}", f"m{uuid.uuid4().hex}"
    async with two_listeners(queue, marker) as (backend, a, b):
        later = [new_job(queue, run_at=NOW + 30), new_job(queue, run_at=NOW + 20)]
        await one(backend, ops.Enqueue((new_job(queue), *later, new_job(queue, run_at=1.0))))
        await one(backend, ops.Enqueue((new_job(marker),)))
        assert {await a.next(), await a.next()} == {
            WakeNotice(queue, 1.0, owed=2), WakeNotice(queue, NOW + 20),
        }  # fmt: skip
        assert await b.next() == WakeNotice(queue, NOW + 20)
        assert await b.next() == WakeNotice(marker, 5.0)


async def test_waking_every_process_reaches_every_listener() -> None:
    queue, marker = f"q{uuid.uuid4().hex}", f"m{uuid.uuid4().hex}"
    async with two_listeners(queue, marker) as (backend, a, b):
        await one(backend, ops.WakeAll(((queue, 3.5), (marker, 4.0))))
        for heard in (a, b):
            assert {await heard.next(), await heard.next()} == {
                WakeNotice(queue, 3.5), WakeNotice(marker, 4.0),
            }  # fmt: skip


async def test_a_finishing_relay_sends_what_it_was_handed_and_knows_its_echo() -> None:
    """A stopping runtime's last pass-ons go out before its services are cancelled; the
    wake-up comes back to the sender too, which ignores it (its fetcher just claimed)."""
    queue, marker = f"q{uuid.uuid4().hex}", f"m{uuid.uuid4().hex}"
    async with two_listeners(queue, marker) as (backend, _, b):
        handle, inbox = open_storage_channel()
        async with trio.open_nursery() as nursery:
            await nursery.start(storage_actor, backend, lambda: NOW, inbox)
            relay = Relay(handle)
            await nursery.start(relay.run)
            relay.pass_on(queue, 3.5)
            await relay.finish(10)
            relay.pass_on(queue, 4.5)  # finished: dropped, never sent
            handle.close()  # the storage actor ends once it has answered everything
        await one(backend, ops.WakeAll(((marker, 5.0),)))
        assert [await b.next(), await b.next()] == [WakeNotice(queue, 3.5), WakeNotice(marker, 5.0)]
        assert relay.echo(queue, 3.5)
        assert not relay.echo(queue, 3.5)  # once
        assert not relay.echo(marker, 5.0)  # not its own


# --- runtimes -------------------------------------------------------------------------


@asynccontextmanager
async def a_and_b(
    pool: Pool, size: int = 1, a_names: Sequence[str] = ("hold", "work"), **b: Any
) -> AsyncIterator[trioforge.Client]:
    """Processes "a" (addressable) and "b" (not: ``b`` its other settings), each with
    ``size`` slots, and a client; once "a" is addressable."""
    queues = {"default": size}
    async with (
        schema_url() as url,
        trioforge.open_runtime(pool.registry("a", a_names), database=url, queues=queues, **SLOW),
        trioforge.open_runtime(
            pool.registry("b"), database=Unaddressable(url), queues=queues, **SLOW, **b
        ),
        trioforge.open_client(url, registry=pool.registry("client")) as client,
    ):
        await advertised(url, 1)
        yield client


async def test_a_process_with_no_free_slot_passes_its_wake_up_on() -> None:
    pool = Pool()
    async with a_and_b(pool) as client:
        await client.enqueue("hold")  # to a, the one process addressable
        assert await pool.until(1) == [("hold", "a")]
        await client.enqueue("work")  # to a, busy: it passes the wake-up on to b
        assert await pool.until(2) == [("hold", "a"), ("work", "b")]
        pool.release.set()


async def test_a_claim_that_comes_back_full_passes_the_rest_on() -> None:
    pool = Pool()
    async with a_and_b(pool, size=2) as client:
        await client.enqueue_many("hold", [None] * 4)  # all four announced to a
        assert await pool.until(4) == [("hold", "a")] * 2 + [("hold", "b")] * 2
        pool.release.set()


@pytest.mark.parametrize("case", ["requires a capability", "name not run there"])
async def test_jobs_the_addressable_process_cannot_run_reach_one_that_can(case: str) -> None:
    pool = Pool()
    a_names = ("hold", "work") if case == "requires a capability" else ("hold",)
    async with a_and_b(pool, a_names=a_names, capabilities={"gpu"}) as client:
        requires = {"gpu"} if case == "requires a capability" else None
        await client.enqueue("work", requires=requires)
        assert await pool.until(1) == [("work", "b")]


class SeesHeldClaims(PostgresBackend):
    """A PostgreSQL backend that counts its claims that a concurrency limit held back."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.held = 0
        self.changed = trio.Event()

    async def execute_asyncio(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        results = await super().execute_asyncio(batch, now)
        if any(isinstance(r, ClaimResult) and r.held for r in results):
            self.held += 1
            self.changed.set()
            self.changed = trio.Event()
        return results

    async def until_held(self) -> None:
        with trio.fail_after(10):
            while not self.held:
                await self.changed.wait()


class UnaddressableSeesHeldClaims(SeesHeldClaims, Unaddressable):
    pass


async def test_a_claim_held_by_a_concurrency_limit_passes_the_wake_up_on() -> None:
    """A process re-claims when a running job frees a concurrency slot only for a queue its
    own last claim found held: told alone of a held job, "a" must have "b" try too, or the
    job waits for a poll once "a" is busy and "b" frees the slot."""
    limit, pool = trioforge.ConcurrencyLimit("one", 1), Pool()
    free_first = trio.Event()

    def registry(who: str, names: Sequence[str]) -> Registry:
        registry = Registry()
        for name in names:
            limited = name in ("first", "second")
            handler = pool.handler(who, name, free_first if name == "first" else pool.release)
            registry.job(name, concurrency=limit if limited else None)(handler)
        return registry

    every = ("hold", "first", "second")
    async with schema_url() as url:
        a, b = SeesHeldClaims(url), UnaddressableSeesHeldClaims(url)
        async with (
            trioforge.open_runtime(
                registry("a", ("hold", "second")), database=a, queues={"default": 2}, **SLOW
            ),
            trioforge.open_runtime(registry("b", every), database=b, queues={"default": 2}, **SLOW),
            trioforge.open_client(url, registry=registry("client", every)) as client,
        ):
            await advertised(url, 1)
            await client.enqueue("first")  # "a" does not run it: every process hears
            assert await pool.until(1) == [("first", "b")]
            await client.enqueue("second")  # to "a" alone; the limit holds it back
            await a.until_held()
            await b.until_held()  # told by "a"
            await client.enqueue_many("hold", [None, None])  # to "a": no free slot left
            assert await pool.until(3) == [("first", "b"), ("hold", "a"), ("hold", "a")]
            free_first.set()  # "b" frees the slot and takes the held job itself
            assert await pool.until(4) == [
                ("first", "b"), ("hold", "a"), ("hold", "a"), ("second", "b"),
            ]  # fmt: skip
            pool.release.set()


async def test_a_trickle_of_jobs_costs_one_claim_each_however_many_processes_listen() -> None:
    """Three idle processes, one job at a time: one claim per job in all (every process
    hearing every enqueue made three, two of them for nothing)."""
    pool, jobs = Pool(), 10
    async with schema_url() as url:
        backends = [PostgresBackend(url) for _ in range(3)]
        claims = await claims_for_a_trickle(url, backends, pool, jobs, SLOW)
    assert len(pool.started) == jobs
    assert jobs <= claims <= jobs + 2, claims


class KeptListener(PostgresBackend):
    """A PostgreSQL backend that keeps its listening connection where a test can reach it."""

    kept: Any = None

    async def _listening(self, *args: Any) -> Any:
        self.kept = await super()._listening(*args)
        return self.kept


async def test_a_listener_that_stops_hearing_its_own_notices_reconnects(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection can stay up and hear nothing (half-open after a network fault): with
    an address, its process would keep being sent wake-ups that it never gets."""
    monkeypatch.setattr(pg_listen, "REPROBE_EVERY", 0.05)
    monkeypatch.setattr(pg_listen, "REPROBE_TIMEOUT", 2.0)
    async with temporary_schema() as fresh:
        backend = KeptListener(fresh.url, schema=fresh.schema)
        async with opened(backend), backend.listen(lambda notice: None) as listening:
            assert listening.address is not None
            with trio.move_on_after(0.5):  # ten probes or so, each heard
                await listening.lost.wait()
            assert not listening.lost.is_set()
            await backend._aio(backend.kept.execute, "UNLISTEN *")  # up, and deaf
            with trio.fail_after(10):
                await listening.lost.wait()
    assert "heard none of its own notices" in caplog.text


async def test_workers_list_says_which_processes_an_enqueue_can_wake_alone() -> None:
    pool = Pool()
    async with (
        schema_url() as url,
        trioforge.open_runtime(pool.registry("a"), database=url, owner="a", **SLOW),
        trioforge.open_runtime(pool.registry("b"), database=Unaddressable(url), owner="b", **SLOW),
    ):
        await advertised(url, 1)
        command = [sys.executable, "-m", "trioforge", "workers", "list", "--database", url]
        listed = await trio.run_process([*command, "--json"], capture_stdout=True)
        text = await trio.run_process(command, capture_stdout=True)
    rows = {row["owner"]: row["addressed"] for row in map(json.loads, listed.stdout.splitlines())}
    assert rows == {"a": True, "b": False}
    lines = {line.split()[0]: line for line in text.stdout.decode().splitlines()}
    assert "  addressed yes  " in lines["a"]
    assert "  addressed -  " in lines["b"]
