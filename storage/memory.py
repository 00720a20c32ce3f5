"""The in-memory backend: pure Python, no threads, no sockets, deterministic.

It exists for virtual-time tests (trio's MockClock must never meet real threads or sockets)
and applies the rules of :mod:`trioforge._core` directly, so it is also the executable
reference for the SQL backends. Data lives as long as the backend object.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, TypeVar

import attrs
import trio

from trioforge._core.errors import InvalidArgumentError, InvalidStateError
from trioforge._core.flow import FLOW_WINDOW, FlowGate, drain, take_token
from trioforge._core.retry import rescue_outcome
from trioforge._core.states import (
    PENDING_STATES,
    TERMINAL_STATES,
    Cancelled,
    Claimed,
    Discarded,
    Failed,
    JobState,
    Released,
    Retried,
    Suspended,
    claim_key,
    is_due,
    next_state,
)
from trioforge.storage import _compound as compound
from trioforge.storage import _ops as ops
from trioforge.storage._backend import AsyncioExecute, Changed, Listening
from trioforge.storage._changes import changed_jobs
from trioforge.storage._memory_store import MemoryStore, Row
from trioforge.storage._records import (
    AttemptRecord,
    CancelResult,
    ChildRecord,
    ClaimedJob,
    ClaimResult,
    CronState,
    Enqueued,
    FireResult,
    JobInfo,
    Notice,
    Outcome,
    ProcessInfo,
    RenewResult,
    RescuedJob,
    SchemaStatus,
    SignalRecord,
    StepRecord,
    StepWrite,
    WorkflowRecord,
    names_by_queue,
    not_a_run,
    not_finished,
)

__all__ = ["MemoryBackend"]

T = TypeVar("T")

SCHEMA_VERSION = 1


class MemoryBackend(MemoryStore):
    """Jobs in a dict; every operation applies the pure rules."""

    shared = False
    #: One batch at a time: it runs in-process, nothing to overlap.
    max_in_flight = 1

    def __init__(self) -> None:
        super().__init__()
        self._handlers: dict[type, Callable[[Any, float], object]] = ops.handlers(self)
        self._change_feeds: list[trio.MemorySendChannel[Changed]] = []

    notifies = False

    @asynccontextmanager
    async def changes(self) -> AsyncIterator[trio.MemoryReceiveChannel[Changed]]:
        """Every batch's changed jobs, pushed in-process as the batch runs."""
        send, receive = trio.open_memory_channel[Changed](math.inf)
        self._change_feeds.append(send)
        try:
            yield receive
        finally:
            self._change_feeds.remove(send)
            send.close()

    def listen(self, on_notice: Callable[[Notice], None]) -> AbstractAsyncContextManager[Listening]:
        raise NotImplementedError("this backend pushes no notices; the runtime polls it")

    def environment(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    async def open(self, *, migrate: bool = True) -> None:
        del migrate

    async def aclose(self) -> None:
        pass

    async def create_database(self) -> bool:
        return False

    async def drop(self) -> None:
        for index in (
            self._rows, self._open_keys, self._done_keys, self._future, self._due,
            self._processes, self._leases, self._cron, self._paused, self._running_by_key,
            self._buckets, self._steps, self._signals, self._children,
        ):  # fmt: skip
            index.clear()

    async def schema_status(self) -> SchemaStatus:
        return SchemaStatus(SCHEMA_VERSION, SCHEMA_VERSION)

    async def migrate(self) -> SchemaStatus:
        return SchemaStatus(SCHEMA_VERSION, SCHEMA_VERSION)

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        results: list[object] = []
        for op in batch:
            try:
                results.append(self._handlers[type(op)](op, now))
            except Exception as exc:
                results.append(exc)
        changed = changed_jobs(batch, results)
        if changed:
            for feed in self._change_feeds:
                feed.send_nowait(frozenset(changed))
        return results

    @asynccontextmanager
    async def on_asyncio(self, *, migrate: bool = True) -> AsyncIterator[AsyncioExecute]:
        del migrate
        yield self.execute  # pure Python: nothing of trio in it

    # --- operations ------------------------------------------------------------------

    def _enqueue(self, op: ops.Enqueue, now: float) -> list[Enqueued]:
        for job in op.jobs:  # all refused or none: nothing of a bad batch is stored
            json.loads(job.payload)  # refuse anything that is not JSON text
        out = []
        for job in op.jobs:
            key = job.idempotency_key
            if key is not None and key in self._open_keys:
                out.append(Enqueued(self._open_keys[key], created=False))
                continue
            done = None if key is None else self._done_keys.get(key)
            if done is not None and job.unique_for is not None and done[1] >= now - job.unique_for:
                out.append(Enqueued(done[0], created=False))
                continue
            row = Row(
                id=self._next_id,
                name=job.name,
                queue=job.queue,
                payload=job.payload,
                priority=job.priority,
                run_at=job.run_at,
                max_attempts=job.max_attempts,
                idempotency_key=key,
                created_at=now,
                status=JobState.SCHEDULED if job.run_at > now else JobState.AVAILABLE,
                parent_id=job.parent_id,
                workflow=job.workflow,
                timeout=job.timeout,
                requires=frozenset(job.requires),
                rate_key=job.rate_key,
                concurrency_key=job.concurrency_key,
                trace_context=job.trace_context,
                retain=None if job.retain is None else json.loads(job.retain),
            )
            self._next_id += 1
            if job.parent_id is not None:
                self._children.setdefault(job.parent_id, []).append(row.id)
            self._rows[row.id] = row
            self._index(row)
            if key is not None:
                self._open_keys[key] = row.id
            out.append(Enqueued(row.id, created=True))
        return out

    def _claim(self, op: ops.Claim, now: float) -> ClaimResult:
        if op.queue in self._paused:
            return ClaimResult((), None)
        future = self._future.setdefault(op.queue, [])
        due = self._due.setdefault(op.queue, [])
        while future and is_due(future[0][0], now):
            _, job_id, version = heapq.heappop(future)
            row = self._live(job_id, version)
            if row is not None:
                heapq.heappush(due, (claim_key(row.priority, row.run_at, row.id), version))

        def runnable(row: Row) -> bool:
            return row.name in op.names and row.requires <= op.capabilities

        gate = (
            FlowGate(
                op.limits, self._running_excluding(op.ending), self._buckets, now, op.queue_rate
            )
            if op.flow_controlled
            else None
        )
        picked: list[Row] = []
        skipped = []  # due, but not for this claimer (or held back): back into the index after
        seen = 0  # due jobs it could run, looked at: a limited claim looks at FLOW_WINDOW
        while due and len(picked) < op.limit and (gate is None or seen < FLOW_WINDOW):
            entry = heapq.heappop(due)
            row = self._live(entry[0][2], entry[1])
            if row is None:
                continue
            if not runnable(row):
                skipped.append(row)
                continue
            seen += 1
            if gate is None or gate.admit(row.name, row.rate_key, row.concurrency_key):
                picked.append(row)
            else:
                skipped.append(row)
        for row in skipped:
            heapq.heappush(due, (claim_key(row.priority, row.run_at, row.id), row.version))
        if gate is not None:
            self._buckets.update(gate.buckets)
        claimed = []
        for row in picked:
            self._apply(row, Claimed(), now)
            row.error = None  # first: the error it replaces is the previous attempt's
            row.attempt += 1
            row.lease += 1
            row.lease_owner = op.owner
            row.lease_until = op.lease_until
            row.started_at = now
            row.progress = None
            row.progress_message = None
            claimed.append(
                ClaimedJob(
                    id=row.id,
                    name=row.name,
                    queue=row.queue,
                    payload=row.payload,
                    priority=row.priority,
                    run_at=row.run_at,
                    attempt=row.attempt,
                    max_attempts=row.max_attempts,
                    lease=row.lease,
                    timeout=row.timeout,
                    trace_context=row.trace_context,
                )
            )
        upcoming = (
            run_at
            for run_at, job_id, version in future
            if (row := self._live(job_id, version)) is not None and runnable(row)
        )
        if gate is None:
            return ClaimResult(tuple(claimed), min(upcoming, default=None))
        return ClaimResult(
            tuple(claimed), min(upcoming, default=None), gate.next_token_at, gate.held
        )

    def _finish(self, op: ops.Finish, now: float) -> list[bool]:
        return [self._finish_one(o, now) for o in op.outcomes]

    def _finish_one(self, outcome: Outcome, now: float) -> bool:
        row = self._owned(outcome.job_id, outcome.lease)
        if row is None:
            return False
        event = outcome.event
        if isinstance(event, Released | Suspended):
            row.attempt -= 1  # a graceful shutdown or a wait is not the job's failure
        retry_at = event.retry_at if isinstance(event, Failed) else None
        if isinstance(event, Suspended):
            retry_at = now if row.wake_requested else event.run_at
        if not self._apply(row, event, now, run_at=retry_at):
            return False
        row.result = outcome.result
        row.error = outcome.error
        return True

    def _release_orphans(self, op: ops.ReleaseOrphans, now: float) -> list[int]:
        return self._compound(compound.release_orphans(op), now)

    def _renew(self, op: ops.Renew, now: float) -> RenewResult:
        del now
        cancel, lost = set(), set()
        for job_id, lease in op.leases:
            row = self._owned(job_id, lease)
            if row is None or row.lease_owner != op.owner:
                lost.add((job_id, lease))
                continue
            row.lease_until = op.lease_until
            if row.cancel_requested:
                cancel.add(job_id)
        return RenewResult(frozenset(cancel), frozenset(lost))

    def _take_token(self, op: ops.TakeToken, now: float) -> float | None:
        bucket, wait_until = take_token(self._buckets.get(op.key), op.limit, now)
        self._buckets[op.key] = bucket
        return wait_until

    def _drain_bucket(self, op: ops.DrainBucket, now: float) -> None:
        self._buckets[op.key] = drain(self._buckets.get(op.key), op.limit, now, op.until)

    def _progress(self, op: ops.Progress, now: float) -> bool:
        del now
        row = self._owned(op.job_id, op.lease)
        if row is None:
            return False
        row.progress = op.pct
        row.progress_message = op.message
        return True

    def _get(self, op: ops.Get, now: float) -> JobInfo | None:
        del now
        row = self._rows.get(op.job_id)
        return None if row is None else row.info()

    def _get_many(self, op: ops.GetMany, now: float) -> dict[int, JobInfo]:
        del now
        return {i: self._rows[i].info() for i in op.job_ids if i in self._rows}

    def _list_jobs(self, op: ops.ListJobs, now: float) -> list[JobInfo]:
        del now
        rows = [
            r
            for r in sorted(self._rows.values(), key=lambda r: -r.id)
            if (op.status is None or r.status is op.status)
            and (op.queue is None or r.queue == op.queue)
            and (op.name is None or r.name == op.name)
            and (r.workflow or not (op.runs_only or op.workflow is not None))
            and (op.workflow is None or r.name.rpartition("@v")[0] == op.workflow)
            and (op.before is None or r.id < op.before)
        ]
        return [r.info() for r in rows[: op.limit]]

    def _cancel(self, op: ops.Cancel, now: float) -> CancelResult:
        row = self._row(op.job_id)
        if row.status in TERMINAL_STATES:
            return CancelResult.FINISHED
        for child in self._children.get(row.id, ()):
            self._cancel(ops.Cancel(child), now)
        if row.status is JobState.RUNNING:
            row.cancel_requested = True
            return CancelResult.REQUESTED
        if row.workflow:  # a worker undoes its completed steps first
            row.cancel_requested = True
            self._wake_run(row.id, now)
            return CancelResult.REQUESTED
        self._apply(row, Cancelled(), now)
        return CancelResult.CANCELLED

    def _retry_job(self, op: ops.RetryJob, now: float) -> bool:
        row = self._row(op.job_id)
        if next_state(row.status, Retried()) is None:
            return False
        key = row.idempotency_key
        if key is not None and self._open_keys.get(key, row.id) != row.id:
            raise compound.key_held(row.id, self._open_keys[key], key)
        if not self._apply(row, Retried(), now, run_at=now):
            return False
        row.error = None  # first: the error it replaces is the last attempt's
        row.attempt = 0
        row.finished_at = None
        row.result = None
        row.cancel_requested = False
        if key is not None:
            self._open_keys[key] = row.id
        return True

    def _discard(self, op: ops.Discard, now: float) -> bool:
        row = self._row(op.job_id)
        if row.status not in PENDING_STATES:
            return False
        self._apply(row, Discarded(), now)
        row.error = op.reason
        return True

    def _rescue(self, op: ops.Rescue, now: float) -> list[RescuedJob]:
        for owner, process in list(self._processes.items()):
            if process.heartbeat_at < op.stale_before:
                del self._processes[owner]
        rescued = []
        for row in self._rows.values():
            if row.status is not JobState.RUNNING or row.lease_until is None:
                continue
            if row.lease_until > now:
                continue
            if row.cancel_requested and not row.workflow:  # a run compensates first
                self._apply(row, Cancelled(), now)
            else:
                event = rescue_outcome(row.attempt, row.max_attempts, now, workflow=row.workflow)
                self._apply(row, event, now, run_at=event.retry_at)
                row.error = f"attempt {row.attempt} lost: its worker stopped heartbeating"
            rescued.append(
                RescuedJob(row.id, row.name, row.queue, row.attempt, row.max_attempts, row.status)
            )
        return rescued

    def _stats(self, op: ops.Stats, now: float) -> dict[str, dict[JobState, int]]:
        del op, now
        out: dict[str, dict[JobState, int]] = {}
        for row in self._rows.values():
            per = out.setdefault(row.queue, {})
            per[row.status] = per.get(row.status, 0) + 1
        return out

    def _throughput(self, op: ops.Throughput, now: float) -> dict[str, dict[JobState, int]]:
        del now
        out: dict[str, dict[JobState, int]] = {}
        for row in self._rows.values():
            if row.finished_at is not None and row.finished_at >= math.floor(op.since):
                per = out.setdefault(row.queue, {})
                per[row.status] = per.get(row.status, 0) + 1
        return out

    def _throughput_series(
        self, op: ops.ThroughputSeries, now: float
    ) -> dict[str, dict[JobState, dict[int, int]]]:
        del now
        out: dict[str, dict[JobState, dict[int, int]]] = {}
        for row in self._rows.values():
            if row.finished_at is not None and row.finished_at >= math.floor(op.since):
                second = math.floor(row.finished_at)
                steps = out.setdefault(row.queue, {}).setdefault(row.status, {})
                start = second - second % op.step
                steps[start] = steps.get(start, 0) + 1
        return out

    def _fold_counts(self, op: ops.FoldCounts, now: float) -> None:
        """Counts are read off the rows: nothing is kept to fold."""
        del op, now

    def _pause_queue(self, op: ops.PauseQueue, now: float) -> bool:
        del now
        changed = (op.queue in self._paused) != op.paused
        if op.paused:
            self._paused.add(op.queue)
        else:
            self._paused.discard(op.queue)
        return changed

    def _paused_queues(self, op: ops.PausedQueues, now: float) -> frozenset[str]:
        del op, now
        return frozenset(self._paused)

    def _beat(self, op: ops.Beat, now: float) -> None:
        known = self._processes.get(op.owner)
        started = now if known is None else known.started_at
        self._processes[op.owner] = ProcessInfo(
            op.owner, op.queues, started, now, op.details, op.names
        )

    def _wake_all(self, op: ops.WakeAll, now: float) -> None:
        del op, now  # no other process to tell

    def _leave(self, op: ops.Leave, now: float) -> None:
        del now
        self._processes.pop(op.owner, None)
        for name, (owner, _) in list(self._leases.items()):
            if owner == op.owner:
                del self._leases[name]

    def _processes_list(self, op: ops.Processes, now: float) -> list[ProcessInfo]:
        del op, now
        return sorted(self._processes.values(), key=lambda p: (p.started_at, p.owner))

    def _waiting_names(self, op: ops.WaitingNames, now: float) -> dict[str, frozenset[str]]:
        del now
        return names_by_queue(
            (row.queue, row.name)
            for row in self._rows.values()
            if row.status in PENDING_STATES and (op.queues is None or row.queue in op.queues)
        )

    def _lead(self, op: ops.Lead, now: float) -> bool:
        owner, until = self._leases.get(op.name, (op.owner, now))
        if owner != op.owner and until > now:
            return False
        self._leases[op.name] = (op.owner, op.until)
        return True

    def _fire_cron(self, op: ops.FireCron, now: float) -> FireResult:
        state = self._cron.get(op.name)
        if (state.last_tick if state else None) != op.expected_last:
            return FireResult(conflict=True)
        last_job = state.last_job_id if state else None
        last_row = None if last_job is None else self._rows.get(last_job)
        busy = last_row is not None and not last_row.status.is_terminal
        if op.jobs and op.skip_if_running and busy:
            skipped = (state.skipped if state else 0) + len(op.jobs)
            self._cron[op.name] = CronState(op.name, op.new_last, last_job, skipped)
            return FireResult(skipped=len(op.jobs))
        ids = tuple(e.id for e in self._enqueue(ops.Enqueue(op.jobs), now))
        skipped = state.skipped if state else 0
        self._cron[op.name] = CronState(op.name, op.new_last, ids[-1] if ids else last_job, skipped)
        return FireResult(job_ids=ids)

    def _cron_states(self, op: ops.CronStates, now: float) -> dict[str, CronState]:
        del op, now
        return dict(self._cron)

    def _purge(self, op: ops.Purge, now: float) -> list[int]:
        del now
        statuses = set(op.statuses)
        victims = sorted(
            (
                r for r in self._rows.values()
                if r.status in statuses and r.finished_at is not None
                and r.finished_at < op.before
                and (r.queue == op.queue if op.queue is not None else r.queue not in op.exclude)
                and not (op.keep_retained and r.retain is not None)
            ),
            key=lambda r: (r.finished_at or 0.0, r.id),
        )[: max(op.limit, 0)]  # fmt: skip
        for row in victims:
            self._forget(row)
        return sorted(row.id for row in victims)

    def _purge_expired(self, op: ops.PurgeExpired, now: float) -> list[int]:
        del now
        expired = sorted(
            (at, row.id) for row in self._rows.values()
            if (at := row.expires_at()) is not None and at < op.at
        )[: max(op.limit, 0)]  # fmt: skip
        for _, job_id in expired:
            self._forget(self._rows[job_id])
        return sorted(job_id for _, job_id in expired)

    def _delete(self, op: ops.Delete, now: float) -> JobState:
        del now
        row = self._row(op.job_id)
        if row.status not in TERMINAL_STATES:
            raise InvalidStateError(not_finished(row.id, row.status))
        self._forget(row)
        return row.status

    def _forget(self, row: Row) -> None:
        """A finished job goes, with what only it refers to."""
        del self._rows[row.id]
        key = row.idempotency_key
        if key is not None and self._done_keys.get(key, (None,))[0] == row.id:
            del self._done_keys[key]
        for records in (self._steps, self._signals, self._children):
            records.pop(row.id, None)  # a run's record goes with it

    def _matching(self, where: ops.JobFilter, states: frozenset[JobState]) -> list[int]:
        ids = [
            job_id for job_id, r in sorted(self._rows.items())
            if job_id > where.after_id and r.status in states
            and (where.queue is None or r.queue == where.queue)
            and (where.name is None or r.name == where.name)
            and (where.since is None or (r.finished_at or r.created_at) >= where.since)
        ]  # fmt: skip
        return ids[: max(where.limit, 0)]

    def _attempts(self, op: ops.Attempts, now: float) -> list[AttemptRecord]:
        del now
        row = self._rows.get(op.job_id)
        if row is None:
            return []
        current = [] if row.error is None else [
            AttemptRecord(row.attempt, row.started_at, row.error)
        ]  # fmt: skip
        return [*row.history, *current]

    def _retry_many(self, op: ops.RetryMany, now: float) -> ops.BulkResult:
        return self._compound(compound.retry_many(op), now)

    def _discard_many(self, op: ops.DiscardMany, now: float) -> ops.BulkResult:
        return self._compound(compound.discard_many(op), now)

    def _compound(self, steps: compound.Steps[T], now: float) -> T:
        """Run a compound op (:mod:`storage._compound`) in this batch."""

        def step(request: compound.Step) -> object:
            if isinstance(request, compound.Matching):
                return self._matching(request.where, request.states)
            if isinstance(request, compound.Running):
                return [
                    (row.id, row.lease) for row in self._rows.values()
                    if row.status is JobState.RUNNING and row.queue == request.queue
                    and row.lease_owner == request.owner
                ]  # fmt: skip
            if isinstance(request, ops.RetryJob):
                return self._retry_job(request, now)
            if isinstance(request, ops.Discard):
                return self._discard(request, now)
            return self._finish(request, now)

        return compound.run(steps, step)

    # --- workflows ---------------------------------------------------------------------

    def _record_of(self, row: Row) -> WorkflowRecord:
        children = (self._rows[i] for i in self._children.get(row.id, ()) if i in self._rows)
        return WorkflowRecord(
            run_id=row.id,
            created_at=row.created_at,
            cancel_requested=row.cancel_requested,
            steps=tuple(e for _, e in sorted(self._steps.get(row.id, {}).items())),
            signals=tuple(self._signals.get(row.id, ())),
            children=tuple(
                ChildRecord(c.id, c.name, c.status, c.result, c.error) for c in children
            ),
            workflow=row.workflow,
        )

    def _load_workflow(self, op: ops.LoadWorkflow, now: float) -> WorkflowRecord | None:
        del now
        row = self._owned(op.run_id, op.lease)
        if row is None:
            return None
        row.wake_requested = False
        return self._record_of(row)

    def _read_workflow(self, op: ops.ReadWorkflow, now: float) -> WorkflowRecord | None:
        del now
        row = self._rows.get(op.run_id)
        return None if row is None else self._record_of(row)

    def _latest_steps(self, op: ops.LatestSteps, now: float) -> dict[int, StepRecord]:
        del now
        entries = {run_id: self._steps.get(run_id) for run_id in op.run_ids}
        return {run_id: steps[max(steps)] for run_id, steps in entries.items() if steps}

    def _record_step(self, op: ops.RecordStep, now: float) -> StepWrite:
        row = self._owned(op.run_id, op.lease)
        if row is None:
            return StepWrite(applied=False)
        step, child_id = op.step, None
        if op.child is not None:
            [enqueued] = self._enqueue(ops.Enqueue((op.child,)), now)
            child_id = enqueued.id
            step = attrs.evolve(step, result=json.dumps(child_id))
        if op.consume_signal is not None:
            waiting = self._signals.get(op.run_id, [])
            self._signals[op.run_id] = [s for s in waiting if s.id != op.consume_signal]
        if op.clear_cancel:
            row.cancel_requested = False
        self._steps.setdefault(op.run_id, {})[step.seq] = step
        return StepWrite(applied=True, child_id=child_id)

    def _send_signal(self, op: ops.SendSignal, now: float) -> int:
        row = self._row(op.run_id)
        if not row.workflow:
            raise InvalidArgumentError(not_a_run(row.id, row.name))
        if row.status in TERMINAL_STATES:
            raise InvalidStateError(
                f"run {row.id} has finished ({row.status}); a signal to it would never be read"
            )
        json.loads(op.payload)  # refuse anything that is not JSON text
        signal = SignalRecord(self._next_signal, op.name, op.payload, now)
        self._next_signal += 1
        self._signals.setdefault(op.run_id, []).append(signal)
        self._wake_run(op.run_id, now)
        return signal.id
