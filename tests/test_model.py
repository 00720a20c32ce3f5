"""Model-based test: whole scenarios in virtual time against a reference simulation.

A scenario is a few queues with a worker pool each, jobs with a queue, a priority, a delay
and a behaviour (succeed, fail k times, discard, hang past the timeout; each attempt takes
a whole number of seconds), cancels at random moments and pool resizes. ``simulate`` plays
it out from the rules in ``trioforge._core`` alone (claim order, backoff, failure
outcomes) as a discrete-event simulation; the runtime plays the same scenario on the memory
backend under MockClock, and every attempt's start and end, every final state and attempt
count must equal the simulation's exactly. That covers: no job starts before its run_at;
per queue, each free slot takes the due job first in claim order; attempts and backoff gaps
follow the rules; a cancelled running job stops at the instant of the cancel and is never
retried; a shrunk pool lets running jobs finish; every job ends in one terminal state.
Flow control: concurrency keys (a slot per key across both queues) and rate limits (token
buckets: one shared by name, one per key of a keyed limit, and each queue's own
``Queue(rate_limit=)`` that every job of the queue starts through, possibly the shared
one): the simulation predicts which due jobs are claimable at each instant.

Instants: delays, durations and backoff are whole seconds; cancels and resizes land on
sixty-fourths in between. Events of one queue that coincide at such an instant are
ordered by nothing the rules say, so ``simulate`` reports them and the example is dropped.
In real time a retry's run_at is its failure's instant plus the real lag of that failure,
so a retry falling due at the same whole second as another event of its queue is ordered
by that lag, not by the rules: ``simulate(..., lagged=True)`` drops those examples too.
A token arriving is an event of the queues waiting for it. When a bucket runs dry at an
instant, who gets its last tokens depends on the order the runtime's claims happen in at
that instant (two queues' fetchers; a claim before or after a concurrency slot frees), so
such an instant, if any claim at it could have been made in another order, is dropped too.
Rates are binary fractions (tokens per second), so every token time is exact.

Profiles: ``make test`` runs a fast one; ``make test-deep`` (HYPOTHESIS_PROFILE=deep) runs
thousands of examples.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import pytest
import trio
from hypothesis import given, reject, settings
from hypothesis import strategies as st

import trioforge
from tests.support.strategies import priorities
from trioforge import (
    Clock,
    ConcurrencyLimit,
    JobContext,
    JobDefinition,
    JobState,
    Priority,
    RateLimit,
    Retry,
    VirtualClock,
    WallClock,
)
from trioforge._core.retry import failure_outcome
from trioforge._core.states import claim_key
from trioforge.storage import MemoryBackend
from trioforge.testing import EPOCH, run

Behaviour = Literal["ok", "fail", "discard", "hang"]
QUEUES = ("a", "b")


@attrs.frozen
class JobSpec:
    queue: str
    priority: Priority
    delay: int
    behaviour: Behaviour
    seconds: int  # how long each attempt runs before it returns or raises ("hang": timeout)
    fails: int  # for "fail": attempts that fail before one succeeds
    cancel_at: float | None  # seconds after the start of the scenario
    #: Its concurrency key: at most ``Scenario.limit`` jobs of one key run at once, across
    #: both queues (None: no limit).
    key: str | None = None
    #: Its own rate limit: ``"shared"`` (one bucket for every such job, in both queues),
    #: or a key of the keyed limit ``"tenant"`` (a bucket per key); None: none.
    rate: str | None = None


@attrs.frozen
class Rate:
    """A token bucket's settings: ``per_second`` tokens a second, up to ``burst``."""

    per_second: float
    burst: int

    def limit(self, name: str, key: Any = None) -> RateLimit:
        return RateLimit(name, rate=self.per_second, per=1.0, burst=self.burst, key=key)


@attrs.frozen
class QueueRate:
    """A queue's own rate limit: ``name`` is its bucket (``"shared"``: the jobs' shared
    bucket, with its settings)."""

    name: str
    rate: Rate


@attrs.frozen
class Resize:
    at: float
    queue: str
    size: int


