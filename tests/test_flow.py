"""Flow control through the whole runtime: capabilities and queue rate limits on every
backend, and concurrency and rate limits as hypothesis properties in virtual time (memory
backend, MockClock)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import trioforge
from tests.support.fast import FAST
from tests.support.virtual import run_virtual
from trioforge import (
    ConcurrencyLimit,
    JobContext,
    JobState,
    Queue,
    RateLimit,
    Registry,
    VirtualClock,
)
from trioforge._core.flow import Bucket, drain, take_token
from trioforge.storage import Backend, MemoryBackend, ops

#: Long enough that nothing in these tests may wait for a poll: wake-ups must do it.
NEVER = 3600.0


@attrs.frozen
class Task:
    tenant: str
    seconds: int


def capability_registry() -> Registry:
    registry = Registry()

    @registry.job("render", requires={"gpu"})
    async def render(ctx: JobContext) -> str:
        return "rendered"

    @registry.job("plain")
    async def plain(ctx: JobContext) -> str:
        return "done"

    return registry


async def test_jobs_run_only_where_their_capabilities_are(database: str | Backend) -> None:
    registry = capability_registry()
    async with trioforge.open_runtime(registry, database=database, **FAST) as plain_rt:
        gpu_job = await plain_rt.enqueue("render")
        anywhere = await plain_rt.enqueue("render", requires=())
        needs_ffmpeg = await plain_rt.enqueue("plain", requires={"ffmpeg"})
        assert (await plain_rt.wait(anywhere)).status is JobState.COMPLETED
        await plain_rt.wait(await plain_rt.enqueue("plain"))  # the pool has had its chance
        assert (await plain_rt.get(gpu_job)).status is JobState.AVAILABLE
        assert (await plain_rt.get(needs_ffmpeg)).status is JobState.AVAILABLE
    capable = {"gpu", "ffmpeg"}
    async with trioforge.open_runtime(
        capability_registry(), database=database, capabilities=capable, **FAST
    ) as gpu_rt:
        assert (await gpu_rt.wait(gpu_job)).result == "rendered"
        assert (await gpu_rt.wait(needs_ffmpeg)).status is JobState.COMPLETED


@pytest.mark.parametrize("bad", ["gpu", [""], [3], 5])
async def test_bad_capabilities_are_refused(bad: object) -> None:
    with pytest.raises(trioforge.ConfigurationError, match=r"capabilit|requires"):
        capability_registry().job("x", requires=bad)  # type: ignore[arg-type]
    async with trioforge.open_client("memory://", registry=capability_registry()) as client:
        with pytest.raises(trioforge.InvalidArgumentError, match="requires"):
            await client.enqueue("plain", requires=bad)  # type: ignore[call-overload]
        assert await client.list() == []


def test_jobs_sharing_a_limit_must_agree_on_it() -> None:
    registry = Registry()
    registry.job("a", rate_limit=RateLimit("api", 5))
    registry.job("b", rate_limit=RateLimit("api", 5, key=lambda p: p))  # same settings
    with pytest.raises(trioforge.ConfigurationError, match="same settings"):
        registry.job("c", rate_limit=RateLimit("api", 6))
    with pytest.raises(trioforge.ConfigurationError, match="limit"):
        ConcurrencyLimit("a:b", 1)
    with pytest.raises(trioforge.ConfigurationError, match="burst"):
        RateLimit("r", 1, burst=0)


async def test_a_failing_key_function_refuses_the_enqueue() -> None:
    registry = Registry()

    @registry.job("t", concurrency=ConcurrencyLimit("tenant", 1, key=lambda p: p.tenant))
    async def t(ctx: JobContext, payload: Task) -> None:
        pass

    @registry.job("broken", concurrency=ConcurrencyLimit("b", 1, key=lambda p: p["missing"]))
    async def broken(ctx: JobContext, payload: dict[str, int]) -> None:
        pass

    async with trioforge.open_client("memory://", registry=registry) as client:
        with pytest.raises(trioforge.PayloadError, match="key function of limit 'b'"):
            await client.enqueue("broken", {"x": 1})
        job_id = await client.enqueue(
            "t", {"tenant": "acme", "seconds": 1}
        )  # as the handler sees it
        assert (await client.get(job_id)).status is JobState.AVAILABLE
        assert len(await client.list()) == 1


class CountingBackend(MemoryBackend):
    """The memory backend, counting the claims it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        self.claims += sum(isinstance(op, ops.Claim) for op in batch)
        return await super().execute(batch, now)


