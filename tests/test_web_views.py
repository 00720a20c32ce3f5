"""What the API says about a run, and when a run watch reads the record again: pure
functions, checked on built snapshots."""

from __future__ import annotations

from typing import Any

import attrs

from trioforge import JobInfo, JobState, StepKind, StepStatus
from trioforge._watch import record_may_have_changed
from trioforge._workflow_info import workflow_info
from trioforge.storage import NEVER, ChildRecord, StepRecord, WorkflowRecord
from trioforge.web._views import run_view

T0 = 1_700_000_000.0


def job(**changes: Any) -> JobInfo:
    base = JobInfo(
        id=7, name="orders:fulfil@v2", queue="q", status=JobState.SCHEDULED, priority=10,
        payload={"secret": 1}, attempt=1, max_attempts=10, run_at=NEVER, created_at=T0,
        started_at=T0 + 1, finished_at=None, result=None, error=None, progress=None,
        progress_message=None, idempotency_key=None, cancel_requested=False,
    )  # fmt: skip
    return attrs.evolve(base, **changes)


def record(*steps: StepRecord) -> WorkflowRecord:
    return WorkflowRecord(
        run_id=7, created_at=T0, cancel_requested=False, steps=steps, signals=(),
        children=(ChildRecord(8, "resize", JobState.COMPLETED, "1", None),), workflow=True,
    )  # fmt: skip


def test_a_run_view_has_its_steps_undo_apart_and_no_payload() -> None:
    steps = (
        StepRecord(0, StepKind.STEP, "reserve", StepStatus.COMPLETED, 1, '"ok"',
                   compensable=True, started_at=T0 + 1, finished_at=T0 + 3.5),
        StepRecord(1, StepKind.CHILD, "resize", StepStatus.COMPLETED, 1, "8",
                   started_at=T0 + 4, finished_at=T0 + 4),
        StepRecord(2, StepKind.SIGNAL, "approved", StepStatus.RUNNING, 1, started_at=T0 + 5),
        StepRecord(3, StepKind.COMPENSATING, "compensating", StepStatus.COMPLETED, 1,
                   '{"outcome": "cancelled", "reason": "cancelled by request"}',
                   started_at=T0 + 6, finished_at=T0 + 6),
        StepRecord(4, StepKind.COMPENSATION, "reserve", StepStatus.COMPLETED, 1, "null",
                   started_at=T0 + 7, finished_at=T0 + 9),
    )  # fmt: skip
    view = run_view(workflow_info(job(), record(*steps)))
    assert "payload" not in view
    assert (view["workflow"], view["version"], view["wake_at"]) == ("orders:fulfil", 2, None)
    assert view["updated_at"] == T0 + 9
    assert view["children"] == [8]
    shown = [(s["kind"], s["status"], s["duration"], s["child"], s["compensation"])
             for s in view["steps"]]  # fmt: skip
    assert shown == [
        ("step", "compensated", 2.5, None, False),
        ("child", "completed", 0.0, 8, False),
        ("signal", "running", None, None, False),
        ("compensating", "completed", 0.0, None, True),
        ("compensation", "completed", 2.0, None, True),
    ]
    assert view["steps"][2]["detail"] == "no timeout"
    assert view["steps"][3]["detail"] == "undoing (cancelled): cancelled by request"


def test_a_waiting_run_shows_its_wake_time_and_a_finished_one_none() -> None:
    assert run_view(workflow_info(job(run_at=T0 + 60), record()))["wake_at"] == T0 + 60
    done = job(status=JobState.COMPLETED, run_at=T0 + 60, finished_at=T0 + 61)
    assert run_view(workflow_info(done, record()))["wake_at"] is None


def test_a_runs_view_shows_its_own_retention_or_none() -> None:
    kept = {"completed": 60.0, "cancelled": None, "dead": None, "compensated": 3600.0}
    assert run_view(workflow_info(job(retain=kept), record()))["retain"] == kept
    assert run_view(workflow_info(job(), record()))["retain"] is None  # its queue's


def test_the_record_is_read_again_only_when_it_may_have_changed() -> None:
    waiting = job()
    assert record_may_have_changed(None, waiting)
    assert not record_may_have_changed(waiting, waiting)  # another job's commit (SQLite)
    assert record_may_have_changed(waiting, job(run_at=T0 + 5))  # a signal moved it
    running = job(status=JobState.RUNNING)
    assert record_may_have_changed(waiting, running)
    assert record_may_have_changed(running, running)  # steps are recorded while it runs
    assert record_may_have_changed(running, waiting)  # it suspended after a step
    assert record_may_have_changed(waiting, job(cancel_requested=True))
