"""Tracing with the real OpenTelemetry SDK: enqueue and attempt spans, linked through the
trace context stored with each job, on real SQLite files (virtual time for cron)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import trioforge
import trioforge.aio
from tests.support.fast import FAST
from trioforge import JobContext, JobState, Registry, Retry, WorkflowContext, open_client
from trioforge.otel import Tracing
from trioforge.testing import open_test_runtime


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    yield found
    found.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def ids(context: SpanContext | None) -> tuple[int, int]:
    """A span context's trace and span ids (a link's is remote, the span's own is not)."""
    assert context is not None
    return context.trace_id, context.span_id


def linked(span: ReadableSpan) -> list[tuple[int, int]]:
    return [ids(link.context) for link in span.links]


def attr(span: ReadableSpan, key: str) -> object:
    assert span.attributes is not None
    return span.attributes[key]


def only(found: Sequence[ReadableSpan]) -> ReadableSpan:
    assert len(found) == 1, [s.name for s in found]
    return found[0]


def registry_of_jobs(attempts: dict[str, int]) -> Registry:
    registry = Registry()

    @registry.job("greet")
    async def greet(ctx: JobContext, user: str) -> str:
        return f"hello {user}"

    @registry.job("flaky", retry=Retry(max_attempts=2, base_delay=0.01))
    async def flaky(ctx: JobContext, user: str) -> str:
        attempts[user] = attempts.get(user, 0) + 1
        if attempts[user] == 1:
            raise LookupError(f"no user {user} yet")
        return user

    @registry.job("broken", retry=Retry(max_attempts=1))
    async def broken(ctx: JobContext) -> None:
        raise ValueError("broken for good")

    @registry.job("hang", retry=Retry(max_attempts=1), timeout=0.2)
    async def hang(ctx: JobContext) -> None:
        await ctx.progress(0.0, "started")  # watchers know its attempt has begun
        await trio.sleep_forever()

    return registry


