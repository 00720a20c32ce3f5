"""What this process is running right now: one cancel scope per attempt, and the leases
it holds.

Workers register an attempt's scope (by job id and lease) when it starts and drop it when it
ends. Keyed by lease as well as job id because after a stall two attempts of one job can run
here at once: a stale one whose lease was taken over, and its rescued successor.
Cancel requests (from ``rt.cancel``, the heartbeat, or shutdown) fire the scope at once and
record *why*, because the reason decides the outcome the worker writes.

A lease is held from the claim until the attempt's outcome is recorded, which can be after
the handler returned: while the database is away, the outcome writer retries and the
heartbeat keeps renewing. Each held lease knows until when storage last confirmed it
(``expiry``): past that another process may rescue the job, so retrying is pointless.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Collection, Iterable

import attrs
import trio

from trioforge.actors.live import LiveFeed
from trioforge.storage import RenewResult

__all__ = ["Finished", "Running", "RunningJobs", "StopReason"]


class StopReason(enum.Enum):
    USER = "cancelled by request"  # terminal: cancelled, never retried
    SHUTDOWN = "runtime shutting down"  # released for another worker, attempt not counted
    LOST = "lease lost"  # another owner has the job now; write nothing


@attrs.define(eq=False)
class Running:
    lease: int
    scope: trio.CancelScope
    reason: StopReason | None = None
    #: When the attempt's ``timeout`` runs out (trio time; inf: no timeout).
    timeout_at: float = math.inf
    #: The job's ``heartbeat_timeout``: each heartbeat moves the scope's deadline this far
    #: ahead, never past ``timeout_at`` (None: no heartbeat needed).
    beat_every: float | None = None
    #: Another attempt of the same job running here (a stale one and its rescued
    #: successor), linked rather than kept in a dict per job: a wide pool holds an entry
    #: per running job, and almost never a second.
    other: Running | None = None

    def set_deadlines(self, timeout: float | None, heartbeat_timeout: float | None) -> None:
        """Start the attempt's clocks: its overall timeout and its first heartbeat window."""
        now = trio.current_time()
        self.timeout_at = math.inf if timeout is None else now + timeout
        self.beat_every = heartbeat_timeout
        self.beat()

    def beat(self) -> None:
        """The handler showed it is alive: its next heartbeat is due ``beat_every`` from now."""
        if self.scope.cancel_called:  # fired already: keep what it fired for
            return
        if self.beat_every is None:
            self.scope.deadline = self.timeout_at
        else:
            self.scope.deadline = min(self.timeout_at, trio.current_time() + self.beat_every)

    @property
    def missed_heartbeat(self) -> bool:
        """Whether the deadline that fired was a heartbeat's, not the overall timeout."""
        return self.beat_every is not None and self.scope.deadline < self.timeout_at


#: How long a cancel for a job claimed but not yet started here is remembered.
_REMEMBER_CANCEL_SECONDS = 60.0


