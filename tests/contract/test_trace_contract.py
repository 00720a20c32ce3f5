"""The storage contract for trace contexts: stored with a job by every path that inserts
one, handed back with every claim of it; a job stored without one has none."""

from __future__ import annotations

import json

import attrs

from tests.contract.test_contract import T0, claim, enqueue, finish, job, one
from trioforge import ConcurrencyLimit
from trioforge._core.flow import JobLimits
from trioforge._core.states import Failed, Suspended
from trioforge.storage import (
    Backend,
    ClaimResult,
    NewJob,
    Outcome,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
    ops,
)

#: What the client stores: the W3C headers as a JSON object (the backends keep the text).
CONTEXT = json.dumps(
    {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=opaque,other=é",
    }
)
OTHER = json.dumps({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})


def traced(new: NewJob, context: str | None = CONTEXT) -> NewJob:
    return attrs.evolve(new, trace_context=context)


def contexts(result: ClaimResult) -> dict[int, str | None]:
    return {j.id: j.trace_context for j in result.jobs}


async def test_a_claim_hands_back_each_jobs_own_context_and_none_without(
    backend: Backend,
) -> None:
    with_context, without, other = await enqueue(
        backend, traced(job()), job(), traced(job(), OTHER)
    )
    assert contexts(await claim(backend)) == {with_context: CONTEXT, without: None, other: OTHER}


async def test_keyed_enqueues_store_the_context_too(backend: Backend) -> None:
    keyed, plain = await enqueue(backend, traced(job(key="k")), job(key="k2"))
    [again] = await enqueue(backend, traced(job(key="k"), OTHER))  # held: nothing new stored
    assert again == keyed
    assert contexts(await claim(backend)) == {keyed: CONTEXT, plain: None}


async def test_every_attempt_gets_the_context_stored_at_enqueue(backend: Backend) -> None:
    [job_id] = await enqueue(backend, traced(job()))
    [first] = (await claim(backend)).jobs
    failed = Outcome(first.id, first.lease, Failed(T0 + 5), error="boom")
    assert await finish(backend, first, failed, T0 + 1)
    [second] = (await claim(backend, T0 + 5)).jobs
    assert (second.id, second.attempt, second.trace_context) == (job_id, 2, CONTEXT)


async def test_a_flow_controlled_claim_hands_back_the_context(backend: Backend) -> None:
    [job_id] = await enqueue(backend, traced(attrs.evolve(job(), concurrency_key="c")))
    limits = {"a": JobLimits(None, ConcurrencyLimit("c", 1))}
    op = ops.Claim("q", frozenset({"a"}), 10, "w1", T0 + 30, frozenset(), limits)
    result: ClaimResult = await one(backend, op)
    assert contexts(result) == {job_id: CONTEXT}


async def test_a_child_started_by_a_run_keeps_its_context(backend: Backend) -> None:
    [run_id] = await enqueue(backend, NewJob("a", "q", "{}", 10, T0, 3, workflow=True))
    [parent] = (await claim(backend, limit=1)).jobs
    child = traced(NewJob("b", "q", "{}", 10, T0, 3, parent_id=run_id), OTHER)
    step = StepRecord(0, StepKind.CHILD, "b", StepStatus.COMPLETED, 1)
    written: StepWrite = await one(backend, ops.RecordStep(run_id, parent.lease, step, None, child))
    await finish(backend, parent, Outcome(run_id, parent.lease, Suspended(1e15)), T0 + 1)
    [started] = (await claim(backend, T0 + 2)).jobs
    assert (started.id, started.trace_context) == (written.child_id, OTHER)
