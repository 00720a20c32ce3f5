"""Claiming ahead of free slots: the bound (pure) and the fetcher (virtual time).

The fetcher may claim more jobs than it has free slots (``trioforge._core.prefetch``); the
extra jobs wait in the workers' channel. These tests give claims a round trip of their own
(the memory backend answers at once otherwise, and nothing would be claimed ahead), then
check that everything a job was promised still holds: no more than the pool's size run at
once, every claimed job runs once or goes back, a cancel or a shutdown reaches a job that
waits, a resize strands nothing, and a timeout counts from the attempt's start.

Each hypothesis example is its own ``trio.run`` under ``MockClock(autojump_threshold=0)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import trioforge
from tests.support.virtual import run_virtual
from trioforge import ConcurrencyLimit, JobContext, JobState, RateLimit, Registry, VirtualClock
from trioforge._core.prefetch import SMOOTHING, ClaimPace, claim_ahead, claim_size
from trioforge.storage import MemoryBackend, ops

# --- the bound ------------------------------------------------------------------------

seconds = st.floats(min_value=0, max_value=100)
paces = st.builds(
    ClaimPace,
    duration=st.none() | seconds,
    round_trip=st.none() | st.floats(min_value=0, max_value=10),
    backlog=st.booleans(),
)
sizes = st.integers(min_value=0, max_value=100_000)


@given(paces, sizes)
def test_the_bound_is_a_round_trip_of_a_busy_pool_at_most_its_size(
    pace: ClaimPace, size: int
) -> None:
    ahead = claim_ahead(pace, size)
    assert 0 <= ahead <= size
    if not pace.backlog or pace.duration is None or pace.round_trip is None:
        assert ahead == 0  # no backlog, or nothing measured yet
    elif pace.duration == 0:
        assert ahead == size
    else:  # slots that free during one round trip, every slot busy
        slots = size * pace.round_trip / pace.duration
        assert ahead == (size if slots >= size else math.floor(slots))


def test_jobs_longer_than_a_pool_s_worth_of_round_trips_get_no_prefetch() -> None:
    pace = ClaimPace(duration=0.320, round_trip=0.005, backlog=True)
    assert claim_ahead(pace, 64) == 1
    assert claim_ahead(attrs.evolve(pace, duration=0.321), 64) == 0
    assert claim_ahead(attrs.evolve(pace, duration=0.001), 64) == 64


@given(paces, sizes, st.floats(min_value=1, max_value=100))
def test_the_bound_grows_with_the_round_trip_and_shrinks_with_the_duration(
    pace: ClaimPace, size: int, factor: float
) -> None:
    if pace.duration is not None:
        longer = attrs.evolve(pace, duration=pace.duration * factor)
        assert claim_ahead(longer, size) <= claim_ahead(pace, size)
    if pace.round_trip is not None:
        slower = attrs.evolve(pace, round_trip=pace.round_trip * factor)
        assert claim_ahead(slower, size) >= claim_ahead(pace, size)


@given(
    paces,
    st.integers(min_value=0, max_value=10_000),
    seconds,
    st.floats(min_value=0, max_value=10),
    st.booleans(),
)
def test_a_measurement_moves_the_pace_part_way_and_a_first_one_sets_it(
    pace: ClaimPace, done: int, busy: float, round_trip: float, filled: bool
) -> None:
    after = pace.observed(done=done, busy=busy, round_trip=round_trip, filled=filled)
    assert after.backlog is filled
    assert after.round_trip is not None
    if pace.round_trip is None:
        assert after.round_trip == round_trip
    else:
        expected = pace.round_trip + SMOOTHING * (round_trip - pace.round_trip)
        assert math.isclose(after.round_trip, expected, rel_tol=1e-9, abs_tol=1e-12)
    if not done:
        assert after.duration == pace.duration  # no job ended: nothing to measure
    elif pace.duration is None:
        assert after.duration == busy / done
    else:
        assert after.duration is not None
        low, high = sorted((pace.duration, busy / done))
        assert low * (1 - 1e-9) <= after.duration <= high * (1 + 1e-9)


@given(
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=3000),
    st.integers(min_value=0, max_value=1000),
)
def test_a_claim_fills_the_slots_free_at_its_return_and_a_round_trip_more(
    size: int, out: int, ahead: int
) -> None:
    """``out`` jobs held (running or waiting), ``ahead`` <= ``size`` as the bound gives."""
    ahead = min(ahead, size)
    free = size - out
    claim = claim_size(free, ahead, size)
    assert claim >= 0
    if ahead == 0:
        assert claim == max(free, 0)  # no prefetch: the free slots, as ever
    elif claim:
        # Jobs held beyond the slots: at most 2 x ahead at once, ahead once ahead ran.
        assert out + claim - size <= 2 * ahead
        assert claim <= size + ahead
        assert claim >= (ahead + 1) // 2  # never a claim for a handful while jobs wait
    if free > 0:
        assert claim >= free  # a free slot with nothing waiting is never left idle
    if ahead and out <= size + ahead // 2:
        assert claim > 0  # under half a round trip's jobs wait: the next claim goes out


# --- the fetcher ------------------------------------------------------------------------


class SlowClaims(MemoryBackend):
    """Every batch holding a claim takes ``round_trip`` seconds; records each claim's limit."""

    def __init__(self, round_trip: float) -> None:
        super().__init__()
        self.round_trip = round_trip
        self.limits: list[int] = []

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        claims = [op.limit for op in batch if isinstance(op, ops.Claim)]
        if claims:
            self.limits.extend(claims)
            await trio.sleep(self.round_trip)
        return await super().execute(batch, now)