@attrs.frozen
class Scenario:
    sizes: Mapping[str, int]
    jobs: tuple[JobSpec, ...]
    resizes: tuple[Resize, ...]
    retry: Retry
    timeout: int = 7  # seconds a hanging attempt lasts before it times out
    limit: int = 1  # running jobs per concurrency key
    #: The settings of the jobs' own rate limits (``"shared"`` and ``"tenant"``).
    rate: Rate = Rate(1.0, 1)
    #: Each queue's own rate limit, if it has one.
    queue_rates: Mapping[str, QueueRate] = attrs.field(factory=dict)

    def buckets(self, job: JobSpec) -> tuple[tuple[str, Rate], ...]:
        """The buckets ``job`` takes a token from when it starts, by name."""
        own = []
        if job.rate is not None:
            own.append(("shared" if job.rate == "shared" else f"tenant:{job.rate}", self.rate))
        queue = self.queue_rates.get(job.queue)
        if queue is not None and all(name != queue.name for name, _ in own):
            own.append((queue.name, queue.rate))
        return tuple(own)


@attrs.frozen
class Outcome:
    """What happened to one job: each attempt's (start, end), how it ended, and the
    attempt count stored with it."""

    attempts: tuple[tuple[float, float], ...]
    status: JobState
    stored_attempts: int


class Ambiguous(Exception):
    """Two events of one queue at one instant, in an order the rules leave open."""


