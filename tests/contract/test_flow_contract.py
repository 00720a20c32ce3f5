"""The storage contract for per-job policy and flow control, on every backend."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from tests.contract.test_contract import T0, claim, enqueue, finish, get, job, one
from tests.contract.test_counts_contract import _check as check_counts
from trioforge import ConcurrencyLimit, JobState, RateLimit
from trioforge._core.flow import JobLimits
from trioforge._core.states import Cancelled, Released, Succeeded
from trioforge.storage import Backend, ClaimResult, NewJob, Outcome, ops


async def test_a_per_enqueue_timeout_and_max_attempts_reach_the_claim(backend: Backend) -> None:
    plain, timed = await enqueue(
        backend, job(max_attempts=3), attrs.evolve(job(max_attempts=1), timeout=2.5)
    )
    claimed = {j.id: j for j in (await claim(backend)).jobs}
    assert (claimed[plain].timeout, claimed[plain].max_attempts) == (None, 3)
    assert (claimed[timed].timeout, claimed[timed].max_attempts) == (2.5, 1)
    assert (await get(backend, timed)).max_attempts == 1


async def test_timeouts_survive_enqueue_with_idempotency_keys(backend: Backend) -> None:
    [keyed] = await enqueue(backend, attrs.evolve(job(key="k"), timeout=0.25))
    [claimed] = (await claim(backend, T0)).jobs
    assert (claimed.id, claimed.timeout) == (keyed, 0.25)


#: Floats at the edges of what a double holds, and ones whose shortest text has 17 digits.
EDGE_FLOATS = [5e-324, 1e-300, 0.1, 1 / 3, 1_733_380_000.123456, 1e15, 1.0000000000000002e200]
HUGE = 1.7976931348623157e308


async def test_a_claim_hands_back_times_timeouts_and_text_exactly_as_stored(
    backend: Backend,
) -> None:
    """However the backend carries a claim's rows back (a carriage through JSON text, say,
    loses float digits unless it takes care)."""
    odd = 'q\u00e9"\\\x01\u2028'  # a quote, a backslash, a control character, U+2028
    jobs = [
        attrs.evolve(job(name=odd, queue=odd, payload='{"s":"\\u00e9\\n"}', run_at=x),
                     timeout=t, trace_context=odd)
        for x in [0.0, *EDGE_FLOATS]
        for t in [None, HUGE, *EDGE_FLOATS]
    ]  # fmt: skip
    ids = await enqueue(backend, *jobs)
    result = await claim(backend, HUGE, limit=len(jobs), queue=odd, names=frozenset({odd}))
    got = {
        j.id: (j.name, j.queue, j.payload, j.run_at, j.timeout, j.trace_context)
        for j in result.jobs
    }
    assert got == {
        i: (odd, odd, j.payload, j.run_at, j.timeout, odd) for i, j in zip(ids, jobs, strict=True)
    }


def limited(*, rate: RateLimit | None = None, concurrency: ConcurrencyLimit | None = None) -> Any:
    return {"a": JobLimits(rate, concurrency), "b": JobLimits(rate, concurrency)}


async def flow_claim(
    backend: Backend,
    now: float = T0,
    *,
    limits: Any = None,
    limit: int = 10,
    owner: str = "w1",
    capabilities: frozenset[str] = frozenset(),
    ending: frozenset[tuple[int, int]] = frozenset(),
    queue_rate: RateLimit | None = None,
) -> ClaimResult:
    op = ops.Claim(
        "q",
        frozenset({"a", "b"}),
        limit,
        owner,
        now + 30,
        capabilities,
        limits or {},
        ending,
        queue_rate,
    )
    result: ClaimResult = await one(backend, op, now)
    return result


def ids(result: ClaimResult) -> list[int]:
    return [j.id for j in result.jobs]


async def test_a_job_is_claimed_only_by_a_process_with_every_capability(backend: Backend) -> None:
    gpu, both, free = await enqueue(
        backend,
        attrs.evolve(job(), requires=("gpu",)),
        attrs.evolve(job(run_at=T0 + 5), requires=("ffmpeg", "gpu")),
        job(),
    )
    plain = await flow_claim(backend)
    assert ids(plain) == [free]
    assert plain.next_run_at is None  # the future job needs what this claimer lacks
    assert (await flow_claim(backend, capabilities=frozenset({"ffmpeg"}))).jobs == ()
    gpus = await flow_claim(backend, capabilities=frozenset({"gpu", "ffmpeg", "x"}))
    assert (ids(gpus), gpus.next_run_at) == ([gpu], T0 + 5)
    later = await flow_claim(backend, T0 + 5, capabilities=frozenset({"gpu", "ffmpeg"}))
    assert ids(later) == [both]


def keyed(name: str = "a", *, c: str | None = None, r: str | None = None, **kw: Any) -> NewJob:
    return attrs.evolve(job(name, **kw), concurrency_key=c, rate_key=r)


async def test_a_concurrency_limit_holds_across_owners_until_a_slot_frees(
    backend: Backend,
) -> None:
    tenant = ConcurrencyLimit("tenant", 2)
    a1, a2, a3, b1, a4 = await enqueue(
        backend,
        keyed(c="tenant:a"), keyed(c="tenant:a"), keyed("b", c="tenant:a"),
        keyed(c="tenant:b"), keyed(c="tenant:a"),
    )  # fmt: skip
    limits = limited(concurrency=tenant)
    first = await flow_claim(backend, limits=limits, limit=1)
    assert (ids(first), first.held) == ([a1], False)
    second = await flow_claim(backend, limits=limits, owner="w2")
    assert (ids(second), second.held) == ([a2, b1], True)  # a3, a4 wait for tenant a
    assert (await flow_claim(backend, limits=limits)).jobs == ()
    [claimed_a1] = first.jobs
    assert await finish(backend, claimed_a1, Outcome(a1, claimed_a1.lease, Succeeded()), T0)
    assert ids(await flow_claim(backend, limits=limits)) == [a3]
    released = {j.id: j for j in second.jobs}[a2]
    assert await finish(backend, released, Outcome(a2, released.lease, Released()), T0)
    assert ids(await flow_claim(backend, limits=limits)) == [a2]  # released: first again
    assert (await get(backend, a4)).status is JobState.AVAILABLE
    assert ids(await flow_claim(backend)) == [a4]  # a claimer without the limit ignores it


async def test_rescued_and_cancelled_jobs_free_their_concurrency_slot(backend: Backend) -> None:
    limits = limited(concurrency=ConcurrencyLimit("one", 1))
    first, second, third = await enqueue(backend, *(keyed(c="one") for _ in range(3)))
    assert ids(await flow_claim(backend, limits=limits)) == [first]
    assert (await flow_claim(backend, limits=limits)).held
    assert [r.id for r in await one(backend, ops.Rescue(), T0 + 30)] == [first]
    [running] = (await flow_claim(backend, T0 + 30, limits=limits)).jobs
    assert running.id == second  # the rescued job is due again from T0 + 30
    await one(backend, ops.Cancel(second), T0 + 31)
    assert await finish(backend, running, Outcome(second, running.lease, Cancelled()), T0 + 31)
    assert ids(await flow_claim(backend, T0 + 31, limits=limits)) == [third]
    assert (await get(backend, first)).status is JobState.RETRYING


async def test_a_rate_limit_is_a_token_bucket_shared_by_name(backend: Backend) -> None:
    two_per_second = RateLimit("api", rate=2, per=dt.timedelta(seconds=1), burst=2)
    limits = limited(rate=two_per_second)
    jobs = await enqueue(backend, *(keyed("ab"[i % 2], r="api") for i in range(6)))
    burst = await flow_claim(backend, limits=limits)
    assert (ids(burst), burst.next_token_at) == (jobs[:2], T0 + 0.5)
    assert (await flow_claim(backend, T0 + 0.25, limits=limits)).jobs == ()
    refilled = await flow_claim(backend, T0 + 0.5, limits=limits)
    assert (ids(refilled), refilled.next_token_at) == (jobs[2:3], T0 + 1.0)
    assert ids(await flow_claim(backend, T0 + 10, limits=limits)) == jobs[3:5]  # burst caps it
    assert (await flow_claim(backend, T0 + 10, limits=limits)).next_token_at == T0 + 10.5


async def test_keyed_rate_limits_have_a_bucket_per_key(backend: Backend) -> None:
    limits = limited(rate=RateLimit("api", rate=1, per=60))
    a1, a2, b1, free = await enqueue(
        backend, keyed(r="api:a"), keyed(r="api:a"), keyed(r="api:b"), job()
    )
    result = await flow_claim(backend, limits=limits)
    assert (ids(result), result.next_token_at) == ([a1, b1, free], T0 + 60)
    assert ids(await flow_claim(backend, T0 + 60, limits=limits)) == [a2]


async def test_a_held_back_job_does_not_block_later_ones(backend: Backend) -> None:
    limits = limited(concurrency=ConcurrencyLimit("c", 1), rate=RateLimit("r", 1, per=60))
    both, held_c, held_r, free = await enqueue(
        backend,
        keyed(c="c", r="r", priority=30),
        keyed(c="c", priority=20),
        keyed(r="r", priority=20),
        keyed(priority=0),
    )
    result = await flow_claim(backend, limits=limits, limit=3)
    assert (ids(result), result.held, result.next_token_at) == ([both, free], True, T0 + 60)
    # a job held by its concurrency limit takes no token
    assert (await get(backend, held_r)).status is JobState.AVAILABLE
    assert (await get(backend, held_c)).status is JobState.AVAILABLE


async def test_a_paused_queue_claims_nothing_under_limits(backend: Backend) -> None:
    limits = limited(concurrency=ConcurrencyLimit("c", 5))
    await enqueue(backend, keyed(c="c"), keyed(c="c", run_at=T0 + 9))
    await one(backend, ops.PauseQueue("q", paused=True))
    result = await flow_claim(backend, limits=limits)
    assert (result.jobs, result.next_run_at) == ((), None)
    await one(backend, ops.PauseQueue("q", paused=False))
    result = await flow_claim(backend, limits=limits)
    assert (len(result.jobs), result.next_run_at) == (1, T0 + 9)


async def test_a_claim_reads_past_a_long_run_of_held_back_jobs(backend: Backend) -> None:
    limits = limited(concurrency=ConcurrencyLimit("c", 1))
    held = await enqueue(backend, *(keyed(c="c:x", priority=20) for _ in range(40)))
    [other] = await enqueue(backend, keyed(c="c:y"))
    result = await flow_claim(backend, limits=limits, limit=2)
    assert (ids(result), result.held) == ([held[0], other], True)


async def test_a_claimers_ended_attempts_free_their_slots_before_their_outcome_is_written(
    backend: Backend,
) -> None:
    limits = limited(concurrency=ConcurrencyLimit("one", 1))
    first, second = await enqueue(backend, keyed(c="one"), keyed(c="one"))
    [attempt] = (await flow_claim(backend, limits=limits)).jobs
    ended = frozenset({(first, attempt.lease)})
    other = await flow_claim(backend, limits=limits, owner="w2", ending=frozenset({(second, 1)}))
    assert (other.jobs, other.held) == ((), True)  # not ended: the attempt still counts
    assert ids(await flow_claim(backend, limits=limits, ending=ended)) == [second]
    # Both leases run out; the first job is rescued and claimed again under a new lease:
    # the old attempt's end frees nothing, the new attempt's would.
    assert [r.id for r in await one(backend, ops.Rescue(), T0 + 30)] == [first, second]
    [again] = (await flow_claim(backend, T0 + 30, limits=limits, owner="w2", limit=1)).jobs
    assert again.id == first
    stale = await flow_claim(backend, T0 + 30, limits=limits, ending=ended)
    assert (stale.jobs, stale.held) == ((), True)
    current = frozenset({(first, again.lease)})
    assert ids(await flow_claim(backend, T0 + 30, limits=limits, ending=current)) == [second]


async def test_a_limited_claim_keeps_the_stored_counts(backend: Backend) -> None:
    limits = limited(concurrency=ConcurrencyLimit("one", 1), rate=RateLimit("r", 1, burst=2))
    jobs = await enqueue(
        backend, keyed(c="one", r="r"), keyed(c="one"), keyed(r="r"), keyed(r="r"), job()
    )
    result = await flow_claim(backend, limits=limits)
    assert ids(result) == [jobs[0], jobs[2], jobs[4]]
    await check_counts(backend, jobs, T0)


async def test_a_queue_rate_limit_holds_for_every_job_of_the_queue(backend: Backend) -> None:
    queue = RateLimit("q-rate", rate=2, per=1, burst=2)
    limits = {"a": JobLimits(RateLimit("api", rate=1, per=60))}
    p1, a1, a2, p2, p3 = await enqueue(
        backend, keyed("b"), keyed(r="api"), keyed(r="api"), keyed("b"), keyed("b")
    )
    first = await flow_claim(backend, limits=limits, queue_rate=queue)
    assert (ids(first), first.next_token_at) == ([p1, a1], T0 + 0.5)  # the queue's burst
    # Another owner, the same bucket; a2 waits for its own token and takes none of the queue's.
    second = await flow_claim(backend, T0 + 0.5, limits=limits, queue_rate=queue, owner="w2")
    assert (ids(second), second.next_token_at) == ([p2], T0 + 1.0)
    assert (await flow_claim(backend, T0 + 0.75, limits=limits, queue_rate=queue)).jobs == ()
    third = await flow_claim(backend, T0 + 10, limits=limits, queue_rate=queue)
    assert (ids(third), third.next_token_at) == ([p3], T0 + 60)
    assert ids(await flow_claim(backend, T0 + 60, limits=limits, queue_rate=queue)) == [a2]


async def test_the_queue_limit_a_starting_job_shares_costs_it_one_token(backend: Backend) -> None:
    shared = RateLimit("shared", rate=1, per=60, burst=2)
    limits = {"a": JobLimits(shared)}
    both = await enqueue(backend, keyed(r="shared"), keyed(r="shared"), keyed("b"))
    result = await flow_claim(backend, limits=limits, queue_rate=shared)
    assert (ids(result), result.next_token_at) == (both[:2], T0 + 60)


STRIPE = RateLimit("stripe", rate=2, per=1, burst=2)  # a token every 0.5 s, two at most


async def take(backend: Backend, now: float, key: str = "stripe") -> float | None:
    wait_until: float | None = await one(backend, ops.TakeToken(key, STRIPE), now)
    return wait_until


async def test_a_handler_takes_tokens_from_the_bucket_claims_take_from(backend: Backend) -> None:
    assert await take(backend, T0) is None
    assert await take(backend, T0) is None  # the burst: two at once
    assert await take(backend, T0) == T0 + 0.5  # empty: when the next token comes
    assert await take(backend, T0 + 0.25) == T0 + 0.5  # asking took nothing
    assert await take(backend, T0 + 0.5) is None
    assert await take(backend, T0 + 0.5, key="stripe:acme") is None  # another key's bucket
    # A claim sees the bucket the handler emptied: its job waits for the next token.
    [first] = await enqueue(backend, keyed(r="stripe", run_at=T0 + 0.5))
    limits = {"a": JobLimits(STRIPE)}
    held = await flow_claim(backend, T0 + 0.5, limits=limits)
    assert (held.jobs, held.next_token_at) == ((), T0 + 1.0)
    assert ids(await flow_claim(backend, T0 + 1.0, limits=limits)) == [first]
    assert await take(backend, T0 + 1.0) == T0 + 1.5  # and the claim took that token


async def test_a_drained_bucket_gives_no_token_before_its_time(backend: Backend) -> None:
    await one(backend, ops.DrainBucket("stripe", STRIPE, T0 + 30), T0)
    assert await take(backend, T0) == T0 + 30
    # A claim is held back as long, whoever enqueued the job.
    [held] = await enqueue(backend, keyed(r="stripe"))
    limits = {"a": JobLimits(STRIPE)}
    waiting = await flow_claim(backend, T0 + 29, limits=limits)
    assert (waiting.jobs, waiting.next_token_at) == ((), T0 + 30)
    # An earlier drain does not shorten it; once the time comes, one token at a time.
    await one(backend, ops.DrainBucket("stripe", STRIPE, T0 + 10), T0 + 1)
    assert await take(backend, T0 + 29.75) == T0 + 30
    assert ids(await flow_claim(backend, T0 + 30, limits=limits)) == [held]
    assert await take(backend, T0 + 30) == T0 + 30.5
    assert await take(backend, T0 + 30.5) is None