@attrs.define
class Seen:
    """What the handlers saw: starts per tag, how many ran at once."""

    starts: dict[int, list[float]] = attrs.field(factory=dict)
    running: int = 0
    most: int = 0

    def start(self, tag: int) -> None:
        self.starts.setdefault(tag, []).append(trio.current_time())
        self.running += 1
        self.most = max(self.most, self.running)


@attrs.frozen
class Work:
    tag: int
    ms: int  # how long the handler takes


def timed_registry(
    seen: Seen,
    *,
    timeout: float | None = None,
    concurrency: ConcurrencyLimit | None = None,
    rate_limit: RateLimit | None = None,
) -> Registry:
    registry = Registry()

    @registry.job("work", timeout=timeout, concurrency=concurrency, rate_limit=rate_limit)
    async def work(ctx: JobContext, work: Work) -> None:
        seen.start(work.tag)
        try:
            await trio.sleep(work.ms / 1000)
        finally:
            seen.running -= 1

    return registry


def works(job_ms: Sequence[int]) -> list[Work]:
    return [Work(tag, ms) for tag, ms in enumerate(job_ms)]


durations_ms = st.lists(st.sampled_from([0, 0, 1, 2, 5, 30, 200]), min_size=1, max_size=40)
round_trips_ms = st.integers(min_value=1, max_value=20)


@given(durations_ms, st.integers(min_value=1, max_value=6), round_trips_ms)
@settings(deadline=None)
def test_a_drain_runs_each_job_once_and_never_more_than_the_pool_at_once(
    job_ms: list[int], size: int, round_trip_ms: int
) -> None:
    seen = Seen()
    registry = timed_registry(seen)
    backend = SlowClaims(round_trip_ms / 1000)
    infos: list[trioforge.JobInfo] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": size}
        ) as rt:
            ids = [ref.id for ref in await rt.enqueue_many("work", works(job_ms))]
            infos.extend([await rt.wait(job_id) for job_id in ids])

    run_virtual(scenario, backend)
    assert [(i.status, i.attempt) for i in infos] == [(JobState.COMPLETED, 1)] * len(job_ms)
    assert sorted(seen.starts) == list(range(len(job_ms)))
    assert all(len(starts) == 1 for starts in seen.starts.values())
    assert seen.most <= size


def test_short_jobs_are_claimed_ahead_and_drain_in_fewer_round_trips() -> None:
    """Instant jobs, 4 slots, claims of 10 ms: a claim for the free slots only would take
    100 round trips for 400 jobs; claiming ahead takes two thirds of that (claims of 8
    and 4 in turn: every job is done before the next claim returns)."""
    seen = Seen()
    registry = timed_registry(seen)
    backend = SlowClaims(0.010)
    elapsed: list[float] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            ids = [j.id for j in await client.enqueue_many("work", works([0] * 400))]
        t0 = trio.current_time()
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 4}
        ) as rt:
            for job_id in ids:
                await rt.wait(job_id)
            elapsed.append(trio.current_time() - t0)

    run_virtual(scenario, backend)
    assert max(backend.limits) == 8  # the pool and at most its size ahead
    assert elapsed[0] < 0.75
    assert seen.most <= 4


