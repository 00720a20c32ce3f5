"""``Client.watch``: one job's status and progress as they change, until it finishes;
``Client.watch_workflow``: a workflow run with its steps, likewise."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType

import trio

from trioforge._core.errors import JobNotFoundError, TrioforgeError
from trioforge._core.states import JobState
from trioforge._workflow_info import WorkflowInfo
from trioforge.actors import LiveFeed
from trioforge.actors.live import is_news
from trioforge.storage import JobInfo

__all__ = ["RUN_READ_INTERVAL", "JobWatch", "RunWatch", "record_may_have_changed"]

#: A run's record is read at most this often per watcher (seconds): SQLite reports every
#: commit of the database, and a busy one commits hundreds of times a second. Short enough
#: that a step shows running within 0.1 s of its start (see ``actors.step_starts``).
RUN_READ_INTERVAL = 0.05


class _Watch:
    """What both watches share: a subscription to one job's snapshots in the live feed,
    closed by :meth:`aclose` or the ``async with`` block."""

    _what = "job"

    def __init__(self, feed: LiveFeed, job_id: int) -> None:
        self._feed = feed
        self._job_id = job_id
        self._receive: trio.MemoryReceiveChannel[JobInfo | None] | None = None
        self._done = False

    async def _next_snapshot(self, *, every_read: bool = False) -> JobInfo | None:
        """The next snapshot (None: no such job), subscribing at the first call."""
        if self._receive is None:
            self._receive = self._feed.subscribe(self._job_id, every_read=every_read)
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            self._done = True
            raise TrioforgeError(
                f"stopped watching {self._what} {self._job_id}: the client closed; "
                "watch inside its block"
            ) from None
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None

    def _missing(self) -> JobNotFoundError:
        self._done = True
        return JobNotFoundError(f"no job with id {self._job_id}")

    def _finish(self) -> None:
        self._done = True
        assert self._receive is not None
        self._receive.close()

    async def aclose(self) -> None:
        """Stop watching (the feed forgets this subscriber at the job's next change)."""
        self._done = True
        if self._receive is not None:
            self._receive.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class JobWatch(_Watch):
    """An async iterator of a job's snapshots (:class:`~trioforge.JobInfo`): the current
    one first, then one per change of status, attempt, progress, progress message or
    cancel request, ending after the terminal one. Several changes that land between two
    reads arrive as the latest snapshot only.

    ``async with client.watch(job_id) as updates: async for info in updates: ...`` stops
    watching when the block ends; a plain ``async for`` stops at the terminal state or
    when the loop is left and the watch closed (:meth:`aclose`). Raises
    :class:`~trioforge.JobNotFoundError` at the first step for an unknown id.
    Cancellation: waiting for the next snapshot can be cancelled at any time; nothing is
    lost (the next step returns the latest snapshot).
    """

    def __aiter__(self) -> JobWatch:
        return self

    async def __anext__(self) -> JobInfo:
        if self._done:
            raise StopAsyncIteration
        info = await self._next_snapshot()
        if info is None:
            raise self._missing()
        if info.is_terminal:
            self._finish()
        return info

    async def __aenter__(self) -> JobWatch:
        return self


def record_may_have_changed(previous: JobInfo | None, current: JobInfo) -> bool:
    """Whether a run's record may differ from when its row looked like ``previous``: steps
    are recorded only while it runs; a signal to a waiting run moves its ``run_at``; any
    other change of the run shows in its row."""
    return (
        previous is None
        or current.status is JobState.RUNNING
        or previous.status is JobState.RUNNING
        or current.run_at != previous.run_at
        or is_news(previous, current)
    )


class RunWatch(_Watch):
    """An async iterator of a workflow run's views (:class:`~trioforge.WorkflowInfo`):
    the current one first, then one whenever the run or its record (a step, a sleep, a
    signal, a child, an undo) changed, ending after the terminal one. Changes that land
    between two reads arrive as the latest view only; the record is read at most every
    :data:`RUN_READ_INTERVAL` seconds.

    Used like :class:`JobWatch` (``async with client.watch_workflow(run_id) as views``).
    Raises :class:`~trioforge.JobNotFoundError` at the first step for an unknown id and
    :class:`~trioforge.InvalidArgumentError` for a job that is not a run. Cancellation:
    waiting can be cancelled at any time; nothing is lost.
    """

    _what = "run"

    def __init__(
        self,
        feed: LiveFeed,
        run_id: int,
        read: Callable[[int], Awaitable[WorkflowInfo]],
    ) -> None:
        super().__init__(feed, run_id)
        self._read = read
        self._last: WorkflowInfo | None = None
        self._read_at = -float("inf")

    def __aiter__(self) -> RunWatch:
        return self

    async def _snapshot(self) -> JobInfo:
        """The latest snapshot of the run's row, waiting for one if none is queued."""
        info = await self._next_snapshot(every_read=True)
        assert self._receive is not None
        while info is not None and not info.is_terminal:
            try:
                info = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        if info is None:
            raise self._missing()
        return info

    async def __anext__(self) -> WorkflowInfo:
        if self._done:
            raise StopAsyncIteration
        while True:
            info = await self._snapshot()
            previous = None if self._last is None else self._last.job
            if not record_may_have_changed(previous, info):
                continue
            await trio.sleep_until(self._read_at + RUN_READ_INTERVAL)
            self._read_at = trio.current_time()
            view = await self._read(self._job_id)  # the row again too: it may have moved on
            if view == self._last:
                continue
            self._last = view
            if view.job.is_terminal:
                self._finish()
            return view

    async def __aenter__(self) -> RunWatch:
        return self
