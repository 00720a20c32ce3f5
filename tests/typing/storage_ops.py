"""Storage ops as the runtime's actors send them: ``StorageHandle.call`` returns the
result type the op declares (``Op[T]``)."""

from __future__ import annotations

from typing import assert_type

from trioforge.actors import StorageHandle
from trioforge.storage import ClaimResult, Enqueued, JobInfo, ops


async def reads(handle: StorageHandle) -> None:
    assert_type(await handle.call(ops.Get(1)), JobInfo | None)
    assert_type(await handle.call(ops.GetMany((1, 2))), dict[int, JobInfo])
    assert_type(await handle.call(ops.Enqueue(())), list[Enqueued])
    assert_type(await handle.call(ops.Claim("q", frozenset(), 1, "me", 0.0)), ClaimResult)
    assert_type(await handle.call(ops.FoldCounts()), None)
    assert_type(await handle.call_shielded(ops.Finish(())), list[bool] | None)
    info: JobInfo = await handle.call(ops.Get(1))  # type: ignore[arg-type]
    count: int = await handle.call(ops.ListJobs())  # type: ignore[arg-type]
    del info, count