def test_long_jobs_are_never_claimed_ahead() -> None:
    """Jobs of a second on claims of 10 ms: a slot frees far less than once per round
    trip, so every claim asks for the free slots only."""
    seen = Seen()
    registry = timed_registry(seen)
    backend = SlowClaims(0.010)

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 4}
        ) as rt:
            ids = [ref.id for ref in await rt.enqueue_many("work", works([1000] * 40))]
            for job_id in ids:
                await rt.wait(job_id)

    run_virtual(scenario, backend)
    # One claim per slot freed or a few at once; never more than the pool.
    assert max(backend.limits) <= 4
    assert len(seen.starts) == 40


def test_a_queue_with_rate_limits_claims_for_its_free_slots_only() -> None:
    """A claim spends the job's token: none is held ahead, to start later than its token."""
    seen = Seen()
    registry = timed_registry(seen, rate_limit=RateLimit("r", 10_000, per=1, burst=10_000))
    backend = SlowClaims(0.010)

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            ids = [j.id for j in await client.enqueue_many("work", works([0] * 100))]
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 4}
        ) as rt:
            for job_id in ids:
                await rt.wait(job_id)

    run_virtual(scenario, backend)
    assert max(backend.limits) <= 4


@given(st.integers(min_value=1, max_value=4), round_trips_ms, durations_ms)
@settings(deadline=None)
def test_jobs_claimed_ahead_under_a_concurrency_limit_never_run_past_it(
    limit: int, round_trip_ms: int, job_ms: list[int]
) -> None:
    """A claimed job counts as running for its limit: one held ahead keeps a slot of the
    limit while it waits, and never lets more run than the limit."""
    seen = Seen()
    registry = timed_registry(seen, concurrency=ConcurrencyLimit("k", limit))
    backend = SlowClaims(round_trip_ms / 1000)
    infos: list[trioforge.JobInfo] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            ids = [j.id for j in await client.enqueue_many("work", works(job_ms))]
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 6}
        ) as rt:
            infos.extend([await rt.wait(job_id) for job_id in ids])

    run_virtual(scenario, backend)
    assert [(i.status, i.attempt) for i in infos] == [(JobState.COMPLETED, 1)] * len(job_ms)
    assert seen.most <= limit


def test_a_timeout_counts_from_the_attempt_s_start_not_its_claim() -> None:
    """5 ms jobs with a 7 ms timeout, one slot, claims of 10 ms: a job claimed ahead waits
    in the channel for the job before it, then has its whole 7 ms."""
    seen = Seen()
    registry = timed_registry(seen, timeout=0.007)
    backend = SlowClaims(0.010)
    infos: list[trioforge.JobInfo] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            ids = [j.id for j in await client.enqueue_many("work", works([5] * 60))]
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 1}
        ) as rt:
            infos.extend([await rt.wait(job_id) for job_id in ids])

    run_virtual(scenario, backend)
    assert max(backend.limits) == 2  # jobs were claimed ahead and waited
    assert [(i.status, i.attempt) for i in infos] == [(JobState.COMPLETED, 1)] * 60


@attrs.define
class Prefetched:
    """Instant jobs on one slot; each, as it starts, looks at the next job's state: running
    there means claimed here and waiting in the channel (one slot, and it is busy)."""

    ids: list[int] = attrs.field(factory=list)
    waiting: list[int] = attrs.field(factory=list)  # seen claimed but not started
    started: list[int] = attrs.field(factory=list)
    rt: trioforge.Runtime | None = None
    #: A client of the same database beside the runtime, as another process's would be.
    client: trioforge.Client | None = None
    backend: MemoryBackend | None = None
    seen_waiting: trio.Event = attrs.field(factory=trio.Event)
    #: Seconds a job that saw the next one waiting goes on running.
    linger: float = 0.0


def prefetch_registry(state: Prefetched, *, cancel: bool, elsewhere: bool = False) -> Registry:
    """Peeking jobs; with ``cancel``, the one seen waiting is cancelled by the runtime, or
    by the other client (``elsewhere``: it hears of it through a lease renewal)."""
    registry = Registry()

    @registry.job("peek")
    async def peek(ctx: JobContext, index: int) -> None:
        state.started.append(index)
        assert state.rt is not None
        if index + 1 < len(state.ids):
            following = await state.rt.get(state.ids[index + 1])
            if following.status is JobState.RUNNING and index + 1 not in state.started:
                state.waiting.append(index + 1)
                state.seen_waiting.set()
                if cancel:
                    canceller = state.client if elsewhere else state.rt
                    assert canceller is not None
                    assert await canceller.cancel(state.ids[index + 1])
                await trio.sleep(state.linger)

    return registry


