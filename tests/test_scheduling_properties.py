"""Property tests of scheduling semantics, whole runtime, virtual time, memory backend.

Each hypothesis example is its own ``trio.run`` under ``MockClock(autojump_threshold=0)``,
so virtual time is exact: a job due at t starts at t, not merely "around" t.
"""

from __future__ import annotations

import itertools
import math
from typing import cast

import attrs
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import trioforge
from tests.support.strategies import delays, priorities, retry_policies
from tests.support.virtual import run_virtual
from trioforge import JobContext, JobState, Priority, Registry, Retry, VirtualClock
from trioforge._core.retry import backoff_delay
from trioforge._core.states import Succeeded
from trioforge.storage import ClaimResult, Enqueued, MemoryBackend, NewJob, Outcome, ops

EXACT = 1e-6


@attrs.define
class Recorder:
    """What handlers saw, keyed by payload tag."""

    starts: dict[int, list[tuple[int, float]]] = attrs.field(factory=dict)
    order: list[int] = attrs.field(factory=list)
    ended: dict[int, float] = attrs.field(factory=dict)


REC = Recorder()
CLOCK: list[VirtualClock] = []


def now() -> float:
    return CLOCK[0].now()


async def record(ctx: JobContext, tag: int) -> None:
    REC.order.append(tag)
    REC.starts.setdefault(tag, []).append((ctx.attempt, now()))


async def fail_first(ctx: JobContext, fails: int) -> str:
    REC.starts.setdefault(0, []).append((ctx.attempt, now()))
    if ctx.attempt <= fails:
        raise ConnectionError(f"attempt {ctx.attempt} fails")
    return "ok"


async def hang(ctx: JobContext, tag: int) -> None:
    REC.starts.setdefault(tag, []).append((ctx.attempt, now()))
    try:
        await trio.sleep_forever()
    finally:
        REC.ended[tag] = now()


def fresh(clock: VirtualClock) -> None:
    global REC
    REC = Recorder()
    CLOCK[:] = [clock]


@given(
    st.lists(st.tuples(priorities, st.integers(min_value=0, max_value=3)), min_size=1, max_size=25)
)
@settings(deadline=None)
def test_claims_follow_priority_then_run_at_then_enqueue_order(
    specs: list[tuple[Priority, int]],
) -> None:
    registry = Registry()
    job = registry.job("record")(record)

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        fresh(clock)
        t0 = clock.now()
        # Enqueue everything first (all due, some overdue), then let one worker drain.
        async with trioforge.open_client(backend, clock=clock) as client:
            ids = [
                await client.enqueue(job, i, priority=p, run_at=t0 - ago)
                for i, (p, ago) in enumerate(specs)
            ]
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": 1}
        ) as rt:
            for job_id in ids:
                await rt.wait(job_id)

    run_virtual(scenario)
    expected = sorted(range(len(specs)), key=lambda i: (-specs[i][0], -specs[i][1], i))
    assert expected == REC.order


@given(st.lists(delays, min_size=1, max_size=15))
@settings(deadline=None)
def test_a_job_never_starts_early_and_an_idle_pool_starts_it_on_time(
    job_delays: list[float],
) -> None:
    registry = Registry()
    job = registry.job("record")(record)
    due: dict[int, float] = {}

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        fresh(clock)
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues={"default": len(job_delays)}
        ) as rt:
            ids = []
            for tag, delay in enumerate(job_delays):
                due[tag] = clock.now() + delay
                ids.append(await rt.enqueue(job, tag, delay=delay))
            for job_id in ids:
                assert (await rt.wait(job_id)).status is JobState.COMPLETED

    run_virtual(scenario)
    for tag, [(attempt, started)] in REC.starts.items():
        assert attempt == 1
        assert started >= due[tag]
        assert started - due[tag] < EXACT