async def test_an_attempt_span_links_to_the_enqueue_span_inside_the_callers_trace(
    sqlite_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("app")
    registry = registry_of_jobs({})
    async with trioforge.open_runtime(
        registry, database=sqlite_url, tracing=Tracing(provider), **FAST
    ) as rt:
        with tracer.start_as_current_span("request") as request:
            job_id = await rt.enqueue("greet", "ada")
        assert (await rt.wait(job_id)).status is JobState.COMPLETED
    enqueue = only(spans(exporter, "trioforge enqueue greet"))
    run = only(spans(exporter, "trioforge run greet"))
    assert enqueue.kind is SpanKind.PRODUCER
    assert enqueue.parent == request.get_span_context()
    assert enqueue.attributes is not None
    assert enqueue.attributes["trioforge.job.id"] == job_id
    assert enqueue.attributes["messaging.destination.name"] == "default"
    assert run.kind is SpanKind.CONSUMER
    assert enqueue.context is not None
    assert run.context is not None
    assert linked(run) == [ids(enqueue.context)]
    assert enqueue.context.trace_id == request.get_span_context().trace_id
    # A trace of its own (the default): the attempt's parent is not the enqueuer.
    assert run.parent is None
    assert run.context.trace_id != enqueue.context.trace_id
    assert run.attributes is not None
    assert {k: run.attributes[k] for k in (
        "trioforge.job.id", "trioforge.job.name", "messaging.destination.name",
        "trioforge.job.attempt", "trioforge.job.outcome",
    )} == {
        "trioforge.job.id": job_id, "trioforge.job.name": "greet",
        "messaging.destination.name": "default", "trioforge.job.attempt": 1,
        "trioforge.job.outcome": "completed",
    }  # fmt: skip
    assert run.status.status_code is StatusCode.UNSET


async def test_with_child_propagation_the_attempt_joins_the_enqueuers_trace(
    sqlite_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    registry = registry_of_jobs({})
    tracing = Tracing(provider, propagation="child")
    async with trioforge.open_runtime(registry, database=sqlite_url, tracing=tracing, **FAST) as rt:
        with provider.get_tracer("app").start_as_current_span("request") as request:
            job_id = await rt.enqueue("greet", "ada")
        await rt.wait(job_id)
    enqueue = only(spans(exporter, "trioforge enqueue greet"))
    run = only(spans(exporter, "trioforge run greet"))
    assert enqueue.context is not None
    assert run.context is not None
    assert ids(run.parent) == ids(enqueue.context)
    assert run.context.trace_id == request.get_span_context().trace_id
    assert linked(run) == [ids(enqueue.context)]


async def test_a_retried_job_has_two_attempt_spans_linked_to_one_enqueue(
    sqlite_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    registry = registry_of_jobs({})
    async with trioforge.open_runtime(
        registry, database=sqlite_url, tracing=Tracing(provider), **FAST
    ) as rt:
        job_id = await rt.enqueue("flaky", "ada")  # outside any span: the enqueue is a root
        assert (await rt.wait(job_id)).attempt == 2
    enqueue = only(spans(exporter, "trioforge enqueue flaky"))
    assert enqueue.parent is None
    first, second = sorted(
        spans(exporter, "trioforge run flaky"),
        key=lambda s: s.start_time or 0,
    )
    assert linked(first) == linked(second) == [ids(enqueue.context)]
    assert first.attributes is not None
    assert second.attributes is not None
    assert (
        first.attributes["trioforge.job.attempt"],
        second.attributes["trioforge.job.attempt"],
    ) == (1, 2)
    assert first.attributes["trioforge.job.outcome"] == "failed"
    assert first.status.status_code is StatusCode.ERROR
    [event] = first.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "LookupError"
    assert event.attributes["exception.message"] == "no user ada yet"
    assert second.attributes["trioforge.job.outcome"] == "completed"
    assert second.status.status_code is StatusCode.UNSET


async def test_failures_timeouts_and_cancels_end_their_spans(
    sqlite_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    registry = registry_of_jobs({})
    async with trioforge.open_runtime(
        registry, database=sqlite_url, tracing=Tracing(provider), shutdown_grace=0.05, **FAST
    ) as rt:
        broken = await rt.enqueue("broken")
        timed_out = await rt.enqueue("hang")
        assert (await rt.wait(broken)).status is JobState.DEAD
        assert (await rt.wait(timed_out)).status is JobState.DEAD
        async with rt.watch(stopped := await rt.enqueue("hang", timeout=60)) as updates:
            async for info in updates:
                if info.progress_message == "started":
                    break
        await rt.cancel(stopped)
        assert (await rt.wait(stopped)).status is JobState.CANCELLED
        # Running when the runtime is torn down: released, its span ended all the same.
        # (Its attempt begun, not only claimed: a job claimed but not started is released
        # without an attempt, so without a span.)
        async with rt.watch(released := await rt.enqueue("hang", timeout=60)) as updates:
            async for info in updates:
                if info.progress_message == "started":
                    break
    outcomes = {}
    for span in spans(exporter, "trioforge run broken") + spans(exporter, "trioforge run hang"):
        assert span.attributes is not None
        assert span.end_time is not None
        outcomes[span.attributes["trioforge.job.id"]] = (
            span.attributes["trioforge.job.outcome"], span.status.status_code,
            [str(e.attributes["exception.type"]).rsplit(".")[-1] for e in span.events
             if e.attributes],
        )  # fmt: skip
    assert outcomes == {
        broken: ("failed", StatusCode.ERROR, ["ValueError"]),
        timed_out: ("timed_out", StatusCode.ERROR, ["JobTimeoutError"]),
        stopped: ("cancelled", StatusCode.UNSET, []),
        released: ("released", StatusCode.UNSET, []),
    }


async def test_a_handlers_spans_and_follow_up_jobs_belong_to_its_attempt(
    sqlite_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    registry = Registry()
    tracer = provider.get_tracer("app")
    follow_ups: list[int] = []

    @registry.job("signup")
    async def signup(ctx: JobContext, user: str) -> None:
        with tracer.start_as_current_span("create account"):
            follow_ups.append((await ctx.enqueue("welcome", user)).id)

    @registry.job("welcome")
    async def welcome(ctx: JobContext, user: str) -> None:
        pass

    async with trioforge.open_runtime(
        registry, database=sqlite_url, tracing=Tracing(provider), **FAST
    ) as rt:
        await rt.wait(await rt.enqueue("signup", "ada"))
        await rt.wait(follow_ups[0])
    run = only(spans(exporter, "trioforge run signup"))
    inner = only(spans(exporter, "create account"))
    enqueue = only(spans(exporter, "trioforge enqueue welcome"))
    welcome_run = only(spans(exporter, "trioforge run welcome"))
    assert inner.parent == run.context
    assert inner.context is not None
    assert enqueue.parent == inner.context
    assert linked(welcome_run) == [ids(enqueue.context)]


async def test_enqueue_many_and_transactional_enqueues_store_the_context(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    path = tmp_path / "jobs.db"
    registry = registry_of_jobs({})
    async with trioforge.open_runtime(
        registry, database=f"sqlite:///{path}", tracing=Tracing(provider), **FAST
    ) as rt:
        many = await rt.enqueue_many("greet", ["a", "b", "c"])
        conn = sqlite3.connect(path)
        try:
            with conn:
                in_transaction = await rt.enqueue("greet", "d", connection=conn)
        finally:
            conn.close()
        for job_id in [*many, in_transaction]:
            await rt.wait(job_id)
    batch, single = sorted(
        spans(exporter, "trioforge enqueue greet"), key=lambda s: s.start_time or 0
    )
    assert batch.attributes is not None
    assert batch.attributes["messaging.batch.message_count"] == 3
    links = {}
    for run in spans(exporter, "trioforge run greet"):
        assert run.attributes is not None
        links[run.attributes["trioforge.job.id"]] = linked(run)
    assert links == {
        many[0]: [ids(batch.context)], many[1]: [ids(batch.context)],
        many[2]: [ids(batch.context)], in_transaction: [ids(single.context)],
    }  # fmt: skip


async def test_a_client_and_a_runtime_of_their_own_share_the_context_through_the_file(
    sqlite_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    registry = registry_of_jobs({})
    with provider.get_tracer("web").start_as_current_span("POST /signup") as request:
        async with open_client(sqlite_url, registry=registry, tracing=Tracing(provider)) as client:
            job_id = await client.enqueue("greet", "ada")
    async with trioforge.open_runtime(
        registry, database=sqlite_url, tracing=Tracing(provider), **FAST
    ) as rt:
        await rt.wait(job_id)
    run = only(spans(exporter, "trioforge run greet"))
    enqueue = only(spans(exporter, "trioforge enqueue greet"))
    assert linked(run) == [ids(enqueue.context)]
    assert ids(enqueue.context)[0] == request.get_span_context().trace_id
    assert run.parent is None  # not the span that was current when the runtime opened


async def test_without_tracing_nothing_is_stored_even_inside_a_span(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    path = tmp_path / "jobs.db"
    registry = registry_of_jobs({})
    with provider.get_tracer("app").start_as_current_span("request"):
        async with trioforge.open_runtime(registry, database=f"sqlite:///{path}", **FAST) as rt:
            await rt.wait(await rt.enqueue("greet", "ada"))
    [(stored,)] = sqlite3.connect(path).execute("SELECT trace_context FROM trioforge_jobs")
    assert stored is None
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]


async def test_a_malformed_stored_context_is_ignored_and_the_job_runs(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    path = tmp_path / "jobs.db"
    url = f"sqlite:///{path}"
    registry = registry_of_jobs({})
    async with open_client(url, registry=registry) as client:
        ids = [(await client.enqueue("greet", user)).id for user in ("a", "b")]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE trioforge_jobs SET trace_context = 'not json' WHERE id = ?", (ids[0],))
        conn.execute("UPDATE trioforge_jobs SET trace_context = '{\"traceparent\": \"00-zz\"}' "
                     "WHERE id = ?", (ids[1],))  # fmt: skip
    async with trioforge.open_runtime(
        registry, database=url, tracing=Tracing(provider), **FAST
    ) as rt:
        for job_id in ids:
            assert (await rt.wait(job_id)).status is JobState.COMPLETED
    assert [s.links for s in spans(exporter, "trioforge run greet")] == [(), ()]


async def test_a_workflow_attempt_holds_its_steps_and_its_childrens_context(
    autojump_clock: trio.abc.Clock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    registry = Registry()

    @registry.job("square")
    async def square(ctx: JobContext, n: int) -> int:
        return n * n

    @registry.workflow("fan")
    async def fan(ctx: WorkflowContext, n: int) -> int:
        doubled = await ctx.step("double", lambda: 2 * n)
        child = await ctx.start_child(square, doubled)
        [result] = await ctx.gather(child)
        return int(result)

    async with open_test_runtime(registry, tracing=Tracing(provider)) as rt:
        run_id = await rt.enqueue(fan, 3)
        assert (await rt.wait(run_id)).result == 36
    first, second = sorted(spans(exporter, "trioforge run fan@v1"), key=lambda s: s.start_time or 0)
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["trioforge.job.outcome"] == "suspended"  # waits for its child
    assert second.attributes["trioforge.job.outcome"] == "completed"
    step = only(spans(exporter, "trioforge step double"))  # replayed the second time
    assert step.parent == first.context
    child_run = only(spans(exporter, "trioforge run square"))
    assert linked(child_run) == [ids(first.context)]


async def test_cron_fired_jobs_have_no_link(
    autojump_clock: trio.abc.Clock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    registry = Registry()
    ticks: list[str] = []

    @registry.cron("* * * * *", name="tick")
    async def tick(ctx: trioforge.CronContext) -> None:
        ticks.append(ctx.run_id)

    async with open_test_runtime(registry, tracing=Tracing(provider)) as rt:
        await rt.advance(120)
        await rt.run_until_idle()
    runs = spans(exporter, "trioforge run tick")
    assert len(runs) == len(ticks) >= 1
    assert [r.links for r in runs] == [()] * len(runs)
    assert spans(exporter, "trioforge enqueue tick") == []


def test_the_core_never_imports_opentelemetry(tmp_path: Path) -> None:
    script = f"""
import sys, trio, trioforge, trioforge.web, trioforge.aio
registry = trioforge.Registry()

@registry.job("greet")
async def greet(ctx, user: str) -> str:
    return user

async def main():
    async with trioforge.open_runtime(registry, database="sqlite:///{tmp_path / "j.db"}",
                                      poll_interval=0.05) as rt:
        await rt.wait(await rt.enqueue("greet", "ada"))

trio.run(main)
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_a_bad_propagation_is_a_configuration_error() -> None:
    with pytest.raises(trioforge.ConfigurationError, match="'link' or 'child'"):
        Tracing(propagation="parent")  # type: ignore[arg-type]


def _console_spans(path: Path) -> list[Any]:
    """Spans as the SDK's ConsoleSpanExporter writes them (one JSON object each)."""
    decoder, text, found = json.JSONDecoder(), path.read_text(), []
    index = 0
    while (index := text.find("{", index)) != -1:
        span, index = decoder.raw_decode(text, index)
        found.append(span)
    return found


#: A worker's application module that configures the SDK itself (spans to a file).
WORKER_MODULE = """
import os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
import trioforge

provider = TracerProvider()
spans = open(os.environ["SPANS_FILE"], "w")
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=spans)))
trace.set_tracer_provider(provider)

registry = trioforge.Registry()

@registry.job("greet")
async def greet(ctx: trioforge.JobContext, user: str) -> str:
    return f"hello {user}"
"""


@pytest.mark.slow
async def test_a_worker_process_with_otel_links_its_attempts_to_the_enqueuer(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    (tmp_path / "traced_app.py").write_text(WORKER_MODULE)
    url, spans_file = f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path / "spans.json"
    registry = registry_of_jobs({})
    command = [sys.executable, "-m", "trioforge", "worker", "traced_app:registry", "--otel",
               "--database", url, "--poll-interval", "0.05"]  # fmt: skip
    async with open_client(url, registry=registry, tracing=Tracing(provider)) as client:
        with provider.get_tracer("web").start_as_current_span("POST /signup"):
            job_id = await client.enqueue("greet", "ada")
        proc = await trio.lowlevel.open_process(
            command, cwd=tmp_path, stderr=subprocess.PIPE,
            env={**os.environ, "SPANS_FILE": str(spans_file)},
        )  # fmt: skip
        try:
            with trio.fail_after(30):
                assert (await client.wait(job_id)).result == "hello ada"
        finally:
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                await proc.wait()
    enqueue = only(spans(exporter, "trioforge enqueue greet"))
    [run] = [s for s in _console_spans(spans_file) if s["name"] == "trioforge run greet"]
    assert run["kind"] == "SpanKind.CONSUMER"
    assert [link["context"] for link in run["links"]] == [
        {"trace_id": f"0x{ids(enqueue.context)[0]:032x}",
         "span_id": f"0x{ids(enqueue.context)[1]:016x}", "trace_state": "[]"}
    ]  # fmt: skip
    assert run["attributes"]["trioforge.job.id"] == job_id


def test_an_asyncio_apps_enqueue_inside_its_span_stores_the_context(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    path = tmp_path / "jobs.db"
    registry = registry_of_jobs({})

    async def main() -> int:
        tracing = Tracing(provider)
        async with trioforge.aio.open_client(f"sqlite:///{path}", registry=registry,
                                             tracing=tracing) as client:  # fmt: skip
            with provider.get_tracer("web").start_as_current_span("GET /"):
                return (await client.enqueue("greet", "ada")).id

    job_id = asyncio.run(main())
    enqueue = only(spans(exporter, "trioforge enqueue greet"))
    assert ids(enqueue.parent) == ids(only(spans(exporter, "GET /")).context)
    [(stored,)] = sqlite3.connect(path).execute(
        "SELECT trace_context FROM trioforge_jobs WHERE id = ?", (job_id,)
    )
    trace_id, span_id = ids(enqueue.context)
    [(header, value)] = json.loads(stored).items()  # no tracestate was set
    assert header == "traceparent"
    assert value.startswith(f"00-{trace_id:032x}-{span_id:016x}-")


async def test_a_job_posted_to_the_web_api_joins_the_requests_trace(
    sqlite_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    import trioforge.web
    from tests.test_web_api import served

    registry = Registry()

    @registry.job("greet", public=True)
    async def greet(ctx: JobContext, user: str) -> str:
        return f"hello {user}"

    with provider.get_tracer("frontend").start_as_current_span("click") as click:
        headers: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(headers)  # what a traced frontend sends
    async with (
        trioforge.open_runtime(
            registry, database=sqlite_url, tracing=Tracing(provider), **FAST
        ) as rt,
        served(trioforge.web.app(client=rt, registry=registry)) as http,
    ):
        with trio.fail_after(20):
            traced = await http.post("/api/jobs/greet", json="ada", headers=headers)
            plain = await http.post("/api/jobs/greet", json="bob")
            for created in (traced, plain):
                assert created.status_code == 201, created.text
                assert (await rt.wait(created.json()["id"])).status is JobState.COMPLETED
    by_job = {attr(s, "trioforge.job.id"): s for s in spans(exporter, "trioforge enqueue greet")}
    first, second = by_job[traced.json()["id"]], by_job[plain.json()["id"]]
    assert first.parent is not None
    assert ids(first.parent) == ids(click.get_span_context())  # in the frontend's trace
    assert second.parent is None  # no traceparent: a trace of its own
    runs = spans(exporter, "trioforge run greet")
    assert sorted(linked(r)[0] for r in runs) == sorted(ids(s.context) for s in (first, second))
