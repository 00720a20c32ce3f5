"""Which jobs a storage operation changed in a way a watcher can see (status, progress, a
workflow run's record).

Backends push these ids to the live feed (PostgreSQL: NOTIFY; memory: in-process), which
re-reads only the ids someone watches. Pure: each operation says which jobs it changed,
given its result (:meth:`~trioforge.storage._ops.Op.changed`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from trioforge.storage import _ops as ops

__all__ = ["IDS_PER_NOTICE", "changed_jobs", "encode_ids", "parse_ids"]


def changed_jobs(batch: Sequence[ops.Op], results: Sequence[object]) -> list[int]:
    """The jobs ``batch`` changed visibly, given each operation's result (errors changed
    nothing), in order, without repeats."""
    seen: dict[int, None] = {}
    for op, result in zip(batch, results, strict=True):
        if isinstance(result, BaseException):
            continue
        for job_id in op.changed(result):
            seen[job_id] = None
    return list(seen)


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
