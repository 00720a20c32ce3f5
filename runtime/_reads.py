"""What the client reads: jobs, workflow runs, attempts, counts, queues and processes,
as snapshots or as live watches. Changes nothing."""

from __future__ import annotations

import builtins
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias, TypeVar

import attrs
import trio

from trioforge._core import durations as _durations
from trioforge._core.clock import Clock
from trioforge._core.durations import Duration
from trioforge._core.errors import InvalidArgumentError, JobNotFoundError
from trioforge._core.states import JobState
from trioforge._core.text import check_storable
from trioforge._job import Job
from trioforge._registry import JobDefinition
from trioforge._unserved import unserved as unserved_names
from trioforge._watch import JobWatch, RunWatch
from trioforge._workflow_info import StepInfo, WorkflowInfo, step_info, workflow_info
from trioforge.actors import LiveFeed, StorageHandle
from trioforge.storage import AttemptRecord, CronState, JobInfo, ProcessInfo, ops
from trioforge.storage._records import not_a_run

__all__ = [
    "ClientReads",
    "JobId",
    "QueueInfo",
    "Stats",
    "check_filters",
    "check_job_id",
    "parse_state",
]

#: A stored job: its id, or the :class:`~trioforge.Job` handle ``enqueue`` returned.
JobId: TypeAlias = int | Job[Any]

_R = TypeVar("_R")


@attrs.frozen
class Stats:
    """Job counts per queue and state, as stored."""

    by_queue: Mapping[str, Mapping[JobState, int]]

    def count(self, state: JobState | str, queue: str | None = None) -> int:
        """How many jobs are in ``state``, in ``queue`` or (None) in every queue."""
        state = JobState(state)
        queues = [queue] if queue is not None else list(self.by_queue)
        return sum(self.by_queue.get(q, {}).get(state, 0) for q in queues)


@attrs.frozen
class QueueInfo:
    """One queue as stored: whether its claims are paused, and its job counts by state."""

    name: str
    paused: bool
    counts: Mapping[JobState, int]
    #: Names of its pending jobs that no live process runs (see ``Client.unserved``).
    unserved: tuple[str, ...] = ()