def simulate(scenario: Scenario, *, lagged: bool = False) -> list[Outcome]:
    """The reference: play ``scenario`` out from the rules alone.

    ``lagged``: the runtime plays in real time, where each retry's run_at is later than
    the simulation's by an unknown lag, so a retry tied with another event of its queue
    is ambiguous.
    """
    jobs, retry = scenario.jobs, scenario.retry
    run_at = [float(job.delay) for job in jobs]
    retried: set[int] = set()  # jobs whose run_at is a retry's (lagged in real time)
    attempts: list[list[tuple[float, float]]] = [[] for _ in jobs]
    final: dict[int, JobState] = {}
    ends: dict[int, float] = {}  # running job -> when its attempt ends by itself
    size = dict(scenario.sizes)
    resizes = sorted(scenario.resizes, key=lambda r: r.at)
    now = 0.0
    stored: dict[str, tuple[float, float]] = {}  # bucket -> (tokens, as of when)

    def tokens(name: str, rate: Rate) -> float:
        if name not in stored:
            return float(rate.burst)
        held, at = stored[name]
        return min(float(rate.burst), held + (now - at) * rate.per_second)

    def token_at(i: int) -> float:
        """When every bucket of job ``i`` holds a token (now, if they do)."""
        return max(
            [now]
            + [
                now + (1.0 - tokens(name, rate)) / rate.per_second
                for name, rate in scenario.buckets(jobs[i])
            ]
        )

    def arrived(i: int) -> bool:
        """Whether a bucket of job ``i`` gets the token it lacked exactly now."""
        return any(
            name in stored
            and stored[name][0] < 1.0
            and stored[name][1] + (1.0 - stored[name][0]) / rate.per_second == now
            for name, rate in scenario.buckets(jobs[i])
        )

    def attempt_seconds(i: int) -> float:
        return float(scenario.timeout if jobs[i].behaviour == "hang" else jobs[i].seconds)

    def end_attempt(i: int, at: float) -> None:
        start, _ = attempts[i][-1]
        attempts[i][-1] = (start, at)
        del ends[i]
        job, attempt = jobs[i], len(attempts[i])
        if job.behaviour == "ok" or (job.behaviour == "fail" and attempt > job.fails):
            final[i] = JobState.COMPLETED
        elif job.behaviour == "discard":
            final[i] = JobState.DEAD
        else:
            error = TimeoutError() if job.behaviour == "hang" else ConnectionError()
            retry_at = failure_outcome(retry, attempt, error, now=at).retry_at
            if retry_at is None:
                final[i] = JobState.DEAD
            else:
                run_at[i] = retry_at
                retried.add(i)

    while True:
        # What happens now, per queue: attempts ending, cancels, resizes, jobs falling due.
        events: dict[str, int] = {}
        freed: dict[str, set[str]] = {}  # concurrency key -> queues where a job of it ended
        ending = [i for i, end in ends.items() if end == now]
        for i in ending:
            events[jobs[i].queue] = events.get(jobs[i].queue, 0) + 1
            freed.setdefault(jobs[i].key or "", set()).add(jobs[i].queue)
            end_attempt(i, now)
        for i, job in enumerate(jobs):
            if job.cancel_at == now and i in ending:  # its cancel and its end coincide
                events[job.queue] = events.get(job.queue, 0) + 1
            elif job.cancel_at == now and i not in final:
                events[job.queue] = events.get(job.queue, 0) + 1
                if i in ends:
                    freed.setdefault(job.key or "", set()).add(job.queue)
                    start, _ = attempts[i][-1]
                    attempts[i][-1] = (start, now)
                    del ends[i]
                final[i] = JobState.CANCELLED
        while resizes and resizes[0].at == now:
            resize = resizes.pop(0)
            events[resize.queue] = events.get(resize.queue, 0) + 1
            size[resize.queue] = resize.size
        lagging: set[str] = set()  # queues where a retry falls due now
        for i in range(len(jobs)):
            if i not in final and i not in ends and run_at[i] == now:
                events[jobs[i].queue] = events.get(jobs[i].queue, 0) + 1
                if i in retried:
                    lagging.add(jobs[i].queue)
        for queue in size:  # a token arriving for jobs waiting in the queue
            if any(
                jobs[i].queue == queue and i not in final and i not in ends
                and run_at[i] < now and arrived(i)
                for i in range(len(jobs))
            ):  # fmt: skip
                events[queue] = events.get(queue, 0) + 1
        fractional = now != int(now)
        for queue, count in events.items():
            if count > 1 and (fractional or (lagged and queue in lagging)):
                raise Ambiguous(now)
        # Free slots take due jobs in claim order, skipping those whose concurrency key is
        # full or that lack a token; an attempt of 0 s frees its slot at once.
        started: dict[str, str] = {}  # key -> the queue that started a job of it just now
        wanted: dict[str, set[str]] = {}  # bucket -> queues that asked it for a token now
        dry: set[str] = set()  # buckets that turned a job away now
        refused: set[str] = set()  # queues that turned a job away for want of a token
        due_keys: set[tuple[str, str]] = set()  # (queue, concurrency key) of jobs due now

        def key_free(i: int) -> bool:
            key = jobs[i].key
            return key is None or sum(1 for j in ends if jobs[j].key == key) < scenario.limit

        for queue in size:
            while True:
                running = sum(1 for i in ends if jobs[i].queue == queue)
                due = [
                    i
                    for i, job in enumerate(jobs)
                    if job.queue == queue and i not in final and i not in ends and run_at[i] <= now
                ]
                # A key another queue started or ended a job of just now: whether this
                # queue's claim sees that job running is up to the two queues' actors.
                contended = any(
                    started.get(jobs[i].key or "", queue) != queue
                    or freed.get(jobs[i].key or "", set()) - {queue}
                    for i in due
                    if jobs[i].key is not None
                )
                if running < size[queue] and contended:
                    raise Ambiguous(now)
                due = [i for i in due if key_free(i)]
                if running >= size[queue] or not due:
                    break
                due_keys.update((queue, jobs[i].key or "") for i in due)
                due.sort(key=lambda i: claim_key(jobs[i].priority, run_at[i], i))
                picked = None
                for i in due:
                    buckets = scenario.buckets(jobs[i])
                    for name, _ in buckets:
                        wanted.setdefault(name, set()).add(queue)
                    if token_at(i) <= now:
                        picked = i
                        break
                    refused.add(queue)
                    dry.update(name for name, rate in buckets if tokens(name, rate) < 1.0)
                if picked is None:
                    break
                i = picked
                for name, rate in scenario.buckets(jobs[i]):
                    stored[name] = (tokens(name, rate) - 1.0, now)
                if jobs[i].key is not None:
                    started[jobs[i].key or ""] = queue
                attempts[i].append((now, math.nan))
                ends[i] = now + attempt_seconds(i)
                if ends[i] == now:
                    freed.setdefault(jobs[i].key or "", set()).add(queue)
                    end_attempt(i, now)
        # Who got a bucket's last tokens, when two queues asked for them, or when a claim
        # turned a job away for want of a token while a job due in its queue got its
        # concurrency slot back just now: that depends on the order of claims at the instant.
        if any(len(wanted[name]) > 1 for name in dry) or any(
            (queue, key) in due_keys for key, queues in freed.items() if key for queue in queues
            if queue in refused
        ):  # fmt: skip
            raise Ambiguous(now)
        waiting = [i for i in range(len(jobs)) if i not in final and i not in ends]
        instants = [*ends.values(), *(r.at for r in resizes)]
        instants += [run_at[i] for i in waiting if run_at[i] > now]
        instants += [at for i in waiting if run_at[i] <= now and (at := token_at(i)) > now]
        instants += [
            c for i, job in enumerate(jobs) if i not in final and (c := job.cancel_at) is not None
        ]
        if not instants:
            return [Outcome(tuple(a), final[i], len(a)) for i, a in enumerate(attempts)]
        now = min(instants)


