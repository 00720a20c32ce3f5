"""``Client.watch``: one job's status and progress as they change, until it finishes."""

from __future__ import annotations

from types import TracebackType

import trio

from trioforge._errors import JobNotFoundError, TrioforgeError
from trioforge.actors import LiveFeed
from trioforge.storage import JobInfo

__all__ = ["JobWatch"]


class JobWatch:
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

    def __init__(self, feed: LiveFeed, job_id: int) -> None:
        self._feed = feed
        self._job_id = job_id
        self._receive: trio.MemoryReceiveChannel[JobInfo | None] | None = None
        self._done = False

    def __aiter__(self) -> JobWatch:
        return self

    async def __anext__(self) -> JobInfo:
        if self._done:
            raise StopAsyncIteration
        if self._receive is None:
            self._receive = self._feed.subscribe(self._job_id)
        try:
            info = await self._receive.receive()
        except trio.EndOfChannel:
            self._done = True
            raise TrioforgeError(
                f"stopped watching job {self._job_id}: the client closed; watch inside its block"
            ) from None
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None
        if info is None:
            self._done = True
            raise JobNotFoundError(f"no job with id {self._job_id}")
        if info.is_terminal:
            self._done = True
            self._receive.close()
        return info

    async def aclose(self) -> None:
        """Stop watching (the feed forgets this subscriber at the job's next change)."""
        self._done = True
        if self._receive is not None:
            self._receive.close()

    async def __aenter__(self) -> JobWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
