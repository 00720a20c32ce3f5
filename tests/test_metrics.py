"""``/metrics``: Prometheus text that prometheus_client's parser reads, counting a known run."""

from __future__ import annotations

import trio
from prometheus_client.parser import text_string_to_metric_families

import trioforge
import trioforge.web
from tests.support.fast import FAST
from tests.test_web_api import served
from trioforge import JobContext, Registry, Retry
from trioforge.metrics import Metrics
from trioforge.storage import Backend


def make_registry() -> tuple[Registry, trio.Event]:
    registry = Registry()
    hanging = trio.Event()
    failures: dict[str, int] = {}

    @registry.job("ok", queue="q")
    async def ok(ctx: JobContext) -> None:
        pass

    @registry.job("flaky", queue="q", retry=Retry(max_attempts=3, base_delay=0))
    async def flaky(ctx: JobContext) -> None:
        failures["flaky"] = failures.get("flaky", 0) + 1
        if failures["flaky"] == 1:
            raise RuntimeError("first time")

    @registry.job("broken", queue="q", retry=Retry(max_attempts=2, base_delay=0))
    async def broken(ctx: JobContext) -> None:
        raise RuntimeError("always")

    @registry.job("refuse", queue="q")
    async def refuse(ctx: JobContext) -> None:
        raise trioforge.Discard("no")

    @registry.job("hang", queue="q")
    async def hang(ctx: JobContext) -> None:
        hanging.set()
        await trio.sleep_forever()

    return registry, hanging


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in found.items() if n == name)


async def test_metrics_count_a_known_run(database: str | Backend) -> None:
    registry, hanging = make_registry()
    metrics = Metrics()
    async with (
        trioforge.open_runtime(
            registry, database=database, queues={"q": 2}, metrics=metrics, **FAST
        ) as rt,
        served(trioforge.web.app(client=rt, registry=registry, metrics=metrics)) as http,
    ):
        ids = [await rt.enqueue(name) for name in ("ok", "ok", "ok", "flaky", "broken", "refuse")]
        with trio.fail_after(20):
            for job_id in ids:
                await rt.wait(job_id)
            hang_id = await rt.enqueue("hang")
            await hanging.wait()
            busy = samples((await http.get("/metrics")).text)
            await rt.cancel(hang_id)
            await rt.wait(hang_id)
        response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    expected = {"enqueued": 7, "started": 9, "completed": 4, "failed": 3, "retried": 2,
                "dead": 2, "cancelled": 1}  # fmt: skip
    assert {e: total(found, f"trioforge_jobs_{e}_total") for e in expected} == expected
    q = (("job", "broken"), ("queue", "q"))
    assert found[("trioforge_jobs_failed_total", q)] == 2
    assert found[("trioforge_jobs_dead_total", q)] == 1
    assert total(found, "trioforge_job_run_seconds_count") == 9
    assert total(found, "trioforge_job_start_latency_seconds_count") == 9
    depth = {labels: v for (n, labels), v in found.items() if n == "trioforge_queue_jobs"}
    assert depth[(("queue", "q"), ("state", "completed"))] == 4
    assert depth[(("queue", "q"), ("state", "dead"))] == 2
    assert depth[(("queue", "q"), ("state", "cancelled"))] == 1
    assert found[("trioforge_processes", ())] == 1
    assert found[("trioforge_pool_slots", (("queue", "q"),))] == 2
    assert found[("trioforge_pool_busy_slots", (("queue", "q"),))] == 0
    assert found[("trioforge_pool_utilisation", (("queue", "q"),))] == 0
    assert busy[("trioforge_pool_utilisation", (("queue", "q"),))] == 0.5  # hang: 1 of 2


async def test_a_process_not_exporting_database_gauges_has_none(sqlite_url: str) -> None:
    registry, _ = make_registry()
    metrics = Metrics(database_gauges=False)
    async with (
        trioforge.open_runtime(
            registry, database=sqlite_url, queues={"q": 4}, metrics=metrics, **FAST
        ) as rt,
        served(trioforge.web.metrics_app(rt, metrics)) as http,
    ):
        await rt.wait(await rt.enqueue("ok"))
        found = samples((await http.get("/metrics")).text)
    names = {name for name, _ in found}
    assert not names & {"trioforge_queue_jobs", "trioforge_processes"}
    assert found[("trioforge_jobs_completed_total", (("job", "ok"), ("queue", "q")))] == 1
    assert found[("trioforge_pool_utilisation", (("queue", "q"),))] == 0


async def test_an_app_of_its_own_reports_storage_gauges(sqlite_url: str) -> None:
    registry, _ = make_registry()
    async with trioforge.open_client(sqlite_url, registry=registry) as client:
        await client.enqueue_many("ok", [None] * 3)
    async with served(trioforge.web.app(sqlite_url, registry=registry)) as http:
        found = samples((await http.get("/metrics")).text)
    assert found[("trioforge_queue_jobs", (("queue", "q"), ("state", "available")))] == 3
    assert found[("trioforge_processes", ())] == 0
    assert total(found, "trioforge_jobs_enqueued_total") == 0
