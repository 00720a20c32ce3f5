"""PostgreSQL decides a flow-controlled claim in the server (storage/postgres.py); the other
backends ask FlowGate (core/flow.py). The same random histories of enqueues, claims
and outcomes run on both must claim the same jobs and report the same hold-backs."""

from __future__ import annotations

from typing import Any

import attrs
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.contract.test_contract import T0, job, one
from tests.support.postgres import drop_schema, fresh_backend
from trioforge import ConcurrencyLimit, RateLimit
from trioforge._core.flow import JobLimits
from trioforge._core.states import Released, Succeeded
from trioforge.storage import Backend, ClaimedJob, MemoryBackend, Outcome, opened, ops

rate_limits = st.builds(
    RateLimit,
    name=st.just("r"),
    rate=st.sampled_from([0.5, 1.0, 3.0]),
    per=st.just(1.0),
    burst=st.integers(min_value=1, max_value=3),
)
concurrency_limits = st.builds(
    ConcurrencyLimit, name=st.just("k"), limit=st.integers(min_value=1, max_value=2)
)
limits_by_name = st.fixed_dictionaries(
    {
        "a": st.builds(JobLimits, st.none() | rate_limits, concurrency_limits),
        "b": st.builds(JobLimits, st.none() | rate_limits, st.none() | concurrency_limits),
    }
)
# A job: its name ("c" has no limits), priority, rate key and concurrency key.
new_jobs = st.tuples(
    st.sampled_from("abc"),
    st.integers(min_value=0, max_value=2),
    st.sampled_from([None, "r:x", "r:y"]),
    st.sampled_from([None, "k:x", "k:x", "k:y"]),
)
# A claim (how many, seconds later, whether the claimer's oldest attempt has ended) or an
# outcome (which running attempt, whether it is released rather than completed).
steps = st.lists(
    st.tuples(st.just("claim"), st.integers(1, 4), st.sampled_from([0.0, 0.3, 1.0]), st.booleans())
    | st.tuples(st.just("end"), st.integers(0, 7), st.booleans(), st.booleans()),
    min_size=1,
    max_size=12,
)


async def replay(
    backend: Backend, limits: Any, jobs: list[tuple[Any, ...]], history: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """What each claim of ``history`` returned, with jobs named by their enqueue order."""
    new = [
        attrs.evolve(job(name, priority=p), rate_key=r, concurrency_key=c) for name, p, r, c in jobs
    ]
    enqueued = await one(backend, ops.Enqueue(tuple(new)), T0)
    order = {e.id: i for i, e in enumerate(enqueued)}
    running: list[ClaimedJob] = []
    now, seen = T0, []
    for step in history:
        if step[0] == "claim":
            _, n, later, one_ended = step
            now += later
            ending = frozenset({(running[0].id, running[0].lease)} if one_ended and running else ())
            op = ops.Claim("q", frozenset("abc"), n, "w1", now + 60, frozenset(), limits, ending)
            result = await one(backend, op, now)
            running += result.jobs
            claimed = [order[j.id] for j in result.jobs]
            seen.append((claimed, result.held, result.next_token_at, result.next_run_at))
        elif running:
            _, index, released, _ = step
            attempt = running.pop(index % len(running))
            event = Released() if released else Succeeded()
            outcome = Outcome(attempt.id, attempt.lease, event)
            assert await one(backend, ops.Finish((outcome,)), now) == [True]
    return seen


@settings(max_examples=30)
@given(limits=limits_by_name, jobs=st.lists(new_jobs, min_size=1, max_size=12), history=steps)
def test_the_postgresql_claim_decides_as_flowgate(
    limits: Any, jobs: list[tuple[Any, ...]], history: list[tuple[Any, ...]]
) -> None:
    async def both() -> None:
        pg = fresh_backend()
        try:
            async with opened(pg):
                in_sql = await replay(pg, limits, jobs, history)
        finally:
            assert pg.schema is not None
            await drop_schema(pg.schema)
        async with opened(MemoryBackend()) as memory:
            assert in_sql == await replay(memory, limits, jobs, history)

    trio.run(both)
