"""Flow control: cluster-wide rate and concurrency limits, decided job by job in claim order.

A claim walks the due jobs of its queue in claim order and asks a :class:`FlowGate` about
each: a job starts only if its concurrency key has a free slot and its rate bucket a token.
The memory backend keeps the counters and buckets in dicts and SQLite reads them in the
claim's transaction, both feeding this gate; PostgreSQL's claim function encodes the same
rule in PL/pgSQL over rows it locks. The contract suite holds all three to the same answers.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Set
from typing import Any

import attrs

from trioforge._core.errors import ConfigurationError
from trioforge._core.states import MAX_STORED_INT
from trioforge._core.text import check_storable

__all__ = [
    "FLOW_WINDOW",
    "TOKEN_EPSILON",
    "Bucket",
    "ConcurrencyLimit",
    "FlowGate",
    "JobLimits",
    "RateLimit",
    "drain",
    "next_token_at",
    "refill",
    "take_token",
]


#: Due jobs one flow-controlled claim looks at, at most (those held back included).
FLOW_WINDOW = 1000
#: Seconds: a bucket whose next whole token is this close has it, and a held-back job is
#: looked at again no sooner than this: epoch times carry ~1e-7 s of float rounding, and
#: a fetcher sleeping until the computed refill time must find the token there (or at
#: least a later instant), never spin at one instant.
TOKEN_EPSILON = 1e-6


def _check_limit_name(kind: str, name: object) -> None:
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigurationError(
            f"a {kind} name must be a non-empty string without ':', got {name!r}"
        )
    check_storable(name, f"{kind} name", ConfigurationError)


def _limit_key(name: str, key: Callable[[Any], object] | None, payload: Any) -> str:
    if key is None:
        return name
    return f"{name}:{key(payload)}"


@attrs.frozen
class RateLimit:
    """At most ``rate`` starts per ``per`` (seconds or a timedelta), in bursts of up to
    ``burst``: a token bucket of ``burst`` tokens refilled at ``rate / per`` per second,
    one token per start. So in any window of W seconds at most ``rate/per * W + burst``
    jobs start, across every process. Jobs declaring a limit of the same ``name`` share
    its bucket; with ``key`` (a function of the payload) each key value has its own.
    """

    name: str
    rate: float
    per: float | dt.timedelta = 1.0
    burst: int = 1
    key: Callable[[Any], object] | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        _check_limit_name("rate limit", self.name)
        per = self.per.total_seconds() if isinstance(self.per, dt.timedelta) else self.per
        if not (isinstance(self.rate, int | float) and 0 < self.rate < math.inf):
            raise ConfigurationError(f"RateLimit.rate must be a number > 0, got {self.rate!r}")
        if not (isinstance(per, int | float) and 0 < per < math.inf):
            raise ConfigurationError(f"RateLimit.per must be > 0 seconds, got {self.per!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigurationError(f"RateLimit.burst must be an int >= 1, got {self.burst!r}")
        if self.key is not None and not callable(self.key):
            raise ConfigurationError("RateLimit.key must be a function of the payload")

    @property
    def per_second(self) -> float:
        """Tokens added per second: ``rate / per``."""
        per = self.per.total_seconds() if isinstance(self.per, dt.timedelta) else self.per
        return self.rate / per

    def key_for(self, payload: Any) -> str:
        """The bucket a job with ``payload`` takes its token from."""
        return _limit_key(self.name, self.key, payload)


@attrs.frozen
class ConcurrencyLimit:
    """At most ``limit`` jobs running at once across every process, per value of ``key``
    (a function of the payload; none: one count for the name). Jobs declaring a limit of
    the same ``name`` share its counts."""

    name: str
    limit: int
    key: Callable[[Any], object] | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        _check_limit_name("concurrency limit", self.name)
        if (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, int)
            or not 1 <= self.limit <= MAX_STORED_INT
        ):
            raise ConfigurationError(
                f"ConcurrencyLimit.limit must be an int from 1 to {MAX_STORED_INT}, "
                f"got {self.limit!r}"
            )
        if self.key is not None and not callable(self.key):
            raise ConfigurationError("ConcurrencyLimit.key must be a function of the payload")

    def key_for(self, payload: Any) -> str:
        """The count a job with ``payload`` is part of."""
        return _limit_key(self.name, self.key, payload)


@attrs.frozen
class JobLimits:
    """The limits a claimer applies to one job name."""

    rate: RateLimit | None = None
    concurrency: ConcurrencyLimit | None = None


@attrs.frozen
class Bucket:
    """A token bucket as stored: ``tokens`` as of ``at``."""

    tokens: float
    at: float


def refill(bucket: Bucket | None, limit: RateLimit, now: float) -> Bucket:
    """The bucket at ``now``: full when new, refilled for the time since ``at`` (never
    past ``burst``; a clock behind ``at`` refills nothing and keeps ``at``)."""
    if bucket is None:
        return Bucket(float(limit.burst), now)
    if now <= bucket.at:
        return bucket
    tokens = min(float(limit.burst), bucket.tokens + (now - bucket.at) * limit.per_second)
    return Bucket(tokens, now)


def next_token_at(bucket: Bucket, limit: RateLimit) -> float:
    """When ``bucket`` (refilled) holds a whole token again."""
    return bucket.at + max(0.0, 1.0 - bucket.tokens) / limit.per_second


def take_token(bucket: Bucket | None, limit: RateLimit, now: float) -> tuple[Bucket, float | None]:
    """A handler's call through ``limit`` at ``now`` (``ctx.acquire``): the bucket to store
    and None if it took a token, or the bucket refilled and when it next holds one."""
    refilled = refill(bucket, limit, now)
    if (1.0 - refilled.tokens) / limit.per_second > TOKEN_EPSILON:
        return refilled, max(now + TOKEN_EPSILON, next_token_at(refilled, limit))
    return Bucket(max(0.0, refilled.tokens - 1.0), refilled.at), None


def drain(bucket: Bucket | None, limit: RateLimit, now: float, until: float) -> Bucket:
    """The bucket emptied so that its next whole token comes no sooner than ``until`` (a
    bucket already emptier keeps its own later time): tokens below zero are owed."""
    refilled = refill(bucket, limit, now)
    owed = 1.0 - (until - refilled.at) * limit.per_second
    return Bucket(min(refilled.tokens, owed), refilled.at)


class FlowGate:
    """Decides, job by job in claim order, which due jobs one claim may start.

    ``running`` counts running jobs per concurrency key and ``buckets`` holds the stored
    buckets of the rate keys involved, as read in the claim's transaction. ``queue_rate``
    is the claimed queue's own limit (``Queue(rate_limit=)``): every job of the queue
    takes a token from its bucket as well as from its own (one token when both are the
    same bucket). After the walk, :attr:`buckets` holds the buckets to store back,
    :attr:`next_token_at` the earliest time a job held back by a rate limit gets a token,
    and :attr:`held` whether a concurrency limit held any job back (it frees when a
    running one ends).
    """

    def __init__(
        self,
        limits: Mapping[str, JobLimits],
        running: Mapping[str, int],
        buckets: Mapping[str, Bucket],
        now: float,
        queue_rate: RateLimit | None = None,
    ) -> None:
        self._limits = limits
        self._queue_rate = queue_rate
        self._running = dict(running)
        self._stored = buckets
        self._now = now
        self.buckets: dict[str, Bucket] = {}
        self.next_token_at: float | None = None
        self.held = False
        self._busy: set[str] = set()

    def learn(
        self,
        running: Mapping[str, int],
        buckets: Mapping[str, Bucket],
        busy: Set[str] = frozenset(),
    ) -> None:
        """Counts and stored buckets of more keys (a claim reading due jobs in chunks);
        keys already known keep what this claim made of them. ``busy`` keys (rate or
        concurrency) could not be read now (another claim holds them): their jobs wait."""
        for key, count in running.items():
            self._running.setdefault(key, count)
        self._stored = {**buckets, **self._stored}
        self._busy |= busy

    def _rates(self, limits: JobLimits | None, rate_key: str | None) -> list[tuple[str, RateLimit]]:
        """The buckets a job takes a token from: its own, and its queue's."""
        rates = []
        if limits is not None and limits.rate is not None and rate_key is not None:
            rates.append((rate_key, limits.rate))
        queue = self._queue_rate
        if queue is not None and queue.name != rate_key:
            rates.append((queue.name, queue))
        return rates

    def _bucket(self, key: str, limit: RateLimit) -> Bucket:
        return self.buckets.get(key) or refill(self._stored.get(key), limit, self._now)

    def admit(self, name: str, rate_key: str | None, concurrency_key: str | None) -> bool:
        """Whether the job may start now; if so, it takes its slot and its tokens."""
        limits = self._limits.get(name)
        rates = self._rates(limits, rate_key)
        concurrency = limits.concurrency if limits is not None else None
        if concurrency_key is None:
            concurrency = None
        if concurrency is None and not rates:
            return True
        if self._busy and (
            concurrency_key in self._busy or any(key in self._busy for key, _ in rates)
        ):
            self.held = True  # look again soon: the other claim is about to commit
            return False
        if (
            concurrency is not None
            and concurrency_key is not None
            and self._running.get(concurrency_key, 0) >= concurrency.limit
        ):
            self.held = True
            return False
        buckets = [(key, rate, self._bucket(key, rate)) for key, rate in rates]
        short = [
            (rate, bucket)
            for _, rate, bucket in buckets
            if (1.0 - bucket.tokens) / rate.per_second > TOKEN_EPSILON
        ]
        if short:  # it starts once every one of its buckets has a token
            for key, _, bucket in buckets:
                self.buckets[key] = bucket
            at = max(self._now + TOKEN_EPSILON, *(next_token_at(b, r) for r, b in short))
            if self.next_token_at is None or at < self.next_token_at:
                self.next_token_at = at
            return False
        for key, _, bucket in buckets:
            self.buckets[key] = Bucket(max(0.0, bucket.tokens - 1.0), bucket.at)
        if concurrency is not None and concurrency_key is not None:
            self._running[concurrency_key] = self._running.get(concurrency_key, 0) + 1
        return True