def offsets(max_seconds: int) -> st.SearchStrategy[float]:
    """Instants strictly between whole seconds, on sixty-fourths (exact in binary)."""
    return st.builds(lambda s, k: s + k / 64, st.integers(0, max_seconds), st.integers(1, 63))


NO_KEYS: st.SearchStrategy[str | None] = st.none()
#: Tokens a second: binary fractions, so token times are exact.
RATES = st.builds(Rate, st.sampled_from([0.125, 0.25, 0.5, 1.0]), st.integers(1, 2))


def with_queue_rates(scenario: Scenario, queues: tuple[str, ...]) -> st.SearchStrategy[Scenario]:
    """``scenario`` with a rate limit of its own on some queues (or the jobs' shared one)."""
    own = st.builds(QueueRate, st.sampled_from(["own"]), RATES)
    shared = st.just(QueueRate("shared", scenario.rate))
    per_queue = {queue: st.none() | own | shared for queue in queues}
    return st.fixed_dictionaries(per_queue).map(
        lambda chosen: attrs.evolve(
            scenario,
            queue_rates={
                queue: rate if rate.name == "shared" else attrs.evolve(rate, name=f"q-{queue}")
                for queue, rate in chosen.items()
                if rate is not None
            },
        )
    )


def scenarios_of(
    queues: tuple[str, ...],
    *,
    jobs: int,
    workers: int,
    delays: int,
    seconds: int,
    attempts: int,
    base_delays: int,
    max_delay: st.SearchStrategy[int],
    instants: st.SearchStrategy[float],
    timeout: int,
    keys: st.SearchStrategy[str | None] = NO_KEYS,
    rates: bool = False,
    min_jobs: int = 1,
) -> st.SearchStrategy[Scenario]:
    """Scenarios within the given bounds; cancels and resizes land on ``instants``;
    ``rates``: with rate limits (the jobs' own and the queues')."""
    job_specs = st.builds(
        JobSpec,
        queue=st.sampled_from(queues),
        priority=priorities,
        delay=st.integers(0, delays),
        behaviour=st.sampled_from(["ok", "fail", "discard", "hang"]),
        seconds=st.integers(0, seconds),
        fails=st.integers(0, attempts),
        cancel_at=st.none() | instants,
        key=keys,
        rate=st.none() | st.sampled_from(["shared", "x", "y"]) if rates else st.none(),
    )
    resizes = st.builds(
        Resize, at=instants, queue=st.sampled_from(queues), size=st.integers(1, workers)
    )
    built = st.builds(
        Scenario,
        sizes=st.fixed_dictionaries({queue: st.integers(1, workers) for queue in queues}),
        jobs=st.lists(job_specs, min_size=min_jobs, max_size=jobs).map(tuple),
        resizes=st.lists(resizes, max_size=3).map(tuple),
        # Backoff of at least a second: a retry never ties with the failure that caused it.
        retry=st.builds(
            Retry,
            max_attempts=st.integers(1, attempts),
            backoff=st.sampled_from(["exponential", "constant"]),
            base_delay=st.integers(1, base_delays),
            max_delay=max_delay,
        ),
        timeout=st.just(timeout),
        limit=st.integers(1, 2),
        rate=RATES,
    )
    return built.flatmap(lambda s: with_queue_rates(s, queues)) if rates else built


scenarios = scenarios_of(
    QUEUES, jobs=10, workers=3, delays=20, seconds=4, attempts=4, base_delays=10,
    max_delay=st.integers(1, 20), instants=offsets(60), timeout=7,
    keys=st.none() | st.sampled_from(["x", "y"]), rates=True,
)  # fmt: skip


