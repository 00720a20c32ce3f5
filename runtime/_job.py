"""``Job``: the handle ``enqueue`` returns, typed by the job's result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, final

from trioforge._core.durations import Duration, optional_seconds
from trioforge._core.errors import InvalidArgumentError, ResultTimeoutError, TrioforgeError
from trioforge._core.states import JobState

if TYPE_CHECKING:
    from trioforge._registry import JobDefinition
    from trioforge._watch import JobWatch
    from trioforge.storage import JobInfo

__all__ = ["Job", "JobCancelledError", "JobFailedError", "JobOwner", "check_outcome"]


class JobFailedError(TrioforgeError, RuntimeError):
    """``await job.result()`` of a job that ended ``dead`` (or, a workflow run,
    ``compensated``): it has no result. ``info`` is the job as it ended (its error)."""

    def __init__(self, info: JobInfo) -> None:
        super().__init__(
            f"job {info.id} ({info.name}) ended {info.status.value}: {info.error}; see "
            f"client.attempts({info.id}) for every attempt's error"
        )
        self.info = info


class JobCancelledError(TrioforgeError, RuntimeError):
    """``await job.result()`` of a job that was cancelled: it has no result. ``info`` is
    the job as it ended."""

    def __init__(self, info: JobInfo) -> None:
        super().__init__(
            f"job {info.id} ({info.name}) was cancelled; client.retry({info.id}) runs it again"
        )
        self.info = info


R_co = TypeVar("R_co", covariant=True)
_R = TypeVar("_R")


class JobOwner(Protocol):
    """What a handle calls: the client (trio or asyncio) that enqueued it."""

    async def get(self, job_id: int) -> JobInfo: ...
    async def cancel(self, job_id: int) -> bool: ...
    def watch(self, job_id: int) -> JobWatch: ...
    async def _wait_within(self, job_id: int, limit: float | None) -> JobInfo | None: ...
    def _result_of(self, definition: JobDefinition[Any, _R], info: JobInfo) -> _R: ...


@final
class Job(Generic[R_co]):
    """One stored job, from ``enqueue`` (or ``client.job(definition, id)``), typed by what
    its handler returns. Equal to (and hashed as) its id: a handle on the same job, or the
    int itself; ``str()`` and f-strings give the id too (so URLs and messages built from
    it read as before). Every client call that takes a job id takes a ``Job`` too. Usable
    while the client it came from is open."""

    __slots__ = ("_client", "_definition", "_id")

    def __init__(self, client: JobOwner, definition: JobDefinition[Any, R_co], job_id: int) -> None:
        self._client = client
        self._definition = definition
        self._id = job_id

    @property
    def id(self) -> int:
        """The job's id (an int, the same on every process)."""
        return self._id

    @property
    def definition(self) -> JobDefinition[Any, R_co]:
        """The definition it was enqueued by: its result decodes by its codec and type."""
        return self._definition

    def __eq__(self, other: object) -> bool:
        # An int too, so code that held ids (``info.id == job``) reads the same.
        if isinstance(other, Job):
            return self._id == other._id
        if isinstance(other, int) and not isinstance(other, bool):
            return self._id == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"Job(id={self._id}, name={self._definition.name!r})"

    def __str__(self) -> str:
        return str(self._id)

    def __format__(self, spec: str) -> str:
        return format(self._id, spec)

    async def result(self, timeout: Duration | None = None) -> R_co:  # noqa: ASYNC109
        """Wait until the job is finished and return its result, decoded to the handler's
        return type. Raises :class:`~trioforge.JobFailedError` if it ended dead (or, a
        workflow run, compensated), :class:`~trioforge.JobCancelledError` if it was
        cancelled, :class:`~trioforge.ResultTimeoutError` (a ``TimeoutError``) once
        ``timeout`` (seconds or a timedelta) passed first.

        Only the waiting stops on a timeout or when the caller is cancelled: the job goes
        on (``await job.cancel()`` stops it), and ``result()`` can be awaited again.

        Args:
            timeout: The longest to wait (seconds or a timedelta); None waits as long as
                the job takes.

        Returns:
            The handler's return value, decoded to its return type ``R``.

        Raises:
            JobFailedError: The job ended dead (or, a workflow run, compensated); its
                ``info`` is the final snapshot.
            JobCancelledError: The job was cancelled.
            ResultTimeoutError: ``timeout`` passed first (the job goes on).
        """
        limit = optional_seconds(timeout, "timeout", error=InvalidArgumentError)
        info = await self._client._wait_within(self._id, limit)
        if info is None:
            assert limit is not None
            raise ResultTimeoutError(self._id, limit)
        check_outcome(self._definition, info)
        return self._client._result_of(self._definition, info)

    async def info(self) -> JobInfo:
        """The job's current snapshot (``client.get``)."""
        return await self._client.get(self._id)

    async def cancel(self) -> bool:
        """Cancel the job (``client.cancel``): False if it had already finished."""
        return await self._client.cancel(self._id)

    def watch(self) -> JobWatch:
        """``async for info in job.watch()``: its snapshots until it finishes
        (``client.watch``)."""
        return self._client.watch(self._id)


def check_outcome(definition: JobDefinition[Any, Any], info: JobInfo) -> None:
    """Raise unless ``info``, a finished job of ``definition``, completed."""
    spec = definition.workflow
    ours = info.name == definition.name or (
        spec is not None and info.name.rpartition("@v")[0] == spec.name
    )
    if not ours:
        raise InvalidArgumentError(
            f"job {info.id} is a {info.name!r} job, not {definition.name!r}; rebuild its "
            "handle with client.job(<its definition>, id)"
        )
    if info.status is JobState.CANCELLED:
        raise JobCancelledError(info)
    if info.status is not JobState.COMPLETED:
        raise JobFailedError(info)
