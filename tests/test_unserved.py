"""Jobs nobody runs are visible: through the client, ``trioforge queues list`` and
``/metrics`` on every backend, and in a warning as a worker starts."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import trioforge
import trioforge.web
from tests.support.fast import FAST
from tests.test_web_api import served
from trioforge import JobContext, Registry
from trioforge._unserved import STALE_AFTER, not_registered, unserved
from trioforge.metrics import Metrics
from trioforge.storage import Backend, ProcessInfo


def worker_registry() -> Registry:
    registry = Registry()

    @registry.job("send", queue="emails")
    async def send(ctx: JobContext) -> None:
        pass

    return registry


def enqueuer_registry() -> Registry:
    """What an app enqueues: one job the worker runs, one it does not have (an old name),
    one in a queue no worker serves."""
    registry = worker_registry()
    for name, queue in (("ghost", "emails"), ("lost", "nowhere")):

        async def handler(ctx: JobContext) -> None:
            raise AssertionError("never runs")

        registry.job(name, queue=queue)(handler)
    return registry


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def warnings() -> Iterator[list[logging.LogRecord]]:
    handler = Kept()
    logger = logging.getLogger("trioforge.runtime")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


async def enqueue_all(database: str | Backend) -> None:
    async with trioforge.open_client(database, registry=enqueuer_registry()) as client:
        for name in ("send", "ghost", "ghost", "lost"):
            await client.enqueue(name)


async def test_unserved_names_through_the_client_and_metrics(
    database: str | Backend, warnings: list[logging.LogRecord]
) -> None:
    await enqueue_all(database)
    with trio.fail_after(30):
        async with trioforge.open_runtime(
            worker_registry(), database=database, queues={"emails": 1}, **FAST
        ) as rt:
            assert await rt.unserved() == {"emails": ("ghost",), "nowhere": ("lost",)}
            queues = {q.name: q.unserved for q in await rt.queues()}
            assert queues == {"emails": ("ghost",), "nowhere": ("lost",)}
            metrics = Metrics()
            await metrics.refresh(rt)
            exposed = {
                tuple(sorted(s.labels.items())): s.value
                for family in text_string_to_metric_families(metrics.exposition().decode())
                for s in family.samples
                if s.name == "trioforge_unserved_jobs"
            }
            assert exposed == {
                (("job", "ghost"), ("queue", "emails")): 1.0,
                (("job", "lost"), ("queue", "nowhere")): 1.0,
            }
            async with served(trioforge.web.app(client=rt)) as http:
                page = (await http.get("/")).text
            assert "Jobs nobody runs" in page
            assert '<li class="unserved">emails: ghost</li>' in page
            assert '<li class="unserved">nowhere: lost</li>' in page
    # The start warning: once per name waiting in its own queues that it does not run.
    said = [r for r in warnings if "does not run" in r.getMessage()]
    assert len(said) == 1
    assert said[0].getMessage().startswith("queue emails has jobs named 'ghost' waiting")
    assert (said[0].queue, said[0].job_name) == ("emails", "ghost")  # type: ignore[attr-defined]


async def test_a_name_is_served_once_a_worker_of_its_queue_registers_it(
    database: str | Backend,
) -> None:
    await enqueue_all(database)
    everything = enqueuer_registry()
    with trio.fail_after(30):
        async with (
            trioforge.open_runtime(
                worker_registry(), database=database, queues={"emails": 0}, **FAST
            ) as rt,
            trioforge.open_runtime(everything, database=database, queues={"nowhere": 0}, **FAST),
        ):
            # "ghost" is registered only by a process that does not serve "emails".
            assert await rt.unserved() == {"emails": ("ghost",)}


async def test_trioforge_queues_list_shows_unserved_names(shared_url: str) -> None:
    await enqueue_all(shared_url)
    with trio.fail_after(30):
        async with trioforge.open_runtime(
            worker_registry(), database=shared_url, queues={"emails": 0}, **FAST
        ):
            listed = await trio.run_process(
                [sys.executable, "-m", "trioforge", "queues", "list", "--database", shared_url],
                capture_stdout=True, stderr=subprocess.STDOUT,
            )  # fmt: skip
    header, *rows = listed.stdout.decode().splitlines()
    assert header.split()[-1] == "UNSERVED"
    by_queue = {row.split()[0]: row.split()[-1] for row in rows}
    assert by_queue == {"emails": "ghost", "nowhere": "lost"}


def process(
    owner: str, queues: tuple[str, ...], names: tuple[str, ...] | None, beat: float
) -> ProcessInfo:
    return ProcessInfo(owner, queues, 0.0, beat, None, names)


def test_unserved_counts_live_processes_of_the_queue_only() -> None:
    waiting = {"q": frozenset({"a", "b", "c"}), "r": frozenset({"a"})}
    now = 1000.0
    live = process("p1", ("q",), ("a",), now - 1)
    silent = process("p2", ("q", "r"), ("a", "b"), now - STALE_AFTER - 1)
    assert unserved(waiting, [live, silent], now) == {"q": ("b", "c"), "r": ("a",)}
    older = process("p3", ("r",), None, now)  # says nothing: taken to run every job
    assert unserved(waiting, [live, older], now) == {"q": ("b", "c")}
    assert unserved({}, [live], now) == {}


def test_not_registered_names_each_queue_and_name() -> None:
    waiting = {"q": frozenset({"a", "b"}), "r": frozenset({"c", "a"})}
    assert not_registered(waiting, frozenset({"a"})) == [("q", "b"), ("r", "c")]