#: Jobs bunched up in time, so that their buckets run dry.
rated_scenarios = scenarios_of(
    ("a",), jobs=8, workers=3, delays=3, seconds=3, attempts=3, base_delays=4,
    max_delay=st.integers(1, 8), instants=offsets(30), timeout=5,
    rates=True, min_jobs=4,
)  # fmt: skip


def expected_of(scenario: Scenario, *, lagged: bool = False) -> list[Outcome]:
    """The simulation's outcome; a scenario the rules leave ambiguous is rejected."""
    try:
        return simulate(scenario, lagged=lagged)
    except Ambiguous:
        reject()


def play(scenario: Scenario, database: str | None = None, *, scale: float = 1.0) -> list[Outcome]:
    """Run ``scenario`` on the real runtime and record what happens, in scenario seconds.

    ``database=None``: the memory backend in virtual time. A URL: that backend in real
    time, where one scenario second lasts ``scale`` real seconds.
    """
    registry = trioforge.Registry()
    attempts: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(scenario.jobs))}
    origin: list[tuple[Clock, float]] = []  # the runtime's clock, and its time at second 0
    retry = attrs.evolve(
        scenario.retry,
        base_delay=scenario.retry.base_delay * scale,
        max_delay=scenario.retry.max_delay * scale,
    )

    def elapsed() -> float:
        """Scenario seconds by the runtime's own clock, the one "never early" is kept by."""
        clock, zero = origin[0]
        return (clock.now() - zero) / scale

    async def work(ctx: JobContext, index: int) -> None:
        job = scenario.jobs[index]
        start = elapsed()
        assert ctx.attempt == len(attempts[index]) + 1
        try:
            if job.behaviour == "hang":
                await trio.sleep_forever()
            await trio.sleep(job.seconds * scale)
            if job.behaviour == "discard":
                raise trioforge.Discard("the scenario says so")
            if job.behaviour == "fail" and ctx.attempt <= job.fails:
                raise ConnectionError("the scenario says so")
        finally:
            attempts[index].append((start, elapsed()))

    timeout = scenario.timeout * scale
    limit = ConcurrencyLimit("key", scenario.limit, key=lambda i: scenario.jobs[i].key)
    rates = {
        None: None,
        "shared": scenario.rate.limit("shared"),
        "tenant": scenario.rate.limit("tenant", key=lambda i: scenario.jobs[i].rate),
    }
    kinds = {
        (keyed, rate): registry.job(
            f"work-{keyed}-{rate}", retry=retry, timeout=timeout,
            concurrency=limit if keyed else None, rate_limit=rates[rate],
        )(work)
        for keyed in (False, True)
        for rate in rates
    }  # fmt: skip

    def kind(job: JobSpec) -> JobDefinition[Any, Any]:
        rate = None if job.rate is None else "shared" if job.rate == "shared" else "tenant"
        return kinds[job.key is not None, rate]

    async def main() -> list[trioforge.JobInfo]:
        if database is None:
            backend: str | MemoryBackend = MemoryBackend()
            clock: Clock = VirtualClock(EPOCH - trio.current_time())
        else:
            backend, clock = database, WallClock()
        # Standby pools while everything is stored, so the first claims see it all.
        standby = {
            queue: trioforge.Queue(
                0,
                rate_limit=(
                    None
                    if (own := scenario.queue_rates.get(queue)) is None
                    else own.rate.limit(own.name)
                ),
            )
            for queue in scenario.sizes
        }
        async with trioforge.open_runtime(
            registry, database=backend, clock=clock, queues=standby
        ) as rt:
            t0, zero = trio.current_time(), clock.now()
            origin.append((clock, zero))
            jobs = [
                await rt.enqueue(
                    kind(job),
                    i,
                    run_at=zero + job.delay * scale,
                    priority=job.priority,
                    queue=job.queue,
                )
                for i, job in enumerate(scenario.jobs)
            ]
            ids = [handle.id for handle in jobs]
            for queue, size in scenario.sizes.items():
                rt.resize(queue, size)

            async def cancel_at(job_id: int, at: float) -> None:
                await trio.sleep_until(t0 + at * scale)
                await rt.cancel(job_id)

            async def resize_at(resize: Resize) -> None:
                await trio.sleep_until(t0 + resize.at * scale)
                rt.resize(resize.queue, resize.size)

            async with trio.open_nursery() as nursery:
                for job_id, job in zip(ids, scenario.jobs, strict=True):
                    if job.cancel_at is not None:
                        nursery.start_soon(cancel_at, job_id, job.cancel_at)
                for resize in scenario.resizes:
                    nursery.start_soon(resize_at, resize)
                finals = [await rt.wait(job_id) for job_id in ids]
            return finals

    finals = run(main) if database is None else trio.run(main)
    return [Outcome(tuple(attempts[i]), info.status, info.attempt) for i, info in enumerate(finals)]


