"""trioforge: background jobs for trio applications.

Typed jobs with retries, timeouts, progress and cancel-by-id, run by per-queue worker
pools inside your own trio program, on an embedded SQLite file or (later) PostgreSQL.
Everything public is re-exported here; the underscore modules are private.
"""

from trioforge._client import Client, JobRef, QueueInfo, Stats
from trioforge._clock import Clock, VirtualClock, WallClock
from trioforge._context import CronContext, JobContext
from trioforge._cron import CronSchedule
from trioforge._errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    Discard,
    InvalidArgumentError,
    InvalidStateError,
    JobNotFoundError,
    JobTimeoutError,
    PayloadError,
    SchemaError,
    TrioforgeError,
    UnknownJobError,
)
from trioforge._policy import Queue, Retention
from trioforge._registry import AttemptEnd, JobDefinition, Registry
from trioforge._rules import (
    AttemptOutcome,
    ConcurrencyLimit,
    JobState,
    Priority,
    RateLimit,
    Retry,
)
from trioforge._runtime import Runtime, RuntimeStatistics, open_client, open_runtime
from trioforge.storage import JobInfo

__all__ = [
    "AttemptEnd",
    "AttemptOutcome",
    "Client",
    "Clock",
    "ConcurrencyLimit",
    "ConfigurationError",
    "CronContext",
    "CronSchedule",
    "DatabaseUnavailableError",
    "Discard",
    "InvalidArgumentError",
    "InvalidStateError",
    "JobContext",
    "JobDefinition",
    "JobInfo",
    "JobNotFoundError",
    "JobRef",
    "JobState",
    "JobTimeoutError",
    "PayloadError",
    "Priority",
    "Queue",
    "QueueInfo",
    "RateLimit",
    "Registry",
    "Retention",
    "Retry",
    "Runtime",
    "RuntimeStatistics",
    "SchemaError",
    "Stats",
    "TrioforgeError",
    "UnknownJobError",
    "VirtualClock",
    "WallClock",
    "open_client",
    "open_runtime",
]