@given(
    limit=st.integers(min_value=1, max_value=3),
    workers=st.integers(min_value=1, max_value=8),
    tasks=st.lists(
        st.builds(Task, st.sampled_from("abc"), st.integers(min_value=1, max_value=5)),
        min_size=1,
        max_size=20,
    ),
)
@settings(deadline=None)
def test_a_concurrency_limit_holds_per_key_and_frees_at_once(
    limit: int, workers: int, tasks: list[Task]
) -> None:
    registry = Registry()
    spans: dict[int, tuple[str, float, float]] = {}
    clock_box: list[VirtualClock] = []

    @registry.job("t", concurrency=ConcurrencyLimit("tenant", limit, key=lambda p: p.tenant))
    async def run_task(ctx: JobContext, task: Task) -> None:
        start = clock_box[0].now()
        await trio.sleep(task.seconds)
        spans[ctx.job_id] = (task.tenant, start, clock_box[0].now())

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        clock_box.append(clock)
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": workers},
            poll_interval=NEVER,
        ) as rt:  # fmt: skip
            ids = await rt.enqueue_many("t", tasks)
            with trio.fail_after(sum(t.seconds for t in tasks) + 1):
                for job_id in ids:
                    assert (await rt.wait(job_id)).status is JobState.COMPLETED

    run_virtual(scenario)
    instants = sorted({s for _, s, _ in spans.values()})
    for at in instants:
        for tenant in "abc":
            running = [1 for t, s, e in spans.values() if t == tenant and s <= at < e]
            assert len(running) <= limit
    # Work-conserving: whenever a job started, a slot and its tenant's limit were free;
    # and no job waited while both were free (checked at every end).
    for tenant, _, end in spans.values():
        busy = sum(1 for _, s, e in spans.values() if s <= end < e)
        mine = sum(1 for t, s, e in spans.values() if t == tenant and s <= end < e)
        waiting = [j for j, (t, s, _) in spans.items() if t == tenant and s > end]
        if waiting and busy < workers:
            assert mine == limit


@given(
    rate=st.integers(min_value=1, max_value=20),
    per=st.sampled_from([0.5, 1.0, 2.0, 60.0]),
    burst=st.integers(min_value=1, max_value=5),
    jobs=st.integers(min_value=1, max_value=30),
    workers=st.integers(min_value=1, max_value=8),
)
@settings(deadline=None)
def test_a_rate_limit_starts_jobs_as_its_tokens_come_without_polling(
    rate: int, per: float, burst: int, jobs: int, workers: int
) -> None:
    registry = Registry()
    starts: list[float] = []
    clock_box: list[VirtualClock] = []
    limit = RateLimit("api", rate=rate, per=dt.timedelta(seconds=per), burst=burst)

    @registry.job("call", rate_limit=limit)
    async def call(ctx: JobContext, n: int) -> None:
        starts.append(clock_box[0].now())

    backend = CountingBackend()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        clock_box.append(clock)
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": workers},
            poll_interval=NEVER,
        ) as rt:  # fmt: skip
            t0 = clock.now()
            ids = await rt.enqueue_many("call", range(jobs))
            with trio.fail_after(jobs * per / rate + 1):
                for job_id in ids:
                    await rt.wait(job_id)
            starts[:] = [s - t0 for s in starts]

    run_virtual(scenario, backend)
    per_second = rate / per
    # The k-th start is when the k-th token exists: a burst at once, then one per refill.
    expected = [max(0.0, (k - burst + 1) / per_second) for k in range(jobs)]
    assert starts == pytest.approx(expected, abs=1e-5)
    for i, first in enumerate(starts):  # any window: at most rate * W + burst starts
        for j in range(i, jobs):
            # Up to 10 us of slack: epoch times round to ~0.2 us, and a token due within
            # a microsecond is taken (so a fetcher never spins at one instant).
            window = starts[j] - first + 1e-5
            assert j - i + 1 <= per_second * window + burst
    # Sleeping until each next token: about one claim per token time, no busy polling.
    assert backend.claims <= 2 * jobs + 2


def assert_within(starts: Sequence[float], limit: RateLimit) -> None:
    """In any window between two starts, at most ``rate/per * W + burst`` starts (with
    10 us of slack: epoch times round to ~0.2 us, and a token due within a microsecond
    is taken)."""
    starts = sorted(starts)
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            assert j - i + 1 <= limit.per_second * (starts[j] - first + 1e-5) + limit.burst


EMAILS = RateLimit("emails", rate=10, per=1, burst=3)
#: A job's own limit, within the queue's: its jobs start through both buckets.
DIGESTS = RateLimit("digests", rate=1, per=1, burst=2)


def mail_registry(starts: list[tuple[str, float]] | None = None, clock: Any = None) -> Registry:
    registry = Registry()

    @registry.job("mail", queue="emails")
    async def mail(ctx: JobContext, n: int) -> None:
        if starts is not None:
            starts.append(("mail", clock[0].now()))

    @registry.job("digest", queue="emails", rate_limit=DIGESTS)
    async def digest(ctx: JobContext, n: int) -> None:
        if starts is not None:
            starts.append(("digest", clock[0].now()))

    return registry