@given(scenarios)
def test_scenarios_follow_the_reference_simulation(scenario: Scenario) -> None:
    expected = expected_of(scenario)
    assert play(scenario) == expected


@given(rated_scenarios)
def test_rate_limited_scenarios_follow_the_reference_simulation(scenario: Scenario) -> None:
    expected = expected_of(scenario)
    assert play(scenario) == expected


#: Real time on SQLite: one scenario second lasts this long, and recorded instants may lag
#: the simulation's by this many scenario seconds (claims and writes take real time).
SCALE = 0.25
LAG = 0.2
#: How far a wall-clock reading of a monotonic sleep may fall short (clock slew).
SLEW = 0.004


def halves(max_seconds: int) -> st.SearchStrategy[float]:
    """Half-second instants: apart from any other instant by at least half a second."""
    return st.integers(0, max_seconds).map(lambda s: s + 0.5)


small_scenarios = scenarios_of(
    ("a",), jobs=4, workers=2, delays=4, seconds=2, attempts=2, base_delays=2,
    max_delay=st.just(2), instants=halves(8), timeout=3,
)  # fmt: skip


@settings(max_examples=60 if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else 4)
@given(small_scenarios)
def test_small_scenarios_follow_the_simulation_on_sqlite_in_real_time(
    scenario: Scenario,
) -> None:
    expected = expected_of(scenario, lagged=True)
    with tempfile.TemporaryDirectory() as folder:
        actual = play(scenario, f"sqlite:///{folder}/jobs.db", scale=SCALE)
    for got, want in zip(actual, expected, strict=True):
        assert (got.status, got.stored_attempts) == (want.status, want.stored_attempts)
        assert len(got.attempts) == len(want.attempts), (got, want)
        for (start, end), (want_start, want_end) in zip(got.attempts, want.attempts, strict=True):
            # Never early; late only by the time claims and writes take.
            assert want_start <= start <= want_start + LAG, (got, want)
            assert want_end - SLEW <= end <= want_end + LAG, (got, want)


def test_a_retry_tied_with_a_delayed_job_is_ambiguous_only_in_real_time() -> None:
    # A fails at 2 s and retries at 3 s; B is delayed to 3 s; one worker. Exactly at 3 s the
    # rules take A (enqueued first), but in real time A's retry is due at 3 s plus the lag
    # of its failure, so B legitimately starts first.
    scenario = Scenario(
        sizes={"a": 1},
        jobs=(
            JobSpec("a", Priority.NORMAL, 0, "fail", 2, 1, None),
            JobSpec("a", Priority.NORMAL, 3, "ok", 1, 0, None),
        ),
        resizes=(),
        retry=Retry(max_attempts=2, base_delay=1, max_delay=2),
        timeout=3,
    )
    assert [o.attempts for o in simulate(scenario)] == [((0, 2), (3, 5)), ((5, 6),)]
    with pytest.raises(Ambiguous):
        simulate(scenario, lagged=True)


def test_a_cancel_landing_as_its_job_ends_is_ambiguous() -> None:
    # A cancel at 0.5 s frees the slot, so B runs from 0.5 s to 1.5 s, when its cancel
    # lands: whether B ends completed or cancelled is up to which task runs first.
    scenario = Scenario(
        sizes={"a": 1},
        jobs=(
            JobSpec("a", Priority.NORMAL, 0, "ok", 3, 0, 0.5),
            JobSpec("a", Priority.NORMAL, 0, "ok", 1, 0, 1.5),
        ),
        resizes=(),
        retry=Retry(max_attempts=1),
    )
    with pytest.raises(Ambiguous):
        simulate(scenario)
