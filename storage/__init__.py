"""Persistence behind one small protocol: memory, SQLite and PostgreSQL.

Only the storage actor talks to a backend. Backends import nothing of trioforge but the
kernel below them (``trioforge._core``): the pure rules, the error types and the
storable-text rule.
"""

from trioforge.storage import _ops as ops
from trioforge.storage._backend import (
    AsyncioBackend,
    AsyncioExecute,
    Backend,
    Changed,
    Listening,
    StartsBatches,
    opened,
)
from trioforge.storage._records import (
    NEVER,
    AttemptRecord,
    CancelNotice,
    CancelResult,
    ChildRecord,
    ClaimedJob,
    ClaimResult,
    CronState,
    Enqueued,
    JobInfo,
    NewJob,
    Notice,
    Outcome,
    ProcessDetails,
    ProcessInfo,
    RenewResult,
    RescuedJob,
    SchemaStatus,
    SignalRecord,
    SlotsFreedNotice,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
    WakeNotice,
    WorkflowRecord,
)
from trioforge.storage._urls import backend_for_connection, backend_for_url
from trioforge.storage.memory import MemoryBackend

__all__ = [
    "AsyncioBackend",
    "AsyncioExecute",
    "AttemptRecord",
    "Backend",
    "CancelNotice",
    "CancelResult",
    "Changed",
    "ChildRecord",
    "ClaimResult",
    "ClaimedJob",
    "CronState",
    "Enqueued",
    "JobInfo",
    "Listening",
    "MemoryBackend",
    "NEVER",
    "NewJob",
    "Notice",
    "Outcome",
    "ProcessDetails",
    "ProcessInfo",
    "RenewResult",
    "RescuedJob",
    "SchemaStatus",
    "SignalRecord",
    "SlotsFreedNotice",
    "StartsBatches",
    "StepKind",
    "StepRecord",
    "StepStatus",
    "StepWrite",
    "WakeNotice",
    "WorkflowRecord",
    "backend_for_connection",
    "backend_for_url",
    "opened",
    "ops",
]
