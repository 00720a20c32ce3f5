"""Prometheus metrics: the same collectors for ``GET /metrics`` and an embedding app.

``Metrics()`` owns its collectors on a ``prometheus_client.CollectorRegistry`` (a new one,
or the one given, e.g. ``prometheus_client.REGISTRY`` to expose them beside the app's
own). Pass it to ``open_runtime(..., metrics=m)`` / ``open_client(..., metrics=m)`` to
count this process's events, and to ``trioforge.web.app(..., metrics=m)`` to serve it.

Counters, histograms and pool gauges are this process's (each worker process exposes its
own, so ``sum`` over processes adds them up). The database-wide gauges (queue depth, live
processes) are read from storage at each scrape (:meth:`Metrics.refresh`) and describe the
whole database, so only ``Metrics(database_gauges=True)`` exports them: give that to one
process (``trioforge web`` does it; a worker with ``--database-metrics``), and sums over
every scraped process count each job once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioforge._core.extras import needs_extra
from trioforge._core.outcomes import AttemptOutcome, counted_as
from trioforge._core.states import JobState

with needs_extra("metrics", "Prometheus metrics (trioforge.metrics)"):
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )

if TYPE_CHECKING:
    from trioforge._client import Client

__all__ = ["Metrics"]

#: Run durations and start latencies, in seconds: from a millisecond to an hour.
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

_EVENTS = ("enqueued", "started", "completed", "failed", "retried", "dead", "cancelled")


class Metrics:
    """trioforge's collectors (names start with ``trioforge_``)."""

    #: The media type of :meth:`exposition`.
    content_type: str = CONTENT_TYPE_LATEST

    def __init__(
        self, registry: CollectorRegistry | None = None, *, database_gauges: bool = True
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        #: Whether this process exports the gauges read from the database (one should).
        self.database_gauges = database_gauges
        labels = ("queue", "job")
        self._events = {
            event: Counter(
                f"trioforge_jobs_{event}", f"Jobs {event} by this process", labels,
                registry=self.registry,
            )
            for event in _EVENTS
        }  # fmt: skip
        self._duration = Histogram(
            "trioforge_job_run_seconds", "How long attempts ran (handler and hooks)", labels,
            buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._latency = Histogram(
            "trioforge_job_start_latency_seconds",
            "From a job's run_at (its enqueue, unless delayed) to its attempt starting",
            labels, buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        # Database-wide: registered (so exported) only by the process that says it exports
        # them, so a sum over processes counts each job once.
        database = self.registry if database_gauges else None
        self._depth = Gauge(
            "trioforge_queue_jobs", "Jobs stored per queue and state", ("queue", "state"),
            registry=database,
        )  # fmt: skip
        self._busy = Gauge(
            "trioforge_pool_busy_slots", "Worker slots running a job in this process",
            ("queue",), registry=self.registry,
        )  # fmt: skip
        self._slots = Gauge(
            "trioforge_pool_slots", "Worker slots in this process", ("queue",),
            registry=self.registry,
        )  # fmt: skip
        self._utilisation = Gauge(
            "trioforge_pool_utilisation",
            "Busy worker slots / slots in this process (0 with no slots)", ("queue",),
            registry=self.registry,
        )  # fmt: skip
        self._unserved = Gauge(
            "trioforge_unserved_jobs",
            "1 for each job name with pending jobs in a queue that no live process runs there",
            ("queue", "job"), registry=self.registry,
        )  # fmt: skip
        self._processes = Gauge(
            "trioforge_processes", "Runtime processes heartbeating on the database",
            registry=database,
        )  # fmt: skip

    # --- this process's events (called by the runtime and client) ------------------------

    def enqueued(self, queue: str, job: str, count: int = 1) -> None:
        """Count ``count`` enqueues of ``job`` on ``queue`` (the client calls it)."""
        self._events["enqueued"].labels(queue, job).inc(count)

    def started(self, queue: str, job: str, latency: float) -> None:
        """Count an attempt's start and observe its latency from ``run_at`` (the worker
        calls it)."""
        self._events["started"].labels(queue, job).inc()
        self._latency.labels(queue, job).observe(max(latency, 0.0))
        self._busy.labels(queue).inc()

    def ended(
        self, queue: str, job: str, outcome: AttemptOutcome, *, will_retry: bool, seconds: float
    ) -> None:
        """Count an attempt's end by its outcome and observe its duration (the worker
        calls it)."""
        self._busy.labels(queue).dec()
        self._duration.labels(queue, job).observe(max(seconds, 0.0))
        for event in counted_as(outcome, will_retry=will_retry):
            self._events[event].labels(queue, job).inc()

    # --- read at scrape time ----------------------------------------------------------------

    async def refresh(self, client: Client) -> None:
        """Set the pool gauges of a runtime and, if this process exports them, the gauges
        read from storage."""
        if self.database_gauges:
            stats = await client.stats()
            for queue, counts in stats.by_queue.items():
                for state in JobState:
                    self._depth.labels(queue, state.value).set(counts.get(state, 0))
            self._processes.set(len(await client.processes()))
            self._unserved.clear()  # a name served again leaves the exposition
            for queue, names in (await client.unserved()).items():
                for name in names:
                    self._unserved.labels(queue, name).set(1)
        statistics = getattr(client, "statistics", None)
        if statistics is not None:
            now = statistics()
            for queue, size in now.queues.items():
                busy = now.busy.get(queue, 0)
                self._slots.labels(queue).set(size)
                self._busy.labels(queue)  # present (at 0) before the first job
                self._utilisation.labels(queue).set(busy / size if size else 0.0)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
