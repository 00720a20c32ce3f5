"""The live feed: storage's change notices turned into per-job subscriptions.

One per process (client or runtime). ``watch()``, ``wait()``, the HTTP event streams and
the dashboard all subscribe here, each getting a memory channel of snapshots of one job.
The feed opens the backend's change stream (PostgreSQL: LISTEN; SQLite: a
``data_version`` watcher; memory: in-process) the first time anything is watched, and
re-reads only watched jobs that a notice names, in one ``GetMany`` per round: a notice
carries ids, never job data. After (re)connecting it re-reads every watched job, since
notices sent meanwhile are lost; while disconnected it re-reads them every poll interval.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from contextlib import suppress

import attrs
import trio

from trioforge._core.errors import TrioforgeError
from trioforge.actors.storage_actor import StorageHandle, log_failure
from trioforge.storage import Backend, Changed, JobInfo, ops

__all__ = ["LiveFeed", "is_news", "live_feed", "open_live_feed"]

log = logging.getLogger("trioforge.live")

#: Most jobs re-read in one operation.
_READ_CHUNK = 500


def is_news(previous: JobInfo | None, current: JobInfo) -> bool:
    """Whether a subscriber who last saw ``previous`` is told of ``current``: a change of
    status, attempt, progress, progress message or cancel request."""
    return previous is None or (
        previous.status,
        previous.attempt,
        previous.progress,
        previous.progress_message,
        previous.cancel_requested,
    ) != (
        current.status,
        current.attempt,
        current.progress,
        current.progress_message,
        current.cancel_requested,
    )


#: What a subscriber receives: snapshots of its job (the last one terminal), or one None
#: when no such job exists. The channel ends after either.
Update = JobInfo | None


@attrs.frozen
class _Subscribe:
    job_id: int
    send: trio.MemorySendChannel[Update]
    every_read: bool = False


@attrs.frozen
class _Changed:
    job_ids: Changed  # None: any watched job may have changed


@attrs.frozen
class _Connected:
    up: bool


_Message = _Subscribe | _Changed | _Connected


class LiveFeed:
    """The sending side of the live feed, shared by the API and the web app."""

    def __init__(self, send: trio.MemorySendChannel[_Message]) -> None:
        self._send = send
        #: Whether anything ever subscribed: until then the process's own hints are
        #: dropped here, as the feed would (it re-reads only watched jobs), so a worker
        #: that no one watches through does not wake the feed at every claim and outcome.
        self._watched = False

    def subscribe(
        self, job_id: int, *, every_read: bool = False
    ) -> trio.MemoryReceiveChannel[Update]:
        """A channel of ``job_id``'s snapshots: the current one first, then one per visible
        change, ending after a terminal one (or after a single None: no such job). Close
        it to unsubscribe early. Not blocking. ``every_read``: a snapshot at every re-read
        of the job, news or not (a change notice may be about a workflow run's record,
        which a snapshot does not show)."""
        send, receive = trio.open_memory_channel[Update](math.inf)
        self._watched = True
        try:
            self._send.send_nowait(_Subscribe(job_id, send, every_read))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise TrioforgeError("the client is closed; watch jobs inside its block") from None
        return receive

    def changed(self, job_ids: Iterable[int]) -> None:
        """A hint from this process: it just wrote these jobs (re-read them now rather than
        at the storage notice)."""
        if self._watched:  # a later subscriber reads its job when it subscribes
            self.notice(frozenset(job_ids))

    def notice(self, job_ids: Changed) -> None:
        """Storage says these jobs changed (None: maybe any)."""
        self._put(_Changed(job_ids))

    def connected(self, up: bool) -> None:
        """The change stream is up (notices flow) or down (the feed polls)."""
        self._put(_Connected(up))

    def _put(self, message: _Message) -> None:
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(message)

    def close(self) -> None:
        self._send.close()


@attrs.define(eq=False)
class _Subscriber:
    send: trio.MemorySendChannel[Update]
    every_read: bool = False
    last: JobInfo | None = None


class _Watched:
    """The feed's subscriptions and what each was last told, decided synchronously."""

    def __init__(self) -> None:
        self._by_job: dict[int, list[_Subscriber]] = {}

    def __len__(self) -> int:
        return len(self._by_job)

    def ids(self) -> frozenset[int]:
        return frozenset(self._by_job)

    def add(self, job_id: int, send: trio.MemorySendChannel[Update], every_read: bool) -> None:
        self._by_job.setdefault(job_id, []).append(_Subscriber(send, every_read))

    def deliver(self, job_id: int, info: JobInfo | None) -> None:
        """Tell each subscriber of ``job_id`` what is new to it; end the finished ones."""
        keep = []
        for sub in self._by_job.pop(job_id, []):
            try:
                if info is None:
                    sub.send.send_nowait(None)
                elif sub.every_read or is_news(sub.last, info):
                    sub.send.send_nowait(info)
                    sub.last = info
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue  # the subscriber left
            if info is None or info.is_terminal:
                sub.send.close()
            else:
                keep.append(sub)
        if keep:
            self._by_job[job_id] = keep

    def close_all(self) -> None:
        for subs in self._by_job.values():
            for sub in subs:
                sub.send.close()
        self._by_job.clear()