class RunningJobs:
    def __init__(self) -> None:
        self._jobs: dict[int, Running] = {}  # job id -> its attempts here (``other``)
        # Cancels that storage reported as "running" before the job's worker registered
        # it here (claimed, maybe not yet started): job id -> (the tick it came at, the
        # trio time, for pruning). Applied when an attempt starts whose claim was sent
        # before that tick; a claim sent later found the job pending again (retried), so
        # the cancel was about an earlier attempt and is dropped.
        self._early_cancels: dict[int, tuple[int, float]] = {}
        self._tick = 0  # orders claims sent against cancels heard, in this process
        self._claimed_at: dict[tuple[int, int], int] = {}  # (job id, lease) -> claim's tick
        self._held: dict[tuple[int, int], float] = {}  # (job id, lease) -> lease expiry
        # Attempts whose handler returned, their outcome not yet recorded (still held).
        self._ended: set[tuple[int, int]] = set()

    def __len__(self) -> int:
        """Attempts running here: one per job, and the rare second ones (linked) besides."""
        return len(self._jobs) + sum(
            len(self._attempts(job_id)) - 1 for job_id, e in self._jobs.items() if e.other
        )

    def _attempts(self, job_id: int) -> list[Running]:
        attempts, entry = [], self._jobs.get(job_id)
        while entry is not None:
            attempts.append(entry)
            entry = entry.other
        return attempts

    def _attempt(self, job_id: int, lease: int) -> Running | None:
        entry = self._jobs.get(job_id)
        while entry is not None and entry.lease != lease:
            entry = entry.other
        return entry

    def start(self, job_id: int, lease: int, scope: trio.CancelScope | None = None) -> Running:
        """Register the attempt holding ``lease`` as running in ``scope`` (None: a new one),
        which cancels by id fire until :meth:`finish`."""
        entry = Running(lease, scope if scope is not None else trio.CancelScope())
        self._unlink(job_id, lease)  # (one lease runs one attempt: a repeat replaces it)
        entry.other = self._jobs.get(job_id)
        self._jobs[job_id] = entry
        early = self._early_cancels.pop(job_id, None)
        claimed_at = self._claimed_at.get((job_id, lease))
        if early is not None and (claimed_at is None or claimed_at < early[0]):
            self.stop(job_id, StopReason.USER, lease=lease)
        return entry

    def beat(self, job_id: int, lease: int) -> None:
        """The attempt holding ``lease`` called ``ctx.heartbeat`` or ``ctx.progress``: move
        its heartbeat deadline (if its job has a ``heartbeat_timeout``)."""
        entry = self._attempt(job_id, lease)
        if entry is not None and entry.beat_every is not None:
            entry.beat()

    def cancel_running(self, job_id: int) -> None:
        """Storage says ``job_id`` is running: stop it if it is here, or when it starts here
        (it may be claimed by this process and on its way to a worker)."""
        if self.stop(job_id, StopReason.USER):
            return
        now = trio.current_time()
        self._early_cancels = {
            k: v for k, v in self._early_cancels.items() if now - v[1] < _REMEMBER_CANCEL_SECONDS
        }
        self._tick += 1
        self._early_cancels[job_id] = (self._tick, now)

    def claiming(self) -> int:
        """Call just before sending a claim; pass the returned tick to :meth:`hold` for
        the jobs it claims, so a cancel heard after it is known to be about them."""
        self._tick += 1
        return self._tick

    def finish(self, job_id: int, lease: int) -> None:
        if (job_id, lease) in self._held:
            self._ended.add((job_id, lease))
        self._unlink(job_id, lease)

    def _unlink(self, job_id: int, lease: int) -> None:
        """Forget the attempt holding ``lease`` (if registered), keeping the job's others."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return
        if entry.lease == lease:
            if entry.other is None:
                del self._jobs[job_id]
            else:
                self._jobs[job_id] = entry.other
            return
        while entry.other is not None:
            if entry.other.lease == lease:
                entry.other = entry.other.other
                return
            entry = entry.other

    def stop(self, job_id: int, reason: StopReason, *, lease: int | None = None) -> bool:
        """Fire the scope of the job's attempt holding ``lease`` (None: every attempt of
        the job) if it runs here; the first reason given wins."""
        entries = [e for e in self._attempts(job_id) if lease is None or e.lease == lease]
        for entry in entries:
            if entry.reason is None:
                entry.reason = reason
            entry.scope.cancel()
        return bool(entries)

    def stop_all(self, reason: StopReason) -> None:
        for job_id in list(self._jobs):
            self.stop(job_id, reason)

    def hold(self, job_id: int, lease: int, until: float, claimed_at: int | None = None) -> None:
        """A claim gave this process ``lease`` on the job, valid until ``until``;
        ``claimed_at`` is the tick :meth:`claiming` gave before the claim was sent."""
        key = (job_id, lease)  # one tuple for both tables
        self._held[key] = until
        if claimed_at is not None:
            self._claimed_at[key] = claimed_at

    def release(self, job_id: int, lease: int) -> None:
        """The attempt's outcome is recorded (or its lease is gone): stop renewing it."""
        self._held.pop((job_id, lease), None)
        self._claimed_at.pop((job_id, lease), None)
        self._ended.discard((job_id, lease))

    def ending(self) -> frozenset[tuple[int, int]]:
        """(job id, lease) of the attempts that ended here, their outcome not yet recorded:
        a claim counts them out of their concurrency limits."""
        return frozenset(self._ended)

    def expiry(self, job_id: int, lease: int) -> float | None:
        """Until when storage last confirmed the lease (None: not held here any more)."""
        return self._held.get((job_id, lease))

    def leases(self) -> tuple[tuple[int, int], ...]:
        """(job id, lease) of every attempt whose lease this process holds: claimed,
        running, or with its outcome not yet recorded."""
        return tuple(self._held)

    def renewed(
        self, requested: Iterable[tuple[int, int]], until: float, result: RenewResult
    ) -> None:
        """Apply a lease renewal's reply: confirmed leases last until ``until``; attempts
        cancelled elsewhere are stopped as cancelled; lost leases are stopped and let go."""
        for pair in requested:
            if pair in result.lost:
                self.release(*pair)
            elif pair in self._held:
                self._held[pair] = until
        for job_id in result.cancel_requested:  # also a job claimed here, not yet started
            self.cancel_running(job_id)
        for job_id, lease in result.lost:
            self.stop(job_id, StopReason.LOST, lease=lease)


class Finished:
    """Tells this process's live feed the moment an outcome is recorded here, or jobs are
    claimed here, so waiters in this process wake without waiting for the storage notice
    to come back."""

    def __init__(self, feed: LiveFeed | None = None) -> None:
        self._feed = feed
        self._callbacks: dict[int, list[Callable[[], None]]] = {}

    def on_finish(self, job_id: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once when ``job_id``'s outcome is recorded here (a workflow
        run waiting on its children is woken without waiting for a poll)."""
        self._callbacks.setdefault(job_id, []).append(callback)

    def forget(self, job_id: int) -> None:
        """Drop the callbacks registered for ``job_id`` (it ended where this process did
        not see it)."""
        self._callbacks.pop(job_id, None)

    def claimed(self, job_ids: Iterable[int]) -> None:
        """Jobs this process just claimed: watchers here see them ``running`` now, before
        the claim's storage notice comes back."""
        if self._feed is not None:
            self._feed.changed(job_ids)

    def notify(self, job_id: int) -> None:
        self.notify_all((job_id,))

    def notify_all(self, job_ids: Collection[int]) -> None:
        """The outcomes of ``job_ids`` are recorded (one message to the feed for a batch)."""
        if not job_ids:
            return
        if self._feed is not None:
            self._feed.changed(job_ids)
        if self._callbacks:
            for job_id in job_ids:
                for callback in self._callbacks.pop(job_id, ()):
                    callback()
