"""The relay: wake-ups addressed to this process alone that it cannot take, passed on to
every process.

An enqueue on PostgreSQL tells one process serving the queue of its due jobs (picked at
random among those claiming, busy or not) rather than every process serving it (each of
which would claim, and all but one find nothing). A fetcher that has no free slot, whose
claim failed or left jobs over (:func:`trioforge._core.wakes.left_over`), or that is
stopping, hands the wake-up here without waiting, as does a listener back from a drop;
the relay sends everything gathered meanwhile as one ``WakeAll`` (one round trip for a
burst). If that fails, the other processes find the jobs at their next poll. A stopping
runtime closes the relay once its pools are done and waits, briefly, for what was handed
over to be sent (:meth:`Relay.finish`): the wake-ups a stopping process passes on come
last.
"""

from __future__ import annotations

import contextlib
import logging
import math

import trio

from trioforge.actors.storage_actor import StorageHandle, log_failure
from trioforge.storage import ops

__all__ = ["Relay"]

log = logging.getLogger("trioforge.relay")


#: How many of its own wake-ups for every process a relay remembers until they come back.
ECHOES = 256


class Relay:
    def __init__(self, storage: StorageHandle) -> None:
        self._storage = storage
        self._send, self._receive = trio.open_memory_channel[tuple[str, float]](math.inf)
        self._running = False
        self._done = trio.Event()
        self._echoes: dict[tuple[str, float], int] = {}  # sent, not heard back yet

    def echo(self, queue: str, run_at: float) -> bool:
        """Whether a wake-up heard for every process is one this relay sent (forgotten
        once heard): this process's fetcher already claimed for it, or could not, so it
        ignores it, and the others claim without racing it for the same rows (a claim
        skips the rows another claim has locked, and a job held back by a concurrency
        limit that one process skips is one it never waits for)."""
        key = (queue, run_at)
        count = self._echoes.get(key)
        if count is None:
            return False
        if count > 1:
            self._echoes[key] = count - 1
        else:
            del self._echoes[key]
        return True

    def pass_on(self, queue: str, run_at: float) -> None:
        """Have every process hear that work on ``queue`` falls due at ``run_at`` (once the
        relay runs; never blocks)."""
        with contextlib.suppress(trio.ClosedResourceError):
            self._send.send_nowait((queue, run_at))

    async def finish(self, seconds: float) -> None:
        """Take nothing more, and wait until what was handed over is sent or ``seconds``
        have passed (shielded: a runtime torn down by a cancel still passes its wake-ups
        on, for as long as storage answers within that time)."""
        self._send.close()
        if self._running:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + seconds):
                await self._done.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send what is handed over until :meth:`finish` (then what is left) or a cancel
        (which drops what is not sent yet)."""
        self._running = True
        task_status.started()
        try:
            await self._relay()
        finally:
            self._done.set()

    async def _relay(self) -> None:
        async for queue, run_at in self._receive:
            wakes = {queue: run_at}
            while True:
                try:
                    queue, run_at = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):  # (finishing: the last ones)
                    break
                wakes[queue] = min(run_at, wakes.get(queue, run_at))
            for key in wakes.items():  # before: the echo may be heard before the reply
                self._echoes[key] = self._echoes.get(key, 0) + 1
            while len(self._echoes) > ECHOES:  # never heard back (the listener dropped)
                del self._echoes[next(iter(self._echoes))]
            try:
                await self._storage.call(ops.WakeAll(tuple(wakes.items())))
            except Exception as exc:
                for key in wakes.items():
                    self._echoes.pop(key, None)
                log_failure(
                    log, exc, "could not pass wake-ups on for %s; other processes find "
                    "those jobs at their next poll", ", ".join(sorted(wakes)),
                )  # fmt: skip