async def test_a_queue_rate_limit_holds_across_processes_for_jobs_enqueued_anywhere(
    shared: Any,
) -> None:
    registry = mail_registry()
    async with trioforge.open_client(shared, registry=registry) as client:  # no queue policy
        ids = await client.enqueue_many("mail", range(14))
        ids += await client.enqueue_many("digest", range(3))
    queues = {"emails": Queue(4, rate_limit=EMAILS)}
    async with (
        trioforge.open_runtime(registry, database=shared, queues=queues, owner="a", **FAST) as rt,
        trioforge.open_runtime(registry, database=shared, queues=queues, owner="b", **FAST),
    ):
        with trio.fail_after(30):
            infos = [await rt.wait(job_id) for job_id in ids]
    assert {info.status for info in infos} == {JobState.COMPLETED}
    # The claim's own instants, as stored: what the buckets were refilled by.
    starts = [info.started_at for info in infos if info.started_at is not None]
    assert len(starts) == len(ids)
    assert_within(starts, EMAILS)
    assert_within([i.started_at for i in infos if i.name == "digest" and i.started_at], DIGESTS)
    assert max(starts) - min(starts) >= (len(ids) - EMAILS.burst) / EMAILS.per_second - 1e-3


@given(
    rate=st.integers(min_value=1, max_value=10),
    per=st.sampled_from([0.5, 1.0, 2.0]),
    burst=st.integers(min_value=1, max_value=4),
    kinds=st.lists(st.sampled_from(["mail", "digest"]), min_size=1, max_size=24),
    workers=st.integers(min_value=1, max_value=6),
    replicas=st.integers(min_value=1, max_value=2),
)
@settings(deadline=None)
def test_a_queue_rate_limit_caps_all_its_jobs_in_virtual_time(
    rate: int, per: float, burst: int, kinds: list[str], workers: int, replicas: int
) -> None:
    limit = RateLimit("emails", rate=rate, per=per, burst=burst)
    starts: list[tuple[str, float]] = []
    clock_box: list[VirtualClock] = []
    registry = mail_registry(starts, clock_box)
    backend = CountingBackend()

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        clock_box.append(clock)
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            ids = [await client.enqueue(kind, n) for n, kind in enumerate(kinds)]
        t0 = clock.now()
        queues = {"emails": Queue(workers, rate_limit=limit)}
        async with trio.open_nursery() as nursery:
            runtimes = []
            for i in range(replicas):
                runtimes.append(
                    await nursery.start(replica, backend, clock, queues, f"r{i}")
                )  # fmt: skip
            bound = len(kinds) / limit.per_second + kinds.count("digest") + 1
            with trio.fail_after(bound):
                for job_id in ids:
                    assert (await runtimes[0].wait(job_id)).status is JobState.COMPLETED
            nursery.cancel_scope.cancel()
        starts[:] = [(kind, at - t0) for kind, at in starts]

    async def replica(
        backend: MemoryBackend,
        clock: VirtualClock,
        queues: dict[str, Queue],
        owner: str,
        *,
        task_status: trio.TaskStatus[trioforge.Runtime],
    ) -> None:
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues=queues, owner=owner,
            poll_interval=NEVER,
        ) as rt:  # fmt: skip
            task_status.started(rt)
            await trio.sleep_forever()

    run_virtual(scenario, backend)
    assert len(starts) == len(kinds)
    assert_within([at for _, at in starts], limit)
    assert_within([at for kind, at in starts if kind == "digest"], DIGESTS)
    if "digest" not in kinds:  # the k-th start is when the queue's k-th token exists
        expected = [max(0.0, (k - burst + 1) / limit.per_second) for k in range(len(kinds))]
        assert [at for _, at in starts] == pytest.approx(expected, abs=1e-5)
    assert backend.claims <= replicas * (2 * len(kinds) + 2)  # it sleeps until tokens come


@given(
    tokens=st.floats(-50, 3),
    at=st.floats(0, 100),
    now=st.floats(0, 200),
    retry_after=st.floats(0.01, 100),
)
def test_a_drained_bucket_holds_no_token_before_its_time(
    tokens: float, at: float, now: float, retry_after: float
) -> None:
    """Whatever the bucket held, after ``drain`` no token is taken before ``until``, one is
    at ``until`` (or at the bucket's own later time), and an earlier drain changes nothing."""
    limit = RateLimit("x", rate=2, per=1, burst=3)
    stored = Bucket(tokens, at)
    until = max(now, at) + retry_after
    drained = drain(stored, limit, now, until)
    _, when = take_token(drained, limit, now)
    assert when is not None
    assert when >= until - 1e-6
    later, got = take_token(drained, limit, when + 1e-9)
    assert got is None
    assert later.tokens >= 0
    assert drain(drained, limit, now, until - retry_after / 2) == drained
