"""What the client does to stored jobs as an operator would: cancel, retry and discard
(one job or many), delete one finished job, purge, pause and resume queues, and signal
workflow runs."""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable
from typing import Any

from trioforge._codec import DEFAULT_CODEC, by_value
from trioforge._core.durations import Duration, seconds
from trioforge._core.errors import InvalidArgumentError, InvalidStateError
from trioforge._core.states import JobState
from trioforge._core.text import check_storable
from trioforge._new_jobs import check_queue, run_time
from trioforge._reads import ClientReads, JobId, check_filters, check_job_id, parse_state
from trioforge._registry import Registry
from trioforge.actors import Finished, RunningJobs, StopReason
from trioforge.storage import CancelResult, ops

__all__ = ["ClientOperations"]


class ClientOperations(ClientReads):
    """The operating half of :class:`~trioforge.Client`: each method changes stored jobs
    or queues, and wakes this process's claimers when that makes work due here."""

    _registry: Registry | None
    _finished: Finished
    _running: RunningJobs | None
    _wake: Callable[[str, float], None] | None

    async def cancel(self, job_id: JobId) -> bool:
        """Cancel a job. Pending: it never runs. Running here: its cancel scope fires before
        this call touches storage. Running in another process: that process stops it at its
        next heartbeat. Ends ``cancelled``, never retried. False if it had already finished.
        """
        job_id = check_job_id(job_id)
        stopped_here = self._running is not None and self._running.stop(job_id, StopReason.USER)
        result = await self._storage.call(ops.Cancel(job_id))
        if result is CancelResult.CANCELLED:
            self._finished.notify(job_id)
        elif result is CancelResult.REQUESTED and self._running is not None:
            self._running.cancel_running(job_id)
            if self._wake is not None and not stopped_here:  # maybe a waiting workflow run,
                info = await self.get(job_id)  # due now to be undone
                self._wake(info.queue, info.run_at)
        # FINISHED after stopping it here: its worker recorded the cancel first.
        return stopped_here or result is not CancelResult.FINISHED

    async def retry(self, job_id: JobId) -> bool:
        """Make a dead or cancelled job available again with fresh attempts."""
        job_id = check_job_id(job_id)
        done = await self._storage.call(ops.RetryJob(job_id))
        if done and self._wake is not None:
            info = await self.get(job_id)
            self._wake(info.queue, info.run_at)
        return done

    async def retry_many(
        self,
        *,
        status: JobState | str = JobState.DEAD,
        queue: str | None = None,
        name: str | None = None,
        since: float | dt.datetime | None = None,
    ) -> builtins.list[int]:
        """Retry every dead (or cancelled) job matching all the filters given, with fresh
        attempts; ``since``: that finished at or after it. Jobs whose idempotency key an
        unfinished job holds are skipped. Returns the ids retried. Runs in pages of 1,000
        jobs, each its own transaction: cancelling it keeps the pages already done."""
        state = parse_state(status)
        if state not in (JobState.DEAD, JobState.CANCELLED):
            raise InvalidArgumentError(f"only dead or cancelled jobs are retried, not {status!r}")
        done = await self._bulk(
            lambda where: ops.RetryMany(state, where), queue=queue, name=name, since=since
        )
        if self._wake is not None and done:
            infos = await self._storage.call(ops.GetMany(tuple(done)))
            for queue_name in {info.queue for info in infos.values()}:
                self._wake(queue_name, self._clock.now())
        return done

    async def discard_many(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        since: float | dt.datetime | None = None,
        reason: str = "discarded by operator",
    ) -> builtins.list[int]:
        """Send every pending job (of ``status``: scheduled, available or retrying; None:
        all three) matching the filters to ``dead`` without running it; ``since``: enqueued
        at or after it. Returns the ids discarded; pages as :meth:`retry_many`."""
        state = None if status is None else parse_state(status)
        if state is not None and (state.is_terminal or state is JobState.RUNNING):
            raise InvalidArgumentError(f"only pending jobs are discarded, not {status!r}")
        done = await self._bulk(
            lambda where: ops.DiscardMany(state, where, reason), queue=queue, name=name,
            since=since,
        )  # fmt: skip
        for job_id in done:
            self._finished.notify(job_id)
        return done

    async def _bulk(
        self,
        op: Callable[[ops.JobFilter], ops.RetryMany | ops.DiscardMany],
        *,
        queue: str | None,
        name: str | None,
        since: float | dt.datetime | None,
    ) -> builtins.list[int]:
        check_filters(queue=queue, name=name)
        when = None if since is None else run_time(0.0, None, since)
        after: int | None = 0
        done: builtins.list[int] = []
        while after is not None:
            page = await self._storage.call(op(ops.JobFilter(queue, name, when, after)))
            done.extend(page.ids)
            after = page.last_seen
        return done

    async def purge(
        self,
        *,
        status: JobState | str,
        older_than: Duration,
        queue: str | None = None,
        batch: int = 500,
    ) -> int:
        """Delete finished jobs of ``status`` (completed, dead or cancelled) that finished
        more than ``older_than`` ago, oldest first, ``batch`` per transaction; the number
        deleted. What the retention sweeper does, on demand."""
        state = parse_state(status)
        if not state.is_terminal:
            raise InvalidArgumentError(f"only finished jobs are purged, not {status!r}")
        check_filters(queue=queue)
        age = seconds(older_than, "older_than", error=InvalidArgumentError)
        before, deleted = self._clock.now() - age, 0
        while True:
            ids = await self._storage.call(ops.Purge((state,), before, batch, queue))
            deleted += len(ids)
            if len(ids) < batch:
                return deleted

    async def pause(self, queue: str) -> bool:
        """Stop every process on this database from claiming jobs of ``queue``, until
        :meth:`resume`. Running jobs finish; enqueues are still stored. Durable across
        restarts. False if it was paused already."""
        check_queue(queue)
        return await self._storage.call(ops.PauseQueue(queue, paused=True))

    async def resume(self, queue: str) -> bool:
        """Let ``queue``'s jobs be claimed again, here at once and elsewhere on the next
        wake-up (PostgreSQL notifies) or poll. False if it was not paused."""
        check_queue(queue)
        changed = await self._storage.call(ops.PauseQueue(queue, paused=False))
        if changed and self._wake is not None:
            self._wake(queue, self._clock.now())
        return changed

    async def discard(self, job_id: JobId, reason: str = "discarded by operator") -> bool:
        """Send a pending job to ``dead`` without running it. False if it is running or has
        finished; a dead job raises InvalidStateError (to remove it, :meth:`delete` it)."""
        job_id = check_job_id(job_id)
        done = await self._storage.call(ops.Discard(job_id, reason))
        if done:
            self._finished.notify(job_id)
        elif (await self.get(job_id)).status is JobState.DEAD:
            raise InvalidStateError(
                f"job {job_id} is dead already; to remove it, delete it "
                f"(client.delete({job_id}) or `trioforge jobs delete {job_id}`)"
            )
        return done

    async def delete(self, job_id: JobId) -> JobState:
        """Remove one finished job (completed, dead, cancelled or compensated) for good,
        with its attempts and, for a workflow run, its record and signals: what retention
        does to it later, now. The state it was in. Raises JobNotFoundError, or
        InvalidStateError while it is unfinished (cancel or discard it first)."""
        return await self._storage.call(ops.Delete(check_job_id(job_id)))

    async def signal(self, run_id: JobId, name: str, payload: Any = True) -> int:
        """Send signal ``name`` to workflow run ``run_id``: kept until a
        ``wait_for_signal(name)`` of the run takes it, and the run is woken. ``payload`` is
        any JSON value or attrs instance (not None: that is what a timed-out wait returns).
        Returns the signal's id. Raises JobNotFoundError, or InvalidStateError once the run
        finished. Cancellation: the signal may still be stored."""
        run_id = check_job_id(run_id)
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError("a signal name must be a non-empty string")
        check_storable(name, "signal name", InvalidArgumentError)
        if payload is None:
            raise InvalidArgumentError(
                "a signal's payload cannot be None (a timed-out wait returns None); send "
                "True or a value"
            )
        codec = DEFAULT_CODEC if self._registry is None else self._registry.codec
        text = codec.encode(by_value(Any, payload), payload, f"payload of signal {name!r}")
        signal_id = await self._storage.call(ops.SendSignal(run_id, name, text))
        if self._wake is not None:  # a run waiting in this process is due now
            info = await self.get(run_id)
            self._wake(info.queue, info.run_at)
        return signal_id
