"""trioforge: background jobs for trio applications.

Typed jobs with retries, timeouts, progress and cancel-by-id, run by per-queue worker
pools inside your own trio program, on an embedded SQLite file or (later) PostgreSQL.
Everything public is re-exported here; the underscore modules are private.
"""

from trioforge._client import Client, JobId, JobRef, QueueInfo, Stats
from trioforge._clock import Clock, VirtualClock, WallClock
from trioforge._codec import Codec, StrictCodec
from trioforge._context import CronContext, JobContext
from trioforge._cron import CronSchedule
from trioforge._errors import (
    ChildFailed,
    ConfigurationError,
    DatabaseUnavailableError,
    Discard,
    InvalidArgumentError,
    InvalidStateError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    NonDeterminismError,
    PayloadError,
    ResultTimeoutError,
    SchemaError,
    StepFailed,
    TrioforgeError,
    UnknownJobError,
    WorkflowTimeoutError,
)
from trioforge._job import Job
from trioforge._policy import Queue, Retention
from trioforge._registry import AttemptEnd, JobDefinition, Registry, WorkflowDefinition
from trioforge._rules import (
    AttemptOutcome,
    ConcurrencyLimit,
    JobState,
    Priority,
    RateLimit,
    Retry,
)
from trioforge._runtime import Runtime, RuntimeStatistics, open_client, open_runtime
from trioforge._workflow import ChildHandle, WorkflowContext
from trioforge._workflow_info import StepInfo, WorkflowInfo
from trioforge.storage import JobInfo, StepKind, StepStatus

__all__ = [
    "AttemptEnd",
    "AttemptOutcome",
    "ChildFailed",
    "ChildHandle",
    "Client",
    "Clock",
    "Codec",
    "ConcurrencyLimit",
    "ConfigurationError",
    "CronContext",
    "CronSchedule",
    "DatabaseUnavailableError",
    "Discard",
    "InvalidArgumentError",
    "InvalidStateError",
    "Job",
    "JobCancelledError",
    "JobContext",
    "JobDefinition",
    "JobFailedError",
    "JobId",
    "JobInfo",
    "JobNotFoundError",
    "JobRef",
    "JobState",
    "JobTimeoutError",
    "NonDeterminismError",
    "PayloadError",
    "Priority",
    "Queue",
    "QueueInfo",
    "RateLimit",
    "Registry",
    "ResultTimeoutError",
    "Retention",
    "Retry",
    "Runtime",
    "RuntimeStatistics",
    "SchemaError",
    "Stats",
    "StepFailed",
    "StepInfo",
    "StepKind",
    "StepStatus",
    "StrictCodec",
    "TrioforgeError",
    "UnknownJobError",
    "VirtualClock",
    "WallClock",
    "WorkflowContext",
    "WorkflowDefinition",
    "WorkflowInfo",
    "WorkflowTimeoutError",
    "open_client",
    "open_runtime",
]
