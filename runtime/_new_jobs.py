"""The enqueue pipeline: from a job definition, payloads and per-call options to the rows an
``Enqueue`` stores.

Pure: no storage and no clock (the caller gives ``now``), so every normalisation (run_at,
priority, idempotency keys, limits' keys, size limits) is testable on its own. The client
stores what :func:`new_jobs` returns.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trioforge._codec import encode_payload
from trioforge._core.durations import Duration, optional_seconds, seconds
from trioforge._core.errors import ConfigurationError, InvalidArgumentError, PayloadError
from trioforge._core.flow import ConcurrencyLimit, RateLimit
from trioforge._core.states import MAX_STORED_INT, PriorityLike, parse_priority
from trioforge._core.text import check_storable
from trioforge._policy import Queue, Retention, job_retention
from trioforge._registry import JobDefinition, check_capabilities
from trioforge.storage import NewJob

__all__ = [
    "DEFAULT_MAX_KEY_BYTES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "check_queue",
    "new_jobs",
    "run_time",
]

#: Largest payload accepted by default, as JSON text (it is stored in every job row).
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
#: Longest idempotency key accepted by default, in UTF-8 bytes (it is indexed).
DEFAULT_MAX_KEY_BYTES = 256

#: The span of times a job may be scheduled at, in epoch seconds: what a datetime can show
#: (years 1 to 9999), so every page and command can print it.
_RUN_AT_RANGE = (
    dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp(),
    dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp(),
)


def new_jobs(
    definition: JobDefinition[Any, Any],
    payloads: Iterable[Any],
    *,
    now: float,
    delay: Duration | None = None,
    run_at: float | dt.datetime | None = None,
    priority: PriorityLike | None = None,
    queue: str | None = None,
    idempotency_keys: Sequence[str | None] | None = None,
    max_attempts: int | None = None,
    timeout: Duration | None = None,
    requires: Iterable[str] | None = None,
    unique_for: Duration | None = None,
    retain: Retention | Duration | None = None,
    policies: Mapping[str, Queue] | None = None,
    trace_context: str | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
) -> list[NewJob]:
    """The jobs to store for ``payloads`` of ``definition`` (one per payload, in order),
    each option checked and normalised: the enqueue's ``delay`` or ``run_at`` (else
    ``now``) as epoch seconds, the priority as a level, the queue's retry policy among
    ``policies`` giving max_attempts unless given, keys derived from the payload where the
    job declares a function. Raises InvalidArgumentError or PayloadError, storing nothing.
    ``trace_context``: the enqueue span's, stored with every job."""
    if queue is not None:
        check_queue(queue)
    if max_attempts is not None and (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= MAX_STORED_INT
    ):
        raise InvalidArgumentError(
            f"max_attempts must be an int from 1 (no retries) to {MAX_STORED_INT}, got "
            f"{max_attempts!r}"
        )
    limit = optional_seconds(timeout, "timeout", error=InvalidArgumentError, positive=True)
    payloads = list(payloads)
    if idempotency_keys is not None and len(idempotency_keys) != len(payloads):
        raise InvalidArgumentError(
            f"got {len(idempotency_keys)} idempotency keys for {len(payloads)} payloads; "
            "give one per payload (None where a payload has none)"
        )
    if unique_for is None:
        unique = definition.unique_for
    else:
        unique = seconds(unique_for, "unique_for", error=InvalidArgumentError)
    kept = (
        definition.retain
        if retain is None
        else job_retention(retain, "retain", InvalidArgumentError)
    )
    needs = (
        definition.requires
        if requires is None
        else check_capabilities(requires, "requires", InvalidArgumentError)
    )
    when = run_time(now, delay, run_at)
    if not _RUN_AT_RANGE[0] <= when <= _RUN_AT_RANGE[1]:
        raise InvalidArgumentError(
            f"the job would run at {when!r} (epoch seconds), outside the years 1 to 9999; "
            "give a delay or run_at within them"
        )
    try:
        level = definition.priority if priority is None else parse_priority(priority)
    except ConfigurationError as exc:
        raise InvalidArgumentError(str(exc)) from None
    queue = queue or definition.queue
    requires_sorted = tuple(sorted(needs))
    if max_attempts is None:
        max_attempts = definition.retry_in((policies or {}).get(queue)).max_attempts
    jobs = []
    for i, payload in enumerate(payloads):
        text = _encode(definition, payload, max_payload_bytes)
        key = None if idempotency_keys is None else idempotency_keys[i]
        if key is None and definition.idempotency_key is not None:
            key = _derived_key(definition, text)
        _check_key(key, max_key_bytes)
        jobs.append(
            NewJob(
                name=definition.name,
                queue=queue,
                payload=text,
                priority=level,
                run_at=when,
                max_attempts=max_attempts,
                idempotency_key=key,
                timeout=limit,
                requires=requires_sorted,
                rate_key=_limit_key(definition, definition.rate_limit, text),
                concurrency_key=_limit_key(definition, definition.concurrency, text),
                workflow=definition.workflow is not None,
                unique_for=unique,
                trace_context=trace_context,
                retain=kept,
            )
        )
    return jobs