def open_live_feed() -> tuple[LiveFeed, trio.MemoryReceiveChannel[_Message]]:
    send, receive = trio.open_memory_channel[_Message](math.inf)
    return LiveFeed(send), receive


async def live_feed(
    backend: Backend,
    storage: StorageHandle,
    feed: LiveFeed,
    receive: trio.MemoryReceiveChannel[_Message],
    *,
    poll_interval: float,
    retry_interval: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``feed``'s subscriptions until cancelled or closed; then every subscriber's
    channel ends (their ``watch`` raises)."""
    watched = _Watched()
    dirty: set[int] = set()
    connected = failed = streaming = False
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                polling = bool(watched) and (failed or not connected)
                messages = await _next_messages(receive, poll_interval if polling else None)
                if messages is None:  # the feed was closed
                    break
                if not messages:  # a poll: the change stream is down, or a read failed
                    dirty |= watched.ids()
                for message in messages:
                    if isinstance(message, _Subscribe):
                        watched.add(message.job_id, message.send, message.every_read)
                        dirty.add(message.job_id)
                        if not streaming:  # nothing is listened to until needed
                            streaming = True
                            nursery.start_soon(_stream, backend, feed, retry_interval)
                    elif isinstance(message, _Changed):
                        dirty |= watched.ids() if message.job_ids is None else message.job_ids
                    else:
                        connected = message.up
                        if connected:  # catch up on what happened while away
                            dirty |= watched.ids()
                targets = sorted(dirty & watched.ids())
                dirty.clear()
                failed = bool(targets) and not await _reread(storage, watched, targets)
                if failed:
                    dirty.update(targets)
            nursery.cancel_scope.cancel()
    finally:
        watched.close_all()


async def _next_messages(
    receive: trio.MemoryReceiveChannel[_Message], poll: float | None
) -> list[_Message] | None:
    """Everything waiting (at least one message), [] after ``poll`` seconds, None once
    closed."""
    with trio.move_on_after(math.inf if poll is None else poll):
        try:
            messages = [await receive.receive()]
        except trio.EndOfChannel:
            return None
        while True:
            try:
                messages.append(receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return messages
    return []


async def _reread(storage: StorageHandle, watched: _Watched, targets: list[int]) -> bool:
    """Read ``targets`` and deliver what changed; False if storage failed."""
    for start in range(0, len(targets), _READ_CHUNK):
        chunk = tuple(targets[start : start + _READ_CHUNK])
        try:
            infos: dict[int, JobInfo] = await storage.call(ops.GetMany(chunk))
        except Exception as exc:
            log_failure(log, exc, "cannot re-read %d watched job(s)", len(chunk))
            return False
        for job_id in chunk:
            watched.deliver(job_id, infos.get(job_id))
    return True


async def _stream(backend: Backend, feed: LiveFeed, retry_interval: float) -> None:
    """Forward the backend's change notices to the feed, reconnecting when they drop."""
    while True:
        try:
            async with backend.changes() as changes:
                feed.connected(True)
                async for job_ids in changes:
                    feed.notice(job_ids)
            log.warning("change notices stopped; reconnecting")
        except Exception as exc:
            log.warning("cannot follow job changes (%s); retrying in %.1fs", exc, retry_interval)
        feed.connected(False)
        await trio.sleep(retry_interval)
