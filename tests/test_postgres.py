"""What only the PostgreSQL backend promises: no leaked connections under cancellation, a
clear error for an unreachable server, several replicas sharing one database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import pytest
import trio
import trio_asyncio

import trioforge
from tests.support.listening import SLOW, listener_registry
from tests.support.postgres import (
    URL,
    migrated_sql,
    plans,
    require_postgres,
    schema_url,
    temporary_schema,
)
from trioforge import DatabaseUnavailableError, JobState, RateLimit, SchemaError
from trioforge.storage import (
    CancelNotice,
    ClaimResult,
    JobInfo,
    NewJob,
    Notice,
    SlotsFreedNotice,
    StepKind,
    StepRecord,
    StepStatus,
    WakeNotice,
    WorkflowRecord,
    opened,
    ops,
)
from trioforge.storage._pg_connection import _lost
from trioforge.storage.postgres import MIGRATIONS, PostgresBackend, parse_notice


async def test_cancelled_crossings_never_leak_a_pooled_connection() -> None:
    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema, pool_size=1)
        async with opened(backend):
            batch = [ops.Enqueue(tuple(NewJob("a", "q", "1", 10, 0.0, 3) for _ in range(200)))]
            cancelled = 0
            for i in range(200):
                with trio.move_on_after(i * 0.00002) as scope:
                    await backend.execute(batch, 1.0)
                cancelled += scope.cancelled_caught
            assert cancelled > 0  # the loop did cut crossings short
            with trio.fail_after(10):  # a leaked connection would hang here, pool of one
                [stats] = await backend.execute([ops.Stats()], 1.0)
        assert isinstance(stats, dict)


async def server_pid(conn: asyncpg.Connection) -> tuple[asyncpg.Connection, int]:
    return conn, await conn.fetchval("SELECT pg_backend_pid()")


async def test_batches_keep_their_connection_instead_of_the_pools_acquire() -> None:
    # The pool's acquire and release cost more than the crossing into asyncio; a batch
    # takes the connection the previous one left (the pool hands out a new proxy each time).
    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema, pool_size=1)
        async with opened(backend):
            first, _ = await backend._aio(backend._run, server_pid)
            second, _ = await backend._aio(backend._run, server_pid)
            assert second is first


async def test_a_caller_waiting_on_the_pool_gets_the_connection_a_batch_ends_with() -> None:
    # A pool of one: the second caller waits in the pool's acquire while the first runs.
    # The first's connection must go back to the pool, not be kept for a later batch.
    first_holds = trio.Event()

    async def hold(conn: asyncpg.Connection) -> None:
        first_holds.set()  # trio-asyncio runs this in trio's thread
        await conn.execute("SELECT pg_sleep(0.2)")

    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema, pool_size=1)
        async with opened(backend):
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(backend._aio, backend._run, hold)
                    await first_holds.wait()
                    await backend._aio(backend._run, server_pid)  # waits, then runs


async def test_a_kept_connection_the_server_dropped_is_replaced() -> None:
    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema, pool_size=1)
        async with opened(backend):
            _, pid = await backend._aio(backend._run, server_pid)
            await terminate(template.url, pid)
            with trio.fail_after(10):
                while True:  # the first batch may meet the loss before asyncpg sees it
                    try:
                        _, after = await backend._aio(backend._run, server_pid)
                    except Exception as exc:
                        if not _lost(exc):
                            raise
                    else:
                        break
            assert after != pid
            [stats] = await backend.execute([ops.Stats()], 1.0)
            assert isinstance(stats, dict)


async def test_closing_while_a_batch_runs_waits_for_it_and_ends() -> None:
    # The batch's connection must go back to the pool, not be kept: the pool's close
    # waits for every connection it handed out.
    started, finished = trio.Event(), []

    async def slow(conn: asyncpg.Connection) -> None:
        started.set()  # trio-asyncio runs this in trio's thread
        await conn.execute("SELECT pg_sleep(0.3)")
        finished.append(True)

    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema, pool_size=1)
        async with backend.environment():
            await backend.open()
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(backend._aio, backend._run, slow)
                    await started.wait()  # the batch holds its connection
                    await backend.aclose()
                    assert finished == [True]  # the close waited for the batch


async def test_an_unreachable_server_is_a_clear_error_not_a_hang() -> None:
    with trio.fail_after(20):
        with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1"):
            async with trioforge.open_client("postgresql://postgres@127.0.0.1:1/test"):
                pass
    require_postgres()
    wrong_db = URL.rsplit("/", 1)[0] + "/no_such_database_here"
    with trio.fail_after(20), pytest.raises(DatabaseUnavailableError, match="no_such_database"):
        async with trioforge.open_client(wrong_db):
            pass


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (URL.rsplit("/", 1)[0] + "/no_such_database_here", "no_such_database_here"),
        (URL + ("&" if "?" in URL else "?") + "no_such_setting=1", "no_such_setting"),
    ],
    ids=["database", "query-parameter"],
)
async def test_a_server_that_refuses_the_connection_is_not_called_unreachable(
    url: str, named: str
) -> None:
    """The server answered (a database it does not have, a query parameter it sends on as a
    setting and rejects): the error says what it refused, not to check that it runs."""
    require_postgres()
    with trio.fail_after(20), pytest.raises(DatabaseUnavailableError) as caught:
        async with trioforge.open_client(url):
            pass
    message = str(caught.value)
    assert "refused the connection" in message, message
    assert named in message, message
    assert "server is running" not in message, message


async def test_password_never_appears_in_errors() -> None:
    with trio.fail_after(20), pytest.raises(DatabaseUnavailableError) as caught:
        async with trioforge.open_client("postgresql://someone:s3cret@127.0.0.1:1/test"):
            pass
    assert "s3cret" not in str(caught.value)


async def test_schema_is_versioned() -> None:
    async with temporary_schema() as backend:
        with pytest.raises(SchemaError, match="trioforge db migrate"):
            async with opened(backend, migrate=False):
                pass
        async with opened(backend):
            assert (await backend.schema_status()).up_to_date

            async def bump(conn: asyncpg.Connection) -> None:
                await conn.execute(
                    "INSERT INTO trioforge_schema (version) VALUES ($1)", len(MIGRATIONS) + 1
                )

            await trio_asyncio.aio_as_trio(backend._run)(bump)
        with pytest.raises(SchemaError, match="upgrade trioforge"):
            async with opened(backend):
                pass


async def test_the_host_apps_asyncio_loop_is_reused() -> None:
    registry = trioforge.Registry()

    @registry.job("asyncio-side")
    async def asyncio_side(ctx: trioforge.JobContext) -> int:
        async def answer() -> int:
            return 42

        result: int = await trio_asyncio.aio_as_trio(answer)()
        return result

    async with trio_asyncio.open_loop() as loop, temporary_schema() as backend:
        # inside the host's loop the backend opens no loop of its own
        assert isinstance(backend.environment(), contextlib.nullcontext)
        async with trioforge.open_runtime(registry, database=backend) as rt:
            assert trio_asyncio.current_loop.get() is loop
            info = await rt.wait(await rt.enqueue(asyncio_side))
    assert info.result == 42


WORKER_MODULE = """
import asyncio
import os