@given(retry_policies, st.integers(min_value=0, max_value=7))
@settings(deadline=None)
def test_attempts_are_bounded_and_spaced_by_the_backoff_formula(policy: Retry, fails: int) -> None:
    registry = Registry()
    job = registry.job("flaky", retry=policy)(fail_first)
    final: list[trioforge.JobInfo] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        fresh(clock)
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            final.append(await rt.wait(await rt.enqueue(job, fails)))

    run_virtual(scenario)
    attempts = REC.starts[0]
    expected_runs = min(fails + 1, policy.max_attempts)
    assert [a for a, _ in attempts] == list(range(1, expected_runs + 1))
    for (n, t), (_, t_next) in itertools.pairwise(attempts):
        assert math.isclose(t_next - t, backoff_delay(policy, n), abs_tol=EXACT)
    info = final[0]
    assert info.attempt == expected_runs
    if fails < policy.max_attempts:
        assert (info.status, info.result) == (JobState.COMPLETED, "ok")
    else:
        assert info.status is JobState.DEAD
        assert "ConnectionError" in (info.error or "")


@given(delays, delays)
@settings(deadline=None)
def test_cancel_stops_a_running_job_at_that_instant_and_never_retries_it(
    start_delay: float, cancel_at: float
) -> None:
    registry = Registry()
    job = registry.job("hang", retry=Retry(max_attempts=5, base_delay=0))(hang)
    final: list[trioforge.JobInfo] = []
    t0: list[float] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        fresh(clock)
        async with trioforge.open_runtime(registry, database=backend, clock=clock) as rt:
            t0.append(clock.now())
            job_id = await rt.enqueue(job, 1, delay=start_delay)
            await trio.sleep(cancel_at)
            assert await rt.cancel(job_id)
            final.append(await rt.wait(job_id))

    run_virtual(scenario)
    info = final[0]
    assert info.status is JobState.CANCELLED
    cancelled_at = t0[0] + cancel_at
    if cancel_at < start_delay:  # still pending: it never runs
        assert REC.starts == {}
        assert info.attempt == 0
    elif cancel_at > start_delay:
        assert REC.starts[1] == [(1, t0[0] + start_delay)]  # ran once, never retried
        assert math.isclose(REC.ended[1], cancelled_at, abs_tol=EXACT)
        assert info.attempt == 1
    else:  # cancelled in the instant it was claimed: it may not have entered the handler
        assert REC.starts.get(1, [(1, cancelled_at)]) == [(1, cancelled_at)]
        assert math.isclose(REC.ended.get(1, cancelled_at), cancelled_at, abs_tol=EXACT)
        assert info.attempt <= 1


@given(st.integers(min_value=1, max_value=120), st.integers(min_value=1, max_value=3))
@settings(deadline=None)
def test_a_job_whose_owner_vanished_is_rescued_once_its_lease_expires(
    lease: int, max_attempts: int
) -> None:
    registry = Registry()
    registry.job("record", retry=Retry(max_attempts=max_attempts))(record)
    final: list[trioforge.JobInfo] = []
    stale_write: list[object] = []
    claimed_at: list[float] = []

    async def scenario(backend: MemoryBackend, clock: VirtualClock) -> None:
        fresh(clock)
        new = NewJob("record", "default", "7", 10, clock.now(), max_attempts)
        [enqueued_list, claim] = await backend.execute(
            [
                ops.Enqueue((new,)),
                ops.Claim("default", {"record"}, 1, "ghost", clock.now() + lease),
            ],
            clock.now(),
        )
        [enqueued] = cast(list[Enqueued], enqueued_list)
        claimed_at.append(clock.now())
        [ghost_job] = cast(
            ClaimResult, claim
        ).jobs  # claimed by a worker that then died without a trace
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, heartbeat_interval=1.0, lease_seconds=10.0
        ) as rt:
            final.append(await rt.wait(enqueued.id))
            late = Outcome(ghost_job.id, ghost_job.lease, Succeeded(), result='"ghost"')
            stale_write.extend(await backend.execute([ops.Finish((late,))], clock.now()))

    run_virtual(scenario)
    info = final[0]
    assert stale_write == [[False]]  # the dead owner's late write is fenced off
    if max_attempts == 1:
        assert info.status is JobState.DEAD
        assert REC.starts == {}
    else:
        assert info.status is JobState.COMPLETED
        assert info.result is None
        [(attempt, started)] = REC.starts[7]
        assert attempt == 2
        # rescued on the first reaper pass at or after expiry (reaper runs every second)
        assert claimed_at[0] + lease <= started <= claimed_at[0] + lease + 1.0 + EXACT
