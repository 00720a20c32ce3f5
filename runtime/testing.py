"""Testing your own jobs: virtual time, an inline mode, hypothesis strategies.

Everything here runs on the memory backend under trio's ``MockClock``, so delays, retries,
backoff and timeouts take no real time. Three ways to get that clock:

* ``trioforge.testing.run(main)`` — ``trio.run`` with ``MockClock(autojump_threshold=0)``;
  also the way to use it inside a synchronous hypothesis ``@given`` test, one run per example;
* ``trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))``;
* pytest-trio's ``autojump_clock`` fixture.

Example::

    async def test_welcome_is_retried(autojump_clock):
        async with trioforge.testing.open_test_runtime(registry) as rt:
            job = await rt.enqueue(send_welcome, Welcome("u1"))
            await rt.run_until_idle()
            assert (await job.info()).attempt == 2
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar

import attrs
import trio
import trio.testing

from trioforge._codec import decode_payload, encode_payload, encode_result
from trioforge._context import JobContext
from trioforge._core import durations as _durations
from trioforge._core.clock import VirtualClock
from trioforge._core.durations import Duration
from trioforge._core.errors import ConfigurationError, InvalidArgumentError
from trioforge._core.extras import needs_extra
from trioforge._core.states import JobState
from trioforge._lifespan import NO_STATE as _NO_STATE
from trioforge._policy import QueueLike
from trioforge._registry import JobDefinition, Registry
from trioforge._runtime import Runtime, open_client, open_runtime
from trioforge.actors import RunningJobs
from trioforge.storage import ClaimResult, MemoryBackend, NewJob, StepKind, StepStatus, ops

__all__ = [
    "EPOCH",
    "TestRuntime",
    "cron_expressions",
    "open_test_runtime",
    "payloads",
    "perform",
    "run",
]

_T = TypeVar("_T")

#: Where virtual epoch time starts unless a test says otherwise (2023-11-14 22:13:20 UTC).
EPOCH = 1_700_000_000.0

_BUSY = (JobState.AVAILABLE, JobState.RUNNING, JobState.RETRYING)
#: Scheduled runs read per page while looking for one that waits on a step's retry.
_PAGE = 500


def run(fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
    """``trio.run(fn, *args)`` under an autojumping ``MockClock``."""
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def _virtual_clock() -> trio.testing.MockClock:
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        raise ConfigurationError(
            "trioforge.testing needs trio's virtual clock: use trioforge.testing.run(main), "
            "trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)), or "
            "pytest-trio's autojump_clock fixture"
        )
    return clock


class TestRuntime(Runtime):
    """A runtime in virtual time, with ways to move that time on."""

    __test__ = False  # not a pytest test class

    async def advance(self, seconds: Duration) -> None:
        """Let ``seconds`` (or a timedelta) of virtual time pass, running whatever falls due
        meanwhile."""
        clock = _virtual_clock()
        span = _durations.seconds(seconds, "seconds", error=InvalidArgumentError)
        if clock.autojump_threshold == float("inf"):  # a clock that never jumps by itself
            clock.jump(span)
            await trio.testing.wait_all_tasks_blocked()
        else:
            await trio.sleep(span)

    async def run_until_idle(self, *, limit: Duration = 24 * 3600.0, step: Duration = 1.0) -> None:
        """Advance virtual time until no job is available, running or waiting to retry, and
        no workflow run waits on a step's retry (a failed step's backoff), ``step`` at a
        time. Delayed ``scheduled`` jobs and runs in a durable sleep or a signal wait do not
        count: ``advance`` to them. Raises ``TimeoutError`` if that takes more than
        ``limit`` virtual seconds (both seconds or a timedelta)."""
        _virtual_clock()
        limit = _durations.seconds(limit, "limit", error=InvalidArgumentError)
        step = _durations.seconds(step, "step", error=InvalidArgumentError, positive=True)
        deadline = trio.current_time() + limit
        while True:
            await trio.testing.wait_all_tasks_blocked()
            stats = await self.stats()
            if not any(stats.count(state) for state in _BUSY) and not (
                stats.count(JobState.SCHEDULED) and await self._retrying_steps()
            ):
                return
            if trio.current_time() >= deadline:
                raise TimeoutError(f"jobs still busy after {limit}s of virtual time: {stats}")
            await self.advance(step)

    async def _retrying_steps(self) -> bool:
        """Whether a scheduled run waits on a step's retry: its newest record entry is a
        step (or a compensation) that failed and has a next attempt. A run waits as
        ``scheduled`` through that backoff, as a job waits ``retrying`` through its own."""
        before: int | None = None
        while True:
            runs = await self.runs(status=JobState.SCHEDULED, limit=_PAGE, before=before)
            if not runs:
                return False
            latest = await self.current_steps(run.id for run in runs)
            if any(
                s.kind in (StepKind.STEP, StepKind.COMPENSATION)
                and s.status is StepStatus.FAILED
                and s.wake_at is not None
                for s in latest.values()
            ):
                return True
            before = runs[-1].id


@asynccontextmanager
async def open_test_runtime(
    registry: Registry,
    *,
    queues: Mapping[str, QueueLike] | None = None,
    epoch: float = EPOCH,
    **options: Any,
) -> AsyncIterator[TestRuntime]:
    """``open_runtime`` on a fresh memory backend in virtual time (see the module docs).

    ``epoch`` is the wall-clock time the test starts at; ``options`` go to ``open_runtime``.
    """
    _virtual_clock()
    # Nothing but this runtime uses its memory backend, and every change it makes wakes the
    # parts concerned: polling and beating every second would only slow a test that lets
    # days of virtual time pass (a 24-hour durable sleep) without changing what it sees.
    options.setdefault("poll_interval", 60.0)
    options.setdefault("heartbeat_interval", 10.0)
    options.setdefault("rescue_interval", 60.0)
    options.setdefault("sweep_interval", 600.0)
    async with open_runtime(
        registry,
        database=MemoryBackend(),
        queues=queues,
        clock=VirtualClock(epoch - trio.current_time()),
        _runtime_class=TestRuntime,
        **options,
    ) as rt:
        assert isinstance(rt, TestRuntime)
        yield rt


async def perform(
    job: JobDefinition[Any, _T],
    payload: Any = None,
    *,
    attempt: int = 1,
    state: Any = _NO_STATE,
) -> _T:
    """Run ``job``'s handler once, right here, with a real :class:`~trioforge.JobContext`
    (its progress and follow-up enqueues go to a throwaway memory backend), and return what
    it returns. The payload is checked exactly as on enqueue, and the return value as a
    worker checks it (a PayloadError if it cannot be encoded). Exceptions, ``Discard``
    included, propagate: no retries, no timeout. ``state`` is the handler's ``ctx.state``
    (no lifespan runs here: pass what yours would yield, or a stand-in)."""
    backend = MemoryBackend()
    text = encode_payload(job.codec, job.name, job.payload_type, payload)
    async with open_client(backend, clock=VirtualClock()) as client:
        now = VirtualClock().now()
        new = NewJob(
            job.name, job.queue, text, job.priority, now, max(attempt, job.retry.max_attempts)
        )
        await backend.execute([ops.Enqueue((new,))], now)
        [claim] = await backend.execute(
            [ops.Claim(job.queue, {job.name}, 1, "inline", now + 3600)], now
        )
        assert isinstance(claim, ClaimResult)
        [claimed] = claim.jobs
        claimed = attrs.evolve(claimed, attempt=attempt)
        ctx = JobContext(
            claimed,
            client=client,
            storage=client._storage,
            running=RunningJobs(),
            clock=VirtualClock(),
            owner="inline",
            lease_seconds=3600.0,
            state=state,
            # Its own limit only: no registry here (the bucket is this call's, full).
            rate_limits=None if job.rate_limit is None else {job.rate_limit.name: job.rate_limit},
        )
        if job.takes_payload:
            payload = decode_payload(job.codec, job.name, job.payload_type, text)
            value = await job(ctx, payload)
        else:
            value = await job(ctx)
        encode_result(job.codec, f"job {job.name!r}", job.result_type, value)  # as a worker would
        return value


def payloads(job: JobDefinition[Any, Any]) -> Any:
    """A hypothesis strategy for payloads ``job`` accepts: attrs classes and dataclasses
    built from their field types, with the values the strict codec takes (aware datetimes,
    finite floats and Decimals, JSON values for ``Any``); other types by
    ``hypothesis.strategies.from_type``."""
    with needs_extra("testing", "trioforge.testing's strategies"):
        from hypothesis import strategies as st

    if not job.takes_payload:
        return st.none()
    return _values_of(job.payload_type)


def _values_of(tp: Any) -> Any:
    with needs_extra("testing", "trioforge.testing's strategies"):
        from hypothesis import strategies as st

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        scalars = st.none() | st.booleans() | st.integers() | st.text()
        return st.recursive(
            scalars | st.floats(allow_nan=False, allow_infinity=False),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
            ),
            max_leaves=8,
        )
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp is Decimal:
        return st.decimals(allow_nan=False, allow_infinity=False)
    if tp is dt.datetime:
        offsets = st.integers(-1439, 1439).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
        return st.datetimes(timezones=offsets)
    if isinstance(tp, type) and (attrs.has(tp) or dataclasses.is_dataclass(tp)):
        hints = typing.get_type_hints(tp)
        kind: Any = tp  # an attrs class or a dataclass
        fields = attrs.fields(kind) if attrs.has(kind) else dataclasses.fields(kind)
        names = [f.name for f in fields if f.init]
        return st.builds(tp, **{name: _values_of(hints.get(name, Any)) for name in names})
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_values_of(a) for a in args])
    if origin is list:
        return st.lists(_values_of(args[0]) if args else _values_of(Any), max_size=4)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return st.tuples(*[_values_of(a) for a in args])
    if origin is tuple:
        return st.lists(_values_of(args[0] if args else Any), max_size=4).map(tuple)
    if origin is dict:
        return st.dictionaries(st.text(), _values_of(args[1] if args else Any), max_size=4)
    return st.from_type(tp)


def cron_expressions() -> Any:
    """A hypothesis strategy for valid five-field cron expressions, fixed-time and wildcard."""
    with needs_extra("testing", "trioforge.testing's strategies"):
        from hypothesis import strategies as st

    minute = st.one_of(st.integers(0, 59).map(str), st.sampled_from(["*", "*/15", "0,30", "5-10"]))
    hour = st.one_of(st.integers(0, 23).map(str), st.sampled_from(["*", "*/2", "1-3", "9-17"]))
    dow = st.sampled_from(["*", "MON-FRI", "SUN", "0,6"])
    return st.builds(lambda m, h, d: f"{m} {h} * * {d}", minute, hour, dow)
