"""Operations made of other operations, written once for every backend.

Releasing a process's orphaned jobs, and retrying or discarding a page of jobs, are the
same steps on every backend; only the primitive steps differ (a statement on PostgreSQL or
SQLite, a dict walk in memory). Each compound op here is a generator that yields the
primitive :data:`Step` it needs and receives its result (an error it raised is thrown back
in), so one text serves the synchronous backends (:func:`run`) and the asyncio one
(:func:`run_async`) alike. Every step runs inside the caller's batch transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeAlias, TypeVar

import attrs

from trioforge._core.errors import InvalidStateError
from trioforge._core.states import PENDING_STATES, JobState, Released
from trioforge.storage import _ops as ops
from trioforge.storage._records import Outcome

__all__ = [
    "Matching",
    "Running",
    "Step",
    "Steps",
    "discard_many",
    "key_held",
    "release_orphans",
    "retry_many",
    "run",
    "run_async",
]

T = TypeVar("T")


@attrs.frozen
class Matching:
    """-> list[int]: ids of jobs in ``states`` matching ``where``, ascending, one page."""

    where: ops.JobFilter
    states: frozenset[JobState]


@attrs.frozen
class Running:
    """-> list[tuple[int, int]]: (id, lease) of ``queue``'s jobs ``owner`` runs."""

    queue: str
    owner: str


#: What a compound op asks its backend for: a query above, or an op of its own.
Step: TypeAlias = Matching | Running | ops.RetryJob | ops.Discard | ops.Finish
#: A compound op in progress: yields steps, is sent their results, returns its own.
Steps: TypeAlias = Generator[Step, Any, T]


def run(steps: Steps[T], step: Callable[[Step], object]) -> T:
    """Drive ``steps`` with a synchronous backend's ``step``."""
    reply: object = None
    error: Exception | None = None
    while True:
        try:
            request = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            result: T = done.value
            return result
        reply, error = None, None
        try:
            reply = step(request)
        except Exception as exc:
            error = exc


async def run_async(steps: Steps[T], step: Callable[[Step], Awaitable[object]]) -> T:
    """Drive ``steps`` with an asyncio backend's ``step`` (as :func:`run`)."""
    reply: object = None
    error: Exception | None = None
    while True:
        try:
            request = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            result: T = done.value
            return result
        reply, error = None, None
        try:
            reply = await step(request)
        except Exception as exc:
            error = exc


def key_held(job_id: int, holder: int, key: str) -> InvalidStateError:
    """A retry refused: another unfinished job holds the job's idempotency key."""
    return InvalidStateError(
        f"job {job_id} cannot be retried: job {holder} holds its "
        f"idempotency key {key!r}; wait for that job or cancel it"
    )


def release_orphans(op: ops.ReleaseOrphans) -> Steps[list[int]]:
    """Release the owner's running jobs of the queue that it no longer holds."""
    running: list[tuple[int, int]] = yield Running(op.queue, op.owner)
    held = set(op.held)
    orphans = tuple(
        Outcome(job_id, lease, Released())
        for job_id, lease in running
        if (job_id, lease) not in held
    )
    applied: list[bool] = (yield ops.Finish(orphans)) if orphans else []
    return sorted(o.job_id for o, ok in zip(orphans, applied, strict=True) if ok)


def retry_many(op: ops.RetryMany) -> Steps[ops.BulkResult]:
    """One page of :class:`~trioforge.storage.ops.RetryMany`."""
    seen: list[int] = yield Matching(op.where, frozenset({op.status}))
    done = []
    for job_id in seen:
        try:
            if (yield ops.RetryJob(job_id)):
                done.append(job_id)
        except InvalidStateError:
            continue  # its idempotency key is another unfinished job's (nothing written)
    return _page(done, seen, op.where)


def discard_many(op: ops.DiscardMany) -> Steps[ops.BulkResult]:
    """One page of :class:`~trioforge.storage.ops.DiscardMany`."""
    states = PENDING_STATES if op.status is None else frozenset({JobState(op.status)})
    seen: list[int] = yield Matching(op.where, states)
    done = []
    for job_id in seen:
        if (yield ops.Discard(job_id, op.reason)):
            done.append(job_id)
    return _page(done, seen, op.where)


def _page(done: list[int], seen: list[int], where: ops.JobFilter) -> ops.BulkResult:
    """A page of a bulk operation: more may follow only if it looked at a full page."""
    return ops.BulkResult(tuple(done), seen[-1] if len(seen) >= where.limit else None)