def drain_on_one_slot(
    registry: Registry, state: Prefetched, jobs: int, round_trip: float
) -> list[trioforge.JobInfo]:
    """``jobs`` peeking jobs run on one slot, claims taking ``round_trip`` seconds: each
    one's final state. The enqueuing client stays open beside the runtime (``state``)."""
    infos: list[trioforge.JobInfo] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        state.backend = backend
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            state.client = client
            refs = await client.enqueue_many("peek", list(range(jobs)))
            state.ids = [ref.id for ref in refs]
            async with trioforge.open_runtime(
                registry, database=backend, clock=clock, queues={"default": 1}
            ) as rt:
                state.rt = rt
                infos.extend([await rt.wait(job_id) for job_id in state.ids])

    run_virtual(scenario, SlowClaims(round_trip))
    return infos


@given(st.integers(min_value=2, max_value=40), round_trips_ms)
@settings(deadline=None)
def test_a_job_cancelled_while_claimed_ahead_ends_cancelled_without_running(
    jobs: int, round_trip_ms: int
) -> None:
    state = Prefetched()
    registry = prefetch_registry(state, cancel=True)
    infos = drain_on_one_slot(registry, state, jobs, round_trip_ms / 1000)
    for index, info in enumerate(infos):
        if index in state.waiting:
            assert (info.status, index in state.started) == (JobState.CANCELLED, False)
        else:
            assert (info.status, info.attempt) == (JobState.COMPLETED, 1)
    assert len(state.started) == len(set(state.started))
    if jobs >= 4:  # from the second claim on, one job waits behind the running one
        assert state.waiting


@given(st.integers(min_value=3, max_value=40), round_trips_ms, st.integers(1, 30))
@settings(deadline=None)
def test_shutdown_releases_jobs_claimed_ahead_and_runs_none_twice(
    jobs: int, round_trip_ms: int, stop_after: int
) -> None:
    """The runtime leaves while a job may wait in the channel: each job either ran once
    and completed or went back to ``available`` without an attempt counted."""
    state = Prefetched()
    registry = prefetch_registry(state, cancel=False)
    infos: list[trioforge.JobInfo] = []
    stop_after = min(stop_after, jobs - 1)

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            refs = await client.enqueue_many("peek", list(range(jobs)))
            state.ids = [ref.id for ref in refs]
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 1}
        ) as rt:
            state.rt = rt
            await rt.wait(state.ids[stop_after - 1])
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            infos.extend([await client.get(job_id) for job_id in state.ids])

    run_virtual(scenario, SlowClaims(round_trip_ms / 1000))
    assert len(state.started) == len(set(state.started))
    for index, info in enumerate(infos):
        if index in state.started:
            assert (info.status, info.attempt) == (JobState.COMPLETED, 1)
        else:
            assert (info.status, info.attempt) == (JobState.AVAILABLE, 0)


def test_shutdown_releases_a_job_seen_waiting_in_the_channel() -> None:
    state = Prefetched(linger=0.005)
    registry = prefetch_registry(state, cancel=False)
    infos: list[trioforge.JobInfo] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            state.ids = [ref.id for ref in await client.enqueue_many("peek", list(range(20)))]
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 1}
        ) as rt:
            state.rt = rt
            # Leave while the job seen waiting waits behind the one that saw it.
            await state.seen_waiting.wait()
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            infos.extend([await client.get(job_id) for job_id in state.ids])

    run_virtual(scenario, SlowClaims(0.010))
    waiting = state.waiting[0]
    assert waiting not in state.started
    assert (infos[waiting].status, infos[waiting].attempt) == (JobState.AVAILABLE, 0)


resizes = st.lists(
    st.tuples(st.integers(min_value=0, max_value=50), st.integers(min_value=0, max_value=6)),
    max_size=6,
)


@given(durations_ms, st.integers(min_value=1, max_value=6), round_trips_ms, resizes)
@settings(deadline=None)
def test_resizing_while_jobs_wait_strands_none_and_runs_none_twice(
    job_ms: list[int], size: int, round_trip_ms: int, plan: list[tuple[int, int]]
) -> None:
    """Resizes at chosen moments (the last one to a size of at least 1, so the queue
    drains): every job completes once, and no more run at once than the largest size."""
    seen = Seen()
    registry = timed_registry(seen)
    infos: list[trioforge.JobInfo] = []
    plan = [*plan, (plan[-1][0] + 1 if plan else 0, max(1, size))]

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            ids = [ref.id for ref in await client.enqueue_many("work", works(job_ms))]
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": size}
        ) as rt:
            t0 = trio.current_time()
            for at_ms, new_size in plan:
                await trio.sleep_until(t0 + at_ms / 1000)
                rt.resize("default", new_size)
            infos.extend([await rt.wait(job_id) for job_id in ids])

    run_virtual(scenario, SlowClaims(round_trip_ms / 1000))
    assert [(i.status, i.attempt) for i in infos] == [(JobState.COMPLETED, 1)] * len(job_ms)
    assert all(len(starts) == 1 for starts in seen.starts.values())
    assert seen.most <= max([size] + [s for _, s in plan])


