"""Which jobs a storage operation changed in a way a watcher can see (status, progress, a
workflow run's record).

Backends push these ids to the live feed (PostgreSQL: NOTIFY; memory: in-process), which
re-reads only the ids someone watches. Pure: decided from an operation and its result.
Claims are left out on purpose: they are the hottest write, and a claimed job's first
progress or its outcome is pushed anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from trioforge.storage import _ops as ops
from trioforge.storage._records import CancelResult, RescuedJob, StepWrite

__all__ = ["IDS_PER_NOTICE", "changed_jobs", "encode_ids", "parse_ids"]


def changed_jobs(batch: Sequence[ops.Op], results: Sequence[object]) -> list[int]:
    """The jobs ``batch`` changed visibly, given each operation's result (errors changed
    nothing), in order, without repeats."""
    seen: dict[int, None] = {}
    for op, result in zip(batch, results, strict=True):
        if isinstance(result, BaseException):
            continue
        for job_id in _changed(op, result):
            seen[job_id] = None
    return list(seen)


def _changed(op: ops.Op, result: object) -> Iterable[int]:
    if isinstance(op, ops.Finish) and isinstance(result, list):
        return [o.job_id for o, applied in zip(op.outcomes, result, strict=True) if applied]
    if isinstance(op, ops.Progress | ops.RetryJob | ops.Discard):
        return (op.job_id,) if result is True else ()
    if isinstance(op, ops.Cancel):
        return (op.job_id,) if result is not CancelResult.FINISHED else ()
    if isinstance(op, ops.RecordStep) and isinstance(result, StepWrite):
        return (op.run_id,) if result.applied else ()  # a run's page shows its steps
    if isinstance(op, ops.SendSignal):
        return (op.run_id,)  # and its pending signals
    if isinstance(op, ops.Rescue) and isinstance(result, list):
        return [job.id for job in result if isinstance(job, RescuedJob)]
    if isinstance(op, ops.ReleaseOrphans) and isinstance(result, list):
        return [job_id for job_id in result if isinstance(job_id, int)]
    return ()


#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; 300 ids of up to 19 digits
#: and a comma each stay under it.
IDS_PER_NOTICE = 300


def encode_ids(job_ids: Sequence[int]) -> Iterator[str]:
    """Notice payloads for ``job_ids``: comma-separated decimal ids, each under 8000 bytes."""
    for start in range(0, len(job_ids), IDS_PER_NOTICE):
        yield ",".join(str(i) for i in job_ids[start : start + IDS_PER_NOTICE])


def parse_ids(payload: str) -> frozenset[int] | None:
    """The ids in a notice payload; None if it is not one of ours."""
    try:
        return frozenset(int(part) for part in payload.split(","))
    except ValueError:
        return None
