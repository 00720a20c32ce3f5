"""Model-based test: whole scenarios in virtual time against the pure reference model.

A scenario is a set of jobs with a delay, a behaviour (succeed, fail k times, discard,
hang past the timeout) and maybe a cancel at some moment. The model below computes, from
the rules in ``trioforge._rules`` alone, when every attempt must start and how every job
must end; the runtime runs the same scenario on the memory backend under MockClock, and
the recorded trace must equal the model exactly. Event times are whole seconds and cancels
land on half seconds, so no two events tie.

Profiles: ``make test`` runs a fast one; ``make test-deep`` (HYPOTHESIS_PROFILE=deep) runs
thousands of examples.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import trio
from hypothesis import given
from hypothesis import strategies as st

import trioforge
from trioforge import JobContext, JobState, Retry
from trioforge._rules import backoff_delay, failure_outcome
from trioforge.testing import open_test_runtime, run

Behaviour = Literal["ok", "fail", "discard", "hang"]
TIMEOUT = 7.0  # seconds a hanging attempt lasts before it times out


@attrs.frozen
class Spec:
    delay: int
    behaviour: Behaviour
    fails: int  # for "fail": attempts that fail before one succeeds
    cancel_at: float | None  # seconds after the start of the scenario


@attrs.frozen
class Expected:
    starts: tuple[float, ...]
    status: JobState


def model(spec: Spec, retry: Retry) -> Expected:
    """When each attempt starts and how the job ends, from the rules alone."""
    starts: list[float] = []
    t = float(spec.delay)
    cancel = math.inf if spec.cancel_at is None else spec.cancel_at
    attempt = 0
    while True:
        if cancel < t:  # cancelled while pending (before the first attempt or in backoff)
            return Expected(tuple(starts), JobState.CANCELLED)
        attempt += 1
        starts.append(t)
        duration = TIMEOUT if spec.behaviour == "hang" else 0.0
        if cancel < t + duration:  # cancelled while running
            return Expected(tuple(starts), JobState.CANCELLED)
        if spec.behaviour == "ok" or (spec.behaviour == "fail" and attempt > spec.fails):
            return Expected(tuple(starts), JobState.COMPLETED)
        if spec.behaviour == "discard":
            return Expected(tuple(starts), JobState.DEAD)
        error: BaseException = TimeoutError() if spec.behaviour == "hang" else ConnectionError()
        outcome = failure_outcome(retry, attempt, error, now=t + duration)
        if outcome.retry_at is None:
            return Expected(tuple(starts), JobState.DEAD)
        assert outcome.retry_at == t + duration + backoff_delay(retry, attempt)
        t = outcome.retry_at


specs = st.builds(
    Spec,
    delay=st.integers(0, 30),
    behaviour=st.sampled_from(["ok", "fail", "discard", "hang"]),
    fails=st.integers(0, 4),
    cancel_at=st.none() | st.integers(0, 80).map(lambda s: s + 0.5),
)
policies = st.builds(
    Retry,
    max_attempts=st.integers(1, 4),
    base_delay=st.integers(0, 10),
    max_delay=st.integers(0, 20),
)


@given(st.lists(specs, min_size=1, max_size=8), policies)
def test_scenarios_follow_the_reference_model(scenario: list[Spec], retry: Retry) -> None:
    registry = trioforge.Registry()
    starts: dict[int, list[float]] = {}
    clock0: list[float] = []

    @registry.job("work", retry=retry, timeout=TIMEOUT)
    async def work(ctx: JobContext, index: int) -> None:
        spec = scenario[index]
        starts.setdefault(index, []).append(trio.current_time() - clock0[0])
        assert ctx.attempt == len(starts[index])
        if spec.behaviour == "hang":
            await trio.sleep_forever()
        if spec.behaviour == "discard":
            raise trioforge.Discard("model says so")
        if spec.behaviour == "fail" and ctx.attempt <= spec.fails:
            raise ConnectionError("model says so")

    async def main() -> list[trioforge.JobInfo]:
        async with open_test_runtime(registry, queues={"default": len(scenario)}) as rt:
            clock0.append(trio.current_time())
            ids = [await rt.enqueue(work, i, delay=s.delay) for i, s in enumerate(scenario)]

            async def cancel_later(job_id: int, at: float) -> None:
                await trio.sleep_until(clock0[0] + at)
                await rt.cancel(job_id)

            async with trio.open_nursery() as nursery:
                for job_id, spec in zip(ids, scenario, strict=True):
                    if spec.cancel_at is not None:
                        nursery.start_soon(cancel_later, job_id, spec.cancel_at)
            return [await rt.wait(job_id) for job_id in ids]

    final = run(main)
    for index, (spec, info) in enumerate(zip(scenario, final, strict=True)):
        expected = model(spec, retry)
        assert tuple(starts.get(index, ())) == expected.starts, (index, spec)
        assert info.status is expected.status, (index, spec)
        assert info.attempt == len(expected.starts), (index, spec)  # never more than allowed
