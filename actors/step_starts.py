"""Workflow steps shown ``running`` from their start, at no cost to the short ones.

A step's function may run for a millisecond or for an hour; a watcher of its run (the API,
the run page, its event stream) must see it running either way. Writing every start would
double a run's record writes, mostly for steps that end before anyone could look. So a
worker hands each start here as the step's function begins and takes it back as it ends,
before its outcome is written; a start still here :data:`TICK` later is written as a
``running`` entry of the run's record (queued without waiting for the reply: a lost one
costs only a late view). A step that ends sooner is never written as running: its outcome
shows as soon. A process whose steps begin and end all the time pays a dict entry per
step and about one wake-up of this actor per tick.

Order: a start is queued only while its step runs (between the two calls, decided in this
one thread), so before the step's outcome, and the storage actor keeps one run's writes
in order: a ``running`` entry never replaces a finished one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from trioforge.actors.storage_actor import StorageHandle
from trioforge.storage import ops

__all__ = ["TICK", "StepStarts"]

#: A step whose function has run this long is written as running.
TICK = 0.01

#: (run id, sequence number) of a step.
_Key = tuple[int, int]


class StepStarts:
    """This process's steps whose functions run now, written as running once they last."""

    def __init__(self, storage: StorageHandle) -> None:
        self._storage = storage
        #: Steps running and not yet written, oldest first: when each began, its write.
        self._running: dict[_Key, tuple[float, Callable[[], ops.RecordStep]]] = {}
        self._busy = trio.Event()
        self._busy_since = 0.0

    @contextmanager
    def running(self, run_id: int, seq: int, write: Callable[[], ops.RecordStep]) -> Iterator[None]:
        """While inside, step ``seq`` of run ``run_id`` runs; ``write()`` is its start's
        record write, built only if the step lasts. Not blocking."""
        key = (run_id, seq)
        now = trio.current_time()
        self._running[key] = (now, write)
        if not self._busy.is_set():
            self._busy_since = now
            self._busy.set()
        try:
            yield
        finally:
            self._running.pop(key, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write each start :data:`TICK` after it, if its step still runs: asleep while no
        step runs, and about once a tick while only short ones begin and end (each wake
        sleeps until the oldest start still here is due)."""
        task_status.started()
        while True:
            await self._busy.wait()
            await trio.sleep_until(self._busy_since + TICK)
            while self._running:  # oldest start first (insertion order)
                key, (began, write) = next(iter(self._running.items()))
                if began + TICK > trio.current_time():
                    await trio.sleep_until(began + TICK)
                    continue
                del self._running[key]
                self._storage.call_nowait(write())
            self._busy = trio.Event()
