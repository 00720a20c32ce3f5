"""The storage contract for what the dashboard's queues page reads, on every backend."""

from __future__ import annotations

from tests.contract.test_contract import one
from tests.contract.test_maintenance_contract import finished
from trioforge import JobState
from trioforge.storage import Backend, ProcessDetails, ops

#: A minute's first second (the series is keyed by multiples of its step).
M0 = 60_000.0


async def test_throughput_series_counts_finished_jobs_per_minute(backend: Backend) -> None:
    await finished(
        backend,
        ("q", "ok", M0 - 0.5),  # the minute before the window
        ("q", "ok", M0 + 9.9),  # its first minute, before the second it starts in
        ("q", "ok", M0 + 10), ("q", "ok", M0 + 59.9), ("q", "fail", M0 + 30),
        ("q", "ok", M0 + 120.2), ("q", "discard", M0 + 179), ("other", "ok", M0 + 61),
    )  # fmt: skip
    assert await one(backend, ops.ThroughputSeries(M0 + 10, 60), M0 + 200) == {
        "q": {
            JobState.COMPLETED: {60_000: 2, 60_120: 1},
            JobState.DEAD: {60_000: 1, 60_120: 1},
        },
        "other": {JobState.COMPLETED: {60_060: 1}},
    }
    assert await one(backend, ops.ThroughputSeries(M0 + 180, 60), M0 + 200) == {}
    per_hour = await one(backend, ops.ThroughputSeries(M0 - 1, 3600), M0 + 200)
    assert per_hour == {
        "q": {JobState.COMPLETED: {57_600: 5}, JobState.DEAD: {57_600: 2}},
        "other": {JobState.COMPLETED: {57_600: 1}},
    }


async def test_a_process_row_keeps_its_busy_workers_per_queue(backend: Backend) -> None:
    details = ProcessDetails("h", 7, (("default", 4), ("mail", 2)), (), 3, (("default", 3),))
    await one(backend, ops.Beat("p1", ("default", "mail"), details))
    older = ProcessDetails("h", 8, (("default", 1),), (), 0)  # said nothing of busy workers
    await one(backend, ops.Beat("p2", ("default",), older))
    rows = {p.owner: p.details for p in await one(backend, ops.Processes())}
    assert rows == {"p1": details, "p2": older}
    assert rows["p1"] is not None
    assert dict(rows["p1"].busy) == {"default": 3}