def run_time(now: float, delay: Duration | None, run_at: float | dt.datetime | None) -> float:
    """When a job runs, in epoch seconds: ``delay`` after ``now``, at ``run_at`` (epoch
    seconds or an aware datetime), or ``now``."""
    if delay is not None and run_at is not None:
        raise InvalidArgumentError("give either delay= or run_at=, not both")
    if delay is not None:
        return now + seconds(delay, "delay", error=InvalidArgumentError)
    if run_at is not None:
        if isinstance(run_at, dt.datetime):
            if run_at.tzinfo is None:
                raise InvalidArgumentError(
                    "run_at must be timezone-aware; attach a tzinfo (e.g. datetime.timezone.utc)"
                )
            return run_at.timestamp()
        if not math.isfinite(run_at):
            raise InvalidArgumentError(f"run_at must be finite, got {run_at!r}")
        return float(run_at)
    return now


def check_queue(queue: object) -> None:
    """Refuse a queue name that could not be stored."""
    if not isinstance(queue, str) or not queue:
        raise InvalidArgumentError(f"queue must be a non-empty string, got {queue!r}")
    check_storable(queue, "queue", InvalidArgumentError)


def _encode(definition: JobDefinition[Any, Any], payload: Any, max_bytes: int) -> str:
    text = encode_payload(definition.codec, definition.name, definition.payload_type, payload)
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadError(
            f"payload for job {definition.name!r} is {size} bytes of JSON, over the limit "
            f"of {max_bytes}; store large data elsewhere and pass a "
            "reference, or raise the limit with max_payload_bytes= on open_runtime / "
            "open_client"
        )
    return text


def _check_key(key: object, max_bytes: int) -> None:
    if key is None:
        return
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"idempotency_key must be a non-empty string, got {key!r}")
    check_storable(key, "idempotency_key", InvalidArgumentError)
    size = len(key.encode())
    if size > max_bytes:
        raise InvalidArgumentError(
            f"idempotency_key is {size} bytes of UTF-8, over the limit of "
            f"{max_bytes}; use a shorter key (a hash of it, say), or raise "
            "the limit with max_key_bytes= on open_runtime / open_client"
        )


def _as_handler_sees(definition: JobDefinition[Any, Any], text: str) -> Any:
    """The payload as the handler will see it (``text`` was just encoded from it)."""
    if not definition.takes_payload:
        return None
    what = f"payload of job {definition.name!r}"
    return definition.codec.decode(definition.payload_type, text, what)


def _derived_key(definition: JobDefinition[Any, Any], text: str) -> str | None:
    """The idempotency key the job's key function gives a payload (None: it gave none)."""
    assert definition.idempotency_key is not None
    payload = _as_handler_sees(definition, text)
    try:
        key = definition.idempotency_key(payload)
    except Exception as exc:
        raise PayloadError(
            f"job {definition.name!r}: its idempotency_key function failed on this payload "
            f"({type(exc).__name__}: {exc}); fix the payload or the function"
        ) from exc
    return None if key is None else str(key)


def _limit_key(
    definition: JobDefinition[Any, Any], limit: RateLimit | ConcurrencyLimit | None, text: str
) -> str | None:
    """The rate bucket or concurrency count a job whose payload is ``text`` belongs to (a
    key function sees the payload as the handler will)."""
    if limit is None:
        return None
    if limit.key is None:
        return limit.name
    payload = _as_handler_sees(definition, text)
    try:
        key = limit.key_for(payload)
    except Exception as exc:
        raise PayloadError(
            f"job {definition.name!r}: the key function of limit {limit.name!r} failed on "
            f"this payload ({type(exc).__name__}: {exc}); fix the payload or the key"
        ) from exc
    return check_storable(key, f"job {definition.name!r}: limit key", PayloadError)
