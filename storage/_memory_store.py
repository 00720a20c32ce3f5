"""The in-memory backend's data: job rows, the pending-job indexes that stand in for SQL
indexes, and the few steps every operation takes on them (a rule applied to a row, a run
woken); :mod:`trioforge.storage.memory` holds the operations."""

from __future__ import annotations

import heapq
from collections.abc import Set

import attrs

from trioforge._core.errors import JobNotFoundError
from trioforge._core.flow import Bucket
from trioforge._core.states import PENDING_STATES, TERMINAL_STATES, Event, JobState, next_state
from trioforge.storage._records import (
    AttemptRecord,
    CronState,
    JobInfo,
    ProcessInfo,
    SignalRecord,
    StepRecord,
    decode_json,
)


@attrs.define
class Row:
    id: int
    name: str
    queue: str
    payload: str
    priority: int
    run_at: float
    max_attempts: int
    idempotency_key: str | None
    created_at: float
    status: JobState
    timeout: float | None = None
    requires: frozenset[str] = frozenset()
    rate_key: str | None = None
    concurrency_key: str | None = None
    attempt: int = 0
    lease: int = 0
    lease_owner: str | None = None
    lease_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: str | None = None
    error: str | None = attrs.field(default=None, on_setattr=lambda row, _, new: row.keep(new))
    progress: float | None = None
    progress_message: str | None = None
    cancel_requested: bool = False
    parent_id: int | None = None
    workflow: bool = False
    trace_context: str | None = None
    #: Its own retention: seconds per final state (None: kept forever); None: its queue's.
    retain: dict[str, float | None] | None = None
    #: A signal or a child's end arrived while the run was running (see Suspended).
    wake_requested: bool = False
    #: Bumped whenever the row is (re)indexed as pending; older index entries are stale.
    version: int = 0
    #: Errors of earlier attempts, as the SQL backends' trioforge_attempts keeps them.
    history: list[AttemptRecord] = attrs.field(factory=list)

    def expires_at(self) -> float | None:
        """When its own retention runs out (None: it has none, or is kept or unfinished)."""
        if self.retain is None or self.finished_at is None:
            return None
        age = self.retain.get(self.status.value)
        return None if age is None else self.finished_at + age

    def keep(self, new: str | None) -> str | None:
        """Setting ``error``: the one it replaces goes to the history."""
        if self.error is not None and new != self.error:
            self.history.append(AttemptRecord(self.attempt, self.started_at, self.error))
        return new

    def info(self) -> JobInfo:
        return JobInfo(
            id=self.id,
            name=self.name,
            queue=self.queue,
            status=self.status,
            priority=self.priority,
            payload=decode_json(self.payload),
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            run_at=self.run_at,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            result=decode_json(self.result),
            error=self.error,
            progress=self.progress,
            progress_message=self.progress_message,
            idempotency_key=self.idempotency_key,
            cancel_requested=self.cancel_requested,
            retain=None if self.retain is None else dict(self.retain),
        )


class MemoryStore:
    """What a :class:`~trioforge.storage.memory.MemoryBackend` holds, and how a row moves."""

    def __init__(self) -> None:
        self._rows: dict[int, Row] = {}
        self._next_id = 1
        self._open_keys: dict[str, int] = {}  # idempotency key -> unfinished job id
        self._done_keys: dict[str, tuple[int, float]] = {}  # key -> last to finish, when
        # Pending jobs per queue, indexed lazily (stale entries are skipped on the way out):
        # not yet due by run_at, and due by claim order.
        self._future: dict[str, list[tuple[float, int, int]]] = {}
        self._due: dict[str, list[tuple[tuple[int, float, int], int]]] = {}
        self._processes: dict[str, ProcessInfo] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # name -> (owner, until)
        self._cron: dict[str, CronState] = {}
        self._paused: set[str] = set()
        self._steps: dict[int, dict[int, StepRecord]] = {}  # run id -> seq -> entry
        self._signals: dict[int, list[SignalRecord]] = {}  # run id -> unconsumed, oldest first
        self._next_signal = 1
        self._children: dict[int, list[int]] = {}  # run id -> child job ids, in start order
        self._running_by_key: dict[str, int] = {}  # concurrency key -> running jobs
        self._buckets: dict[str, Bucket] = {}  # rate key -> token bucket

    def _row(self, job_id: int) -> Row:
        try:
            return self._rows[job_id]
        except KeyError:
            raise JobNotFoundError(f"no job with id {job_id}") from None

    def _index(self, row: Row) -> None:
        row.version += 1
        heapq.heappush(self._future.setdefault(row.queue, []), (row.run_at, row.id, row.version))

    def _running_excluding(self, ending: Set[tuple[int, int]]) -> dict[str, int]:
        """Running jobs per concurrency key, less the attempts in ``ending``."""
        running = dict(self._running_by_key)
        for job_id, lease in ending:
            row = self._rows.get(job_id)
            if (
                row is not None
                and row.status is JobState.RUNNING
                and row.lease == lease
                and row.concurrency_key is not None
            ):
                running[row.concurrency_key] -= 1
        return running

    def _live(self, job_id: int, version: int) -> Row | None:
        row = self._rows.get(job_id)  # None: purged
        if row is None or row.version != version or row.status not in PENDING_STATES:
            return None
        return row

    def _apply(self, row: Row, event: Event, now: float, run_at: float | None = None) -> bool:
        target = next_state(row.status, event)
        if target is None:
            return False
        key = row.concurrency_key
        if key is not None and (row.status is JobState.RUNNING) != (target is JobState.RUNNING):
            count = self._running_by_key.get(key, 0) + (1 if target is JobState.RUNNING else -1)
            if count:
                self._running_by_key[key] = count
            else:
                del self._running_by_key[key]
        row.status = target
        if run_at is not None:
            row.run_at = run_at
        if target in PENDING_STATES:
            self._index(row)
        if target is JobState.RUNNING:
            return True
        row.lease_owner = None
        row.lease_until = None
        if target in TERMINAL_STATES:
            row.finished_at = now
            if row.idempotency_key is not None:
                self._open_keys.pop(row.idempotency_key, None)
                self._done_keys[row.idempotency_key] = (row.id, now)
            if row.parent_id is not None:
                self._wake_run(row.parent_id, now)
        return True

    def _wake_run(self, run_id: int, now: float) -> None:
        """A waiting run becomes due now; a running one will be when it suspends."""
        row = self._rows.get(run_id)
        if row is None:
            return
        if row.status in PENDING_STATES:
            if row.run_at > now:
                row.run_at = now
                self._index(row)
        elif row.status is JobState.RUNNING:
            row.wake_requested = True

    def _owned(self, job_id: int, lease: int) -> Row | None:
        row = self._rows.get(job_id)
        if row is None or row.status is not JobState.RUNNING or row.lease != lease:
            return None
        return row