class ClientReads:
    """The reading half of :class:`~trioforge.Client`: every method reads storage (or
    watches it) and changes nothing."""

    _storage: StorageHandle
    _clock: Clock
    _feed: LiveFeed

    async def _wait_within(self, job_id: int, limit: float | None) -> JobInfo | None:
        """The job once finished, or None when ``limit`` seconds passed first."""
        with trio.move_on_after(math.inf if limit is None else limit):
            return await self.wait(job_id)
        return None

    def _result_of(self, definition: JobDefinition[Any, _R], info: JobInfo) -> _R:
        """A completed job's result, decoded by its codec to its handler's return type
        (storage hands results over as JSON values: their text is decoded again)."""
        what = f"result of job {info.id} ({info.name})"
        text = json.dumps(info.result, allow_nan=False)
        value: _R = definition.codec.decode(definition.result_type, text, what)
        return value

    async def get(self, job_id: JobId) -> JobInfo:
        """The job's current snapshot; raises JobNotFoundError for an unknown id."""
        job_id = check_job_id(job_id)
        info = await self._storage.call(ops.Get(job_id))
        if info is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return info

    async def attempts(self, job_id: JobId) -> builtins.list[AttemptRecord]:
        """Every error the job's attempts left, oldest first (the current ``error`` last):
        each attempt's, not only the last. Raises JobNotFoundError for an unknown id."""
        job_id = check_job_id(job_id)
        await self.get(job_id)
        return await self._storage.call(ops.Attempts(job_id))

    async def wait(self, job_id: JobId) -> JobInfo:
        """Block until the job is terminal (completed, dead or cancelled) and return it.

        Wakes within milliseconds of the outcome being recorded by any process (pushed by
        storage, see :meth:`watch`). No timeout of its own: wrap it in ``trio.fail_after``.
        Cancellation is safe and changes nothing.
        """
        async with self.watch(job_id) as updates:
            async for info in updates:
                if info.is_terminal:
                    return info
        raise AssertionError("a watch ends only after a terminal snapshot")  # pragma: no cover

    def watch(self, job_id: JobId) -> JobWatch:
        """``async for info in client.watch(job_id)``: the job's snapshot now, then at each
        change of status, attempt, progress or progress message, until it is terminal.

        Changes are pushed by storage (PostgreSQL NOTIFY on outcomes, progress and operator
        actions; SQLite's commit counter, read every few milliseconds; in-process on
        memory); only watched jobs are read, several watchers of one job share one read.
        """
        return JobWatch(self._feed, check_job_id(job_id))

    def watch_workflow(self, run_id: JobId) -> RunWatch:
        """``async for view in client.watch_workflow(run_id)``: the run's
        :class:`WorkflowInfo` now, then whenever the run or its record changes (a step
        started or recorded, a sleep begun, a signal sent, an undo), until it is terminal.
        Pushed by storage like :meth:`watch`, and read at most every 0.05 s, so a step
        shows running within 0.1 s of its start. Cancellation: waiting for the next view
        can be cancelled at any time; nothing is lost."""
        return RunWatch(self._feed, check_job_id(run_id), self.workflow)

    async def workflow(self, run_id: JobId) -> WorkflowInfo:
        """A workflow run's status, version and record (each step's status, attempts,
        times, result or error); raises JobNotFoundError, or InvalidArgumentError for a
        job that is not a workflow run."""
        job = await self.get(run_id)
        record = await self._storage.call(ops.ReadWorkflow(job.id))
        if record is None:
            raise JobNotFoundError(f"no job with id {run_id}")
        if not record.workflow:
            raise InvalidArgumentError(not_a_run(job.id, job.name))
        return workflow_info(job, record)

    async def list(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> builtins.list[JobInfo]:
        """Jobs matching every filter given, newest first. ``before=id`` gives the page
        after the one whose last job is ``id`` (ids below it), so deep pages stay cheap."""
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
            raise InvalidArgumentError(f"before must be a job id (an int), got {before!r}")
        check_filters(queue=queue, name=name)
        try:
            state = None if status is None else JobState(status)
        except ValueError:
            names = ", ".join(s.value for s in JobState)
            raise InvalidArgumentError(f"unknown status {status!r}; use one of {names}") from None
        return await self._storage.call(ops.ListJobs(state, queue, name, limit, before))

    async def runs(
        self,
        *,
        status: JobState | str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> builtins.list[JobInfo]:
        """Workflow runs matching every filter given, newest first; ``name`` is a
        workflow's name and matches its runs of every version (their job names are
        ``name@vN``), or one version's job name (``name@v2``), found by index.
        ``before=id`` gives the page after the one whose last run is ``id``. See
        :meth:`workflow` for a run's record."""
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
            raise InvalidArgumentError(f"before must be a run id (an int), got {before!r}")
        check_filters(name=name)
        state = None if status is None else parse_state(status)
        version = name if name is not None and "@" in name else None
        workflow = None if version is not None else name
        return await self._storage.call(
            ops.ListJobs(state, None, version, limit, before, runs_only=True, workflow=workflow)
        )

    async def current_steps(self, run_ids: Iterable[JobId]) -> dict[int, StepInfo]:
        """Each run's newest record entry (its current or last step), for the runs of
        ``run_ids`` that have one: one read for a whole page of runs."""
        ids = tuple(check_job_id(i) for i in run_ids)
        if not ids:
            return {}
        found = await self._storage.call(ops.LatestSteps(ids))
        return {run_id: step_info(entry) for run_id, entry in found.items()}

    async def cron_states(self) -> dict[str, CronState]:
        """The durable state of every cron schedule (last tick handled, runs skipped)."""
        return await self._storage.call(ops.CronStates())

    async def stats(self) -> Stats:
        """Job counts per queue and state, across every process using this database (kept
        as jobs change, so reading them costs the same at any number of jobs)."""
        counts = await self._storage.call(ops.Stats())
        return Stats(counts)

    async def throughput(self, seconds: Duration) -> Stats:
        """Per queue, the stored jobs that reached each terminal state in the last
        ``seconds``, counted in whole seconds (from the start of the second the window
        begins in) from counts kept per second, however many jobs the window holds."""
        window = _durations.seconds(seconds, "seconds", error=InvalidArgumentError)
        since = self._clock.now() - window
        counts = await self._storage.call(ops.Throughput(since))
        return Stats(counts)

    async def throughput_per_minute(
        self, minutes: int = 60
    ) -> dict[str, dict[JobState, dict[int, int]]]:
        """Per queue and terminal state, the jobs that finished in each of the last
        ``minutes`` clock minutes (this one included), keyed by the minute's first second
        (epoch, a multiple of 60); minutes with none are left out. Read from the same
        per-second counts as :meth:`throughput`: a chart's bars."""
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
            raise InvalidArgumentError(f"minutes must be an int >= 1, got {minutes!r}")
        now = math.floor(self._clock.now())
        since = now - now % 60 - (minutes - 1) * 60
        return await self._storage.call(ops.ThroughputSeries(since, 60))

    async def processes(self) -> builtins.list[ProcessInfo]:
        """The runtimes heartbeating on this database, oldest first."""
        return await self._storage.call(ops.Processes())

    async def queues(self) -> builtins.list[QueueInfo]:
        """Every queue that has jobs or is paused, by name."""
        counts = await self._storage.call(ops.Stats())
        paused = await self._storage.call(ops.PausedQueues())
        unserved = await self.unserved()
        return [
            QueueInfo(name, name in paused, counts.get(name, {}), unserved.get(name, ()))
            for name in sorted(set(counts) | paused | set(unserved))
        ]

    async def unserved(self) -> dict[str, tuple[str, ...]]:
        """Per queue, the names of its pending jobs that no live process runs there (no
        heartbeating worker of that queue has the name in its registry): they would wait
        forever. Each worker says which names it runs at every heartbeat; a process silent
        for over a minute does not count. Reads every pending job's name."""
        waiting = await self._storage.call(ops.WaitingNames())
        if not waiting:
            return {}
        processes = await self.processes()
        return unserved_names(waiting, processes, self._clock.now())


#: Job ids are 64-bit signed integers in every backend.
_MAX_JOB_ID = 2**63 - 1


def check_job_id(job_id: object) -> int:
    """The id ``job_id`` (an id or a :class:`Job`) gives, if it can name a stored job;
    out of range, no job has it."""
    if isinstance(job_id, Job):
        return job_id.id
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise InvalidArgumentError(f"a job id is an int, got {job_id!r}")
    if not 1 <= job_id <= _MAX_JOB_ID:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job_id


def parse_state(status: JobState | str) -> JobState:
    """A status filter as a :class:`JobState`, naming the states when it is none."""
    try:
        return JobState(status)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise InvalidArgumentError(f"unknown status {status!r}; use one of {names}") from None


def check_filters(**filters: str | None) -> None:
    """Filters given as text match only what could be stored: refused like a name."""
    for what, text in filters.items():
        if isinstance(text, str):
            check_storable(text, f"{what} filter", InvalidArgumentError)