def test_a_cancel_from_another_process_reaches_a_job_claimed_ahead() -> None:
    """A cancel requested by another client reaches a worker through its lease renewal
    (SQLite and memory send no notice): a job claimed ahead, waiting in the channel, must
    take it as well as a running one, and end cancelled without running."""
    state = Prefetched(linger=60.0)  # past a heartbeat or two
    registry = prefetch_registry(state, cancel=True, elsewhere=True)
    infos = drain_on_one_slot(registry, state, 6, 0.005)
    assert state.waiting
    for index in state.waiting:
        assert index not in state.started, "a job cancelled while it waited ran"
        assert infos[index].status is JobState.CANCELLED


def test_a_pool_resized_to_0_while_its_claim_is_out_hands_the_claimed_jobs_back() -> None:
    """No worker would ever take them, and their renewed leases would keep them from every
    other process."""
    seen = Seen()
    registry = timed_registry(seen)
    states: list[JobState] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            ids = [ref.id for ref in await client.enqueue_many("work", works([0] * 4))]
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 4}
        ) as rt:
            await trio.sleep(0.05)  # the first claim (0.5 s) is out
            rt.resize("default", 0)
            await trio.sleep(120)
            for job_id in ids:
                info = await rt.get(job_id)
                assert info is not None
                states.append(info.status)

    run_virtual(scenario, SlowClaims(0.5))
    assert seen.starts == {}
    assert states == [JobState.AVAILABLE] * 4


def test_a_grow_while_a_claim_is_out_after_a_shrink_never_runs_past_the_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers still on their way out after a shrink stay when the pool grows back, also
    when the claim's jobs are handed out before the fetcher reads the grow: new workers
    beside them would run more jobs than the size."""
    from trioforge.actors import queue

    monkeypatch.setattr(queue, "claim_ahead", lambda pace, size: min(2, size))
    seen = Seen()
    registry = timed_registry(seen)

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        async with trioforge.open_client(backend, clock=clock, registry=registry) as client:
            await client.enqueue_many("work", works([100_000] * 5))
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 4}, poll_interval=5.0
        ) as rt:
            start = trio.current_time()
            await trio.sleep(1.5)  # 4 running, 1 waiting
            rt.resize("default", 2)
            await trio.sleep(0.1)
            await rt.enqueue_many("work", works([100_000] * 3))
            await trio.sleep_until(start + 2.0)  # the next claim is out
            rt.resize("default", 4)
            await trio.sleep(15)

    run_virtual(scenario, SlowClaims(1.0))
    assert seen.most <= 4


def test_a_job_whose_lease_is_lost_while_it_waits_is_not_run_on_that_lease() -> None:
    """Its lease lost while it waited (another process took the job, here: the jobs of this
    owner it does not hold handed back), the job is that process's now: the worker that
    finds it in the channel must not run it. Here the job goes back to available, so this
    process claims it again and it runs once, on its new lease."""
    state = Prefetched()
    registry = Registry()

    @registry.job("peek")
    async def peek(ctx: JobContext, index: int) -> None:
        state.started.append(index)
        assert state.rt is not None
        if not state.waiting and index + 1 < len(state.ids):
            following = await state.rt.get(state.ids[index + 1])
            assert following is not None
            if following.status is JobState.RUNNING:  # claimed ahead, waiting
                job = ctx._job
                held = ((job.id, job.lease),)
                op = ops.ReleaseOrphans(job.queue, ctx._owner, held)
                assert state.backend is not None
                [released] = await state.backend.execute([op], trio.current_time())
                assert isinstance(released, list)
                state.waiting.extend(state.ids.index(job_id) for job_id in released)
                await trio.sleep(10)  # past a lease renewal, which finds the lease lost

    infos = drain_on_one_slot(registry, state, 8, 0.005)
    assert state.waiting  # at least the one seen waiting
    assert sorted(state.started) == list(range(8))  # each once: the lost lease ran nothing
    assert [info.status for info in infos] == [JobState.COMPLETED] * 8
