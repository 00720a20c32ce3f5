"""trioforge: background jobs for trio applications.

Typed jobs with retries, timeouts, progress, cron, durable workflows and cancel by id,
run by per-queue worker pools inside your own trio program (``open_runtime``) or as
``trioforge worker``, on an embedded SQLite file or on PostgreSQL for many processes on
many machines. Everything public is re-exported here; the underscore modules are private.
The other public modules: ``trioforge.aio`` (enqueue from asyncio), ``trioforge.testing``,
``trioforge.web``, ``trioforge.metrics``, ``trioforge.otel``, ``trioforge.logging``.
"""

from trioforge._client import Client, JobRef
from trioforge._codec import Codec, StrictCodec
from trioforge._context import CronContext, JobContext
from trioforge._core.clock import Clock, VirtualClock, WallClock
from trioforge._core.cron import CronSchedule
from trioforge._core.errors import (
    ChildFailed,
    ConfigurationError,
    DatabaseUnavailableError,
    Discard,
    InvalidArgumentError,
    InvalidStateError,
    JobNotFoundError,
    JobTimeoutError,
    LifespanError,
    MissingExtraError,
    NonDeterminismError,
    PayloadError,
    ResultTimeoutError,
    SchemaError,
    StepFailed,
    TrioforgeError,
    UnknownJobError,
    WorkflowTimeoutError,
)
from trioforge._core.flow import ConcurrencyLimit, RateLimit
from trioforge._core.outcomes import AttemptOutcome
from trioforge._core.retry import Retry
from trioforge._core.states import JobState, Priority
from trioforge._job import Job, JobCancelledError, JobFailedError
from trioforge._policy import Queue, Retention
from trioforge._reads import JobId, QueueInfo, Stats
from trioforge._registry import AttemptEnd, JobDefinition, Registry, WorkflowDefinition
from trioforge._runtime import Runtime, RuntimeStatistics, open_client, open_runtime
from trioforge._version import __version__ as __version__
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
    "LifespanError",
    "MissingExtraError",
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