import asyncpg
import trio
import trio_asyncio
import trioforge

registry = trioforge.Registry()
_pool = None
_lock = None


async def _record(n: int, attempt: int) -> None:
    global _pool, _lock
    _lock = _lock or asyncio.Lock()
    async with _lock:
        if _pool is None:
            _pool = await asyncpg.create_pool(os.environ["EFFECTS_URL"], min_size=1, max_size=4)
    await _pool.execute(
        "INSERT INTO effects (n, attempt, pid) VALUES ($1, $2, $3)", n, attempt, os.getpid()
    )


@registry.job("count", retry=trioforge.Retry(max_attempts=5, base_delay=0))
async def count(ctx: trioforge.JobContext, n: int) -> None:
    await trio.sleep(0.001)
    await trio_asyncio.aio_as_trio(_record)(n, ctx.attempt)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_one", [False, True], ids=["all-healthy", "one-sigkilled"])
async def test_three_replicas_run_every_job_exactly_once(tmp_path: Path, kill_one: bool) -> None:
    jobs = 5000
    (tmp_path / "replica.py").write_text(WORKER_MODULE)
    async with schema_url() as url:

        async def create_effects() -> None:
            conn = await asyncpg.connect(url)
            await conn.execute("CREATE TABLE effects (n INT, attempt INT, pid INT)")
            await conn.close()

        async def effects() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(url)
            rows: list[asyncpg.Record] = await conn.fetch("SELECT n, attempt, pid FROM effects")
            await conn.close()
            return rows

        async with trio_asyncio.open_loop():
            await trio_asyncio.aio_as_trio(create_effects)()
        command = [
            sys.executable, "-m", "trioforge", "worker", "replica:registry", "--database", url,
            "--queue", "default=16", "--lease-seconds", "2", "--heartbeat-interval", "0.3",
            "--poll-interval", "0.05",
        ]  # fmt: skip
        env = {**os.environ, "EFFECTS_URL": url}
        count_job = trioforge.Registry().job("count")(_enqueue_only)
        async with trioforge.open_client(url) as client:
            ids = await client.enqueue_many(count_job, range(jobs))
            logs = [(tmp_path / f"replica{i}.log").open("wb") for i in range(3)]
            replicas = [
                await trio.lowlevel.open_process(
                    command, cwd=tmp_path, env=env, stdout=log, stderr=log
                )
                for log in logs
            ]
            try:
                with trio.fail_after(120):
                    if kill_one:
                        # Kill one replica mid-run: once the job a third of the way in is
                        # done (claims go in enqueue order here).
                        await client.wait(ids[jobs // 3])
                        replicas[0].send_signal(signal.SIGKILL)
                    finished = [await client.wait(i) for i in ids]
            finally:
                for proc in replicas[1:] if kill_one else replicas:
                    proc.send_signal(signal.SIGINT)
                with trio.fail_after(60):
                    for proc in replicas:
                        await proc.wait()
                for log in logs:
                    log.close()
        async with trio_asyncio.open_loop():
            rows = await trio_asyncio.aio_as_trio(effects)()

    assert {j.status for j in finished} == {JobState.COMPLETED}
    survivors = replicas[1:] if kill_one else replicas
    assert {r.returncode for r in survivors} == {0}
    by_job: dict[int, list[int]] = {}
    for row in rows:
        by_job.setdefault(row["n"], []).append(row["attempt"])
    assert sorted(by_job) == list(range(jobs))  # nothing lost
    attempts = {j.payload: j.attempt for j in finished}
    for n, seen in by_job.items():
        if not kill_one:
            assert (seen, attempts[n]) == ([1], 1), n  # exactly once
            continue
        # A job ran its effect once, unless the killed replica was inside it: then the
        # rescue's new attempt ran it again (at-least-once), and only the last attempt
        # recorded an outcome.
        assert len(seen) == 1 or attempts[n] > 1, (n, seen, attempts[n])
    pids = {row["pid"] for row in rows}
    assert len(pids) == 3  # all three replicas did work


async def _enqueue_only(ctx: trioforge.JobContext, n: int) -> None:
    """Stands in for the replicas' handler: this process only enqueues."""


async def listener_pids(url: str, schema: str) -> list[int]:
    async def fetch() -> list[int]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                f"trioforge listener {schema}",
            )
        finally:
            await conn.close()
        return [row["pid"] for row in rows]

    result: list[int] = await trio_asyncio.aio_as_trio(fetch)()
    return result


async def terminate(url: str, pid: int) -> None:
    async def kill() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await conn.close()

    await trio_asyncio.aio_as_trio(kill)()


async def test_a_dropped_listener_reconnects_and_catches_up() -> None:
    registry, _, _ = listener_registry()
    async with temporary_schema() as backend:
        assert backend.schema is not None
        other = PostgresBackend(backend.url, schema=backend.schema)
        async with trioforge.open_runtime(registry, database=backend, **SLOW) as rt:
            [pid] = await listener_pids(backend.url, backend.schema)
            await terminate(backend.url, pid)
            async with trioforge.open_client(other, registry=registry) as client:
                # Enqueued while the listener may be down: its NOTIFY can be lost, so only
                # the catch-up after reconnecting can start it before the 60 s poll.
                during = await client.enqueue("quick")
                with trio.fail_after(15):
                    assert (await rt.wait(during)).result == "ran"
                    # The server's own view has no event to wait on: poll it, bounded.
                    pids = await listener_pids(backend.url, backend.schema)
                    while pids in ([], [pid]):
                        await trio.sleep(0.05)
                        pids = await listener_pids(backend.url, backend.schema)
                    assert pid not in pids
                    after = await client.enqueue("quick")  # pushed again through NOTIFY
                    assert (await rt.wait(after)).result == "ran"


def test_a_cancel_notice_is_for_the_listeners_own_schema_only() -> None:
    assert parse_notice("c:7:", None) == CancelNotice(7)
    assert parse_notice("c:7:tenant_a", "tenant_a") == CancelNotice(7)
    assert parse_notice("c:7:tenant_a", "tenant_b") is None
    assert parse_notice("c:7:tenant_a", None) is None
    assert parse_notice("c:7", "tenant_b") is None  # an older process on the default tables
    assert parse_notice("w:5.0:q", "tenant_b") == WakeNotice("q", 5.0)


def test_a_slots_freed_notice_is_for_the_listeners_own_schema_only() -> None:
    assert parse_notice("f:", None) == SlotsFreedNotice()
    assert parse_notice("f:tenant_a", "tenant_a") == SlotsFreedNotice()
    assert parse_notice("f:tenant_a", "tenant_b") is None
    assert parse_notice("f:tenant_a", None) is None


async def test_a_notice_handler_that_raises_is_logged_and_listening_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Notices are handled inside the driver's callback, on asyncio's loop: an error there
    is logged instead of ending the loop, and the next notice is handled."""
    # The channel is the database's: other schemas' wake-ups arrive too, not for this queue.
    queue = f"q{uuid.uuid4().hex}"
    job = NewJob("x", queue, "{}", 10, 0.0, 3)
    heard: list[Notice] = []
    second = trio.Event()

    def on_notice(notice: Notice) -> None:
        if not isinstance(notice, WakeNotice) or notice.queue != queue:
            return
        heard.append(notice)
        if len(heard) == 1:
            raise RuntimeError("the first notice's handler fails")
        second.set()

    async with (
        temporary_schema() as backend,
        opened(backend),
        backend.listen(on_notice) as listening,
    ):
        await backend.execute([ops.Enqueue((job,))], 1.0)
        await backend.execute([ops.Enqueue((job,))], 1.0)
        with trio.fail_after(10):
            await second.wait()
        assert not listening.lost.is_set()
    assert len(heard) == 2
    assert "the first notice's handler fails" in caplog.text


async def test_cancelling_job_n_in_one_schema_cancels_nothing_in_another() -> None:
    job = NewJob("x", "q", "{}", 10, 0.0, 3)
    async with temporary_schema() as a, temporary_schema() as b, opened(a), opened(b):
        for backend in (a, b):  # job 1, running, in each schema
            await backend.execute([ops.Enqueue((job,))], 1.0)
            await backend.execute([ops.Claim("q", {"x"}, 1, "w", 100.0)], 1.0)
        # The channel is the database's: wake-ups of other schemas' queues are left out.
        queue = f"q{uuid.uuid4().hex}"
        a_heard, a_notices = trio.open_memory_channel[Notice](math.inf)
        b_heard, b_notices = trio.open_memory_channel[Notice](math.inf)

        def hear(heard: trio.MemorySendChannel[Notice], notice: Notice) -> None:
            if not isinstance(notice, WakeNotice) or notice.queue == queue:
                heard.send_nowait(notice)

        async with a.listen(partial(hear, a_heard)), b.listen(partial(hear, b_heard)):
            await a.execute([ops.Cancel(1)], 2.0)
            await b.execute([ops.Enqueue((attrs.evolve(job, queue=queue),))], 2.0)  # b hears it
            with trio.fail_after(10):
                assert await a_notices.receive() == CancelNotice(1)
                # Notices arrive in commit order: a cancel b took for its own would
                # come before the wake-up.
                assert isinstance(await b_notices.receive(), WakeNotice)
        [info] = await b.execute([ops.Get(1)], 3.0)
        assert isinstance(info, JobInfo)
        assert not info.cancel_requested


async def test_folding_leaves_one_count_row_per_key_and_the_same_counts() -> None:
    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema)
        async with opened(backend):
            for _ in range(5):  # five statements: five sets of delta rows
                await backend.execute([ops.Enqueue((NewJob("a", "q", "1", 0, 0.0, 3),))], 1.0)
            [claimed] = await backend.execute([ops.Claim("q", frozenset("a"), 2, "w", 9.0)], 1.0)
            assert len(claimed.jobs) == 2  # type: ignore[attr-defined]

            async def rows(conn: asyncpg.Connection) -> int:
                n: int = await conn.fetchval("SELECT count(*) FROM trioforge_counts")
                return n

            before, unfolded = (
                await backend.execute([ops.Stats()], 1.0),
                await backend._aio(backend._run, rows),
            )
            await backend.execute([ops.FoldCounts()], 1.0)
            assert await backend.execute([ops.Stats()], 1.0) == before
            assert before == [{"q": {JobState.AVAILABLE: 3, JobState.RUNNING: 2}}]
            assert (unfolded, await backend._aio(backend._run, rows)) == (7, 2)


async def test_a_queue_bucket_created_by_a_concurrent_claim_holds_the_other_claim_back() -> None:
    # Two first claims of a rate-limited queue at once: the second waits for the first to
    # commit the bucket it creates, and must not take it for a full new bucket.
    rate = RateLimit("q-rate", rate=1, per=60, burst=2)
    claim = ops.Claim("q", frozenset("a"), 4, "w", 99.0, queue_rate=rate)
    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema)
        async with opened(backend):
            # Claimers of different jobs of the queue (a claim locks every job it reads).
            jobs = tuple(NewJob(name, "q", "1", 0, 0.0, 3) for name in "aabbbb")
            await backend.execute([ops.Enqueue(jobs)], 1.0)

            async def race(pool: asyncpg.Pool) -> tuple[ClaimResult, ClaimResult]:
                async with pool.acquire() as first, pool.acquire() as second:
                    creating = first.transaction()
                    await creating.start()
                    won = await backend._claim(first, claim, 1.0)
                    async with second.transaction():
                        other = attrs.evolve(claim, names=frozenset("b"))
                        waiting = asyncio.ensure_future(backend._claim(second, other, 1.0))
                        # Only the server knows when the second claim waits for the row the
                        # first one created: ask it until it says so.
                        while await first.fetchval(  # noqa: ASYNC110
                            "SELECT wait_event_type IS DISTINCT FROM 'Lock' "
                            "FROM pg_stat_activity WHERE pid = $1",
                            second.get_server_pid(),
                        ):
                            await asyncio.sleep(0.01)
                        await creating.commit()
                        lost = await waiting
                return won, lost

            assert backend._pool is not None
            won, lost = await backend._aio(race, backend._pool.pool)
            assert (len(won.jobs), lost.jobs, lost.next_token_at) == (2, (), 61.0)
            [after] = await backend.execute([attrs.evolve(claim, names=frozenset("b"))], 2.0)
            assert isinstance(after, ClaimResult)
            assert (after.jobs, after.next_token_at) == ((), 61.0)  # the burst went to "a"


async def test_a_purge_batch_reads_its_state_by_index_not_the_whole_table() -> None:
    """Retention deletes a million finished jobs 500 at a time: a batch that scanned and
    sorted the table took seconds there, each. Its plan (as planned for its values and as
    a prepared statement's generic plan) must walk the state's index instead."""
    from trioforge.storage._pg_claims import _PURGE

    async with migrated_sql() as sql:
        for status, finished, count in [
            ("available", "NULL", 20_000), ("completed", "x", 3_000), ("dead", "x", 1_000)
        ]:  # fmt: skip
            await sql(
                "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, "
                f"max_attempts, created_at, status, finished_at) SELECT 'a', 'q', '[]', 0, "
                f"0, 3, 0, '{status}', {finished} FROM generate_series(1, {count}) AS x"
            )
        await sql("ANALYZE trioforge_jobs")
        found = await plans(
            sql,
            "PREPARE purge (text[], float8, text, text[], bigint, boolean) AS " + _PURGE,
            "EXPLAIN (FORMAT JSON) EXECUTE purge ('{completed}', 2000, NULL, '{}', 500, true)",
        )
    for mode, root in found.items():
        nodes = list(_nodes(root))
        scans = {(n["Node Type"], n.get("Index Name")) for n in nodes}
        assert ("Seq Scan", None) not in scans, (mode, scans)
        assert any(n.get("Index Name") == "trioforge_jobs_finished_by_state" for n in nodes)


def _nodes(node: dict[str, Any]) -> Any:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


async def test_a_claim_reads_no_further_than_the_due_jobs() -> None:
    """A queue holding many future-scheduled rows (delayed jobs, sleeping runs) and a few
    due jobs: a claim asking for more than are due must stop at the last due one. It used
    to read every future row's index entry (6,000 buffers and 200 ms a claim beside a
    million)."""
    from trioforge.storage._pg_sql import _CLAIM

    async with migrated_sql() as sql:
        for status, run_at, count in [("available", "x", 3), ("scheduled", "1e6 + x", 20_000)]:
            await sql(
                "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, "
                "max_attempts, created_at, status) SELECT 'a', 'q', '[]', 0, "
                f"{run_at}, 3, 0, '{status}' FROM generate_series(1, {count}) AS x"
            )
        await sql("ANALYZE trioforge_jobs")
        found = await plans(
            sql,
            "PREPARE claim (text, float8, text[], bigint, text, float8, text[], text) AS " + _CLAIM,
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim "
            "('q', 1000, '{a}', 64, 'me', 2000, '{}', 'unheard')",
        )
    for root in found.values():
        picked = next(n for n in root["Plans"] if n.get("Subplan Name") == "CTE picked")
        assert picked["Actual Rows"] == 3
        assert picked["Shared Hit Blocks"] + picked.get("Shared Read Blocks", 0) < 30


@pytest.mark.parametrize("beside", [False, True], ids=["committed-alone", "in-a-transaction"])
async def test_a_record_write_refused_for_its_data_fails_alone_in_its_batch(beside: bool) -> None:
    """Many runs' record writes are one statement: one the server refuses must not take
    the others down with it, whether the batch commits statement by statement or as one
    transaction (a signal beside it needs one)."""
    async with temporary_schema() as backend, opened(backend):
        run = NewJob("w", "q", "{}", 10, 0.0, 3, workflow=True)
        await backend.execute([ops.Enqueue((run,) * 4)], 1.0)
        claim = ops.Claim("q", frozenset({"w"}), 4, "me", 1e12)
        [claimed] = await backend.execute([claim], 1.0)
        assert isinstance(claimed, ClaimResult)
        a, b, c, d = claimed.jobs
        step = StepRecord(0, StepKind.STEP, "s", StepStatus.COMPLETED, 1, '"ok"')
        poison = attrs.evolve(step)
        object.__setattr__(poison, "result", '"bad \ud800"')  # past the converter
        batch: list[ops.Op] = [
            ops.RecordStep(a.id, a.lease, step),
            ops.RecordStep(b.id, b.lease, poison),
            ops.RecordStep(c.id, c.lease, step),
        ]
        if beside:
            batch.append(ops.SendSignal(d.id, "go", "true"))
        results = await backend.execute(batch, 2.0)
        assert [getattr(r, "applied", r) for r in results[:3:2]] == [True, True]
        assert isinstance(results[1], Exception)
        read = await backend.execute([ops.ReadWorkflow(j.id) for j in (a, b, c, d)], 3.0)
        records = [r for r in read if isinstance(r, WorkflowRecord)]
        assert len(records) == 4
        assert [[s.result for s in r.steps] for r in records[:3]] == [['"ok"'], [], ['"ok"']]
        assert [s.name for s in records[3].signals] == (["go"] if beside else [])


async def test_a_signal_committed_while_its_run_loads_is_read_or_wakes_the_run_again() -> None:
    """A run's load clears its wake-up flag and reads its record. A signal whose commit
    the clearing waits for must then be in the record, or its flag must stay set (the
    run comes back for it): one statement doing both would read from a snapshot taken
    before that commit and clear the flag the signal set, losing the wake-up."""
    async with temporary_schema() as backend, opened(backend):
        run = NewJob("w", "q", "{}", 10, 0.0, 3, workflow=True)
        await backend.execute([ops.Enqueue((run,))], 1.0)
        [claimed] = await backend.execute([ops.Claim("q", frozenset({"w"}), 1, "me", 1e12)], 1.0)
        assert isinstance(claimed, ClaimResult)
        [job] = claimed.jobs
        await backend.execute([ops.SendSignal(job.id, "first", "1")], 2.0)  # flag set
        held, release = trio.Event(), asyncio.Event()

        async def second_signal(conn: asyncpg.Connection) -> None:
            async with conn.transaction():  # what SendSignal writes, held uncommitted
                await conn.execute("SELECT FROM trioforge_jobs WHERE id = $1 FOR UPDATE", job.id)
                await conn.execute(
                    "INSERT INTO trioforge_workflow_signals (run_id, name, payload, sent_at) "
                    "VALUES ($1, 'second', '2', 3.0)",
                    job.id,
                )
                await conn.execute(
                    "UPDATE trioforge_jobs SET wake_requested = TRUE WHERE id = $1", job.id
                )
                held.set()  # trio-asyncio runs this in trio's thread
                await release.wait()

        async def lock_waiters(conn: asyncpg.Connection) -> int:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
            return count

        async def wake_flag(conn: asyncpg.Connection) -> bool:
            flag: bool = await conn.fetchval(
                "SELECT wake_requested FROM trioforge_jobs WHERE id = $1", job.id
            )
            return flag

        loaded: list[object] = []

        async def load() -> None:
            loaded.extend(await backend.execute([ops.LoadWorkflow(job.id, job.lease)], 4.0))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(backend._aio, backend._run, second_signal)
                await held.wait()
                nursery.start_soon(load)
                while not loaded and not await backend._aio(backend._run, lock_waiters):  # noqa: ASYNC110
                    await trio.sleep(0.01)  # until the load is blocked on the signal's lock
                release.set()
        [record] = loaded
        assert isinstance(record, WorkflowRecord)
        flag = await backend._aio(backend._run, wake_flag)
        seen = [s.name for s in record.signals]
        assert seen == ["first", "second"] or flag, (seen, flag)


@pytest.mark.parametrize(("pool_size", "open_at_start"), [(4, 2), (1, 1)])
async def test_the_pool_opens_with_a_second_connection_ready(
    pool_size: int, open_at_start: int
) -> None:
    """A batch that overlaps the first one (a claim beside an outcome write) finds a
    connection already made, rather than waiting for one on its way to the server."""
    async with temporary_schema() as template:
        backend = PostgresBackend(template.url, schema=template.schema, pool_size=pool_size)
        async with opened(backend):
            assert backend._pool is not None
            assert backend._pool.pool.get_size() == open_at_start


async def test_outcomes_and_renewals_find_their_jobs_by_id_however_many_are_running() -> None:
    """An outcome batch and a lease renewal find each job by its id. Their plans, believing
    the statistics taken when nothing ran, walked every running job (or the whole table)
    and, for each one, every outcome or lease: O(running x outcomes). Once outcomes piled
    up (a purge slowing a batch), each batch took seconds and left a bigger one behind it,
    job starts stalled meanwhile. A workflow batch's record writes and loads are fenced by
    the same kind of join (its generic load plan removed 4 million rows here)."""
    from trioforge.storage._pg_sql import (
        _CLEAR_WAKES,
        _FENCED_RECORDS,
        _FINISH,
        _RECORD_STEPS,
        _RENEW,
    )

    count = 2000
    async with migrated_sql() as sql:
        await sql(
            "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, "
            "max_attempts, created_at, status) SELECT 'a', 'q', '[]', 0, x, 3, 0, "
            "'available' FROM generate_series(1, 20000) AS x"
        )
        await sql("ANALYZE trioforge_jobs")  # nothing running
        await sql(
            "UPDATE trioforge_jobs SET status = 'running', lease = 1, lease_until = 100, "
            f"lease_owner = 'me' WHERE id > 10000 AND id <= {10000 + count}"
        )
        ids = "'{" + ",".join(str(10001 + i) for i in range(count)) + "}'"

        def column(value: str) -> str:
            return "'{" + ",".join([value] * count) + "}'"

        finish = await plans(
            sql,
            "PREPARE finish (bigint[], bigint[], text[], float8[], int[], float8[], text[], "
            "text[], float8, text, text, text) AS " + _FINISH,
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE finish ({ids}, {column('1')}, "
            f"{column('completed')}, {column('NULL')}, {column('0')}, {column('5')}, "
            f"{column('NULL')}, {column('NULL')}, 5, 'tf', 'tf_changes', 'f:')",
        )
        renew = await plans(
            sql,
            "PREPARE renew (bigint[], bigint[], float8, text) AS " + _RENEW,
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE renew ({ids}, {column('1')}, 200, 'me')",
        )
        # A workflow batch's record writes, wake-up clearing and record loads, fenced the
        # same way by each run's lease.
        steps = await plans(
            sql,
            "PREPARE steps (bigint[], bigint[], int[], text[], text[], text[], int[], text[], "
            "text[], float8[], bool[], float8[], float8[], text) AS " + _RECORD_STEPS,
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE steps ({ids}, {column('1')}, "
            f"{column('0')}, {column('step')}, {column('s')}, {column('completed')}, "
            f"{column('1')}, {column('NULL')}, {column('NULL')}, {column('NULL')}, "
            f"{column('false')}, {column('1')}, {column('2')}, 'tf_changes')",
        )
        wakes = await plans(
            sql,
            "PREPARE wakes (bigint[], bigint[]) AS " + _CLEAR_WAKES,
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE wakes ({ids}, {column('1')})",
        )
        loads = await plans(
            sql,
            "PREPARE loads (bigint[], bigint[]) AS " + _FENCED_RECORDS,
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE loads ({ids}, {column('1')})",
        )
    found: dict[str, dict[str, Any]] = {}
    for mode, root in finish.items():
        done = next(n for n in root["Plans"] if n.get("Subplan Name") == "CTE done")
        found[f"finish, {mode}"] = done
    for mode, root in steps.items():
        written = next(n for n in root["Plans"] if n.get("Subplan Name") == "CTE written")
        found[f"record steps, {mode}"] = written
    for mode, root in renew.items():
        found[f"renew, {mode}"] = root
    for mode, root in loads.items():
        found[f"load records, {mode}"] = root
    for mode, root in wakes.items():  # no flag set: it writes nothing, finding every run
        found[f"clear wakes, {mode}"] = root
    for label, node in found.items():
        assert node["Actual Rows"] == (0 if label.startswith("clear") else count), label
        removed = sum(n.get("Rows Removed by Join Filter", 0) for n in _nodes(node))
        assert removed < count, (label, removed)


async def test_a_flow_controlled_claim_reads_no_further_than_the_due_jobs() -> None:
    """The same bound in the flow-controlled claim's function: beside many future rows
    and a few due jobs, asked for more than are due, it stops at the last due one. As a
    generic plan (what PL/pgSQL switches to after a few calls) its walk went on through
    every future row of the queue, twice: 1,071 buffers here, 93 now."""
    async with migrated_sql() as sql:
        for status, run_at, count in [("available", "x", 3), ("scheduled", "1e6 + x", 100_000)]:
            await sql(
                "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, "
                "max_attempts, created_at, status, concurrency_key) SELECT 'a', 'q', '[]', 0, "
                f"{run_at}, 3, 0, '{status}', 'k' FROM generate_series(1, {count}) AS x"
            )
        await sql("ANALYZE trioforge_jobs")
        claim = (
            "SELECT * FROM trioforge_claim_limited('q', 1000, '{a}', '{}', 64, 'me', 2000, "
            "1000, 1e-6, '{a}', '{NULL}', '{NULL}', '{10}', '{}', '{}')"
        )
        found = {}
        # As planned for its values, and as the generic plans PL/pgSQL may switch to.
        for mode in ("custom", "generic"):
            await sql(f"SET plan_cache_mode = force_{mode}_plan")
            for explain in ("", "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "):
                # Each rolled back; the first plans the function's statements.
                await sql("BEGIN")
                rows = await sql(explain + claim)
                await sql("ROLLBACK")
            [[plan]] = rows
            found[mode] = json.loads(plan)[0]["Plan"]
    for mode, root in found.items():
        assert root["Actual Rows"] == 4, mode  # three claimed, and the row of what is next
        assert root["Shared Hit Blocks"] + root.get("Shared Read Blocks", 0) < 300, mode


async def test_a_claims_count_of_due_jobs_skips_what_earlier_claims_left() -> None:
    """Every job claimed leaves a dead entry at the front of the claim and run_at indexes
    (its row left their predicate), there until VACUUM. A claim's count of due jobs used
    to read them all from the front, as the pick does: at a million jobs drained, about
    4,000 of a claim's 10,000 buffers. It counts back from now instead, where the newest
    due jobs are."""
    from trioforge.storage._pg_sql import _CLAIM

    async with migrated_sql() as sql:
        await sql(
            "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, "
            "max_attempts, created_at, status) SELECT 'a', 'q', '[]', 0, x, 3, 0, "
            "'available' FROM generate_series(1, 20000) AS x"
        )
        await sql("ANALYZE trioforge_jobs")
        # Claimed and finished, as a drain leaves them (no VACUUM since).
        await sql(
            "UPDATE trioforge_jobs SET status = 'completed', finished_at = run_at "
            "WHERE run_at <= 19000"
        )
        found = await plans(
            sql,
            "PREPARE claim (text, float8, text[], bigint, text, float8, text[], text) AS " + _CLAIM,
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim "
            "('q', 30000, '{a}', 64, 'me', 40000, '{}', 'unheard')",
        )
    for mode, root in found.items():
        picked = next(n for n in root["Plans"] if n.get("Subplan Name") == "CTE picked")
        assert picked["Actual Rows"] == 64
        [count] = [n for n in _nodes(picked) if n.get("Index Name") == "trioforge_jobs_upcoming"]
        assert count["Actual Rows"] == 64
        assert count["Shared Hit Blocks"] + count.get("Shared Read Blocks", 0) < 30, mode


def test_a_schema_too_long_for_the_change_notices_channel_is_refused_at_once() -> None:
    """The change notices' channel is ``trioforge_changes.<schema>``, an identifier of at
    most 63 bytes: a longer one would make every claim with jobs in it fail (the claim sends
    their change notice), so the backend refuses it."""
    PostgresBackend(URL, schema="s" * 45)
    with pytest.raises(trioforge.ConfigurationError, match="at most 45; pick a shorter"):
        PostgresBackend(URL, schema="s" * 46)
