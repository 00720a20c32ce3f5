"""Jobs nobody runs: pending jobs whose name no live process registers in their queue.

A job is claimed only by a worker whose registry has its name, so a job of a name no
worker registers (a typo, a job removed or renamed, a worker not deployed yet) waits
forever without a word. Each process records the names it runs at each heartbeat; these
pure functions compare them with the names of the pending jobs, and a worker warns at
start about waiting jobs of its queues it will not run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence, Set

from trioforge.actors import StorageHandle
from trioforge.actors.storage_actor import log_failure
from trioforge.storage import ProcessInfo, ops

__all__ = ["STALE_AFTER", "not_registered", "unserved", "warn_unregistered"]

log = logging.getLogger("trioforge.runtime")

#: A process silent for longer than this no longer counts as running its jobs (the
#: maintenance leader forgets it after a job lease anyway; this covers a database that
#: no worker maintains any more).
STALE_AFTER = 60.0


def unserved(
    waiting: Mapping[str, Set[str]], processes: Sequence[ProcessInfo], now: float
) -> dict[str, tuple[str, ...]]:
    """Per queue, the sorted names of its pending jobs that no live process runs there. A
    process that does not say which names it runs (an older trioforge) is taken to run
    every job of its queues."""
    live = [p for p in processes if now - p.heartbeat_at <= STALE_AFTER]
    out = {}
    for queue, names in waiting.items():
        serving = [p for p in live if queue in p.queues]
        if any(p.names is None for p in serving):
            continue
        served = {name for p in serving for name in p.names or ()}
        missing = tuple(sorted(set(names) - served))
        if missing:
            out[queue] = missing
    return out


def not_registered(waiting: Mapping[str, Set[str]], names: Set[str]) -> list[tuple[str, str]]:
    """The ``(queue, name)`` of waiting jobs whose name is not in ``names``, sorted."""
    return sorted((queue, n) for queue, found in waiting.items() for n in found - names)


async def warn_unregistered(storage: StorageHandle, queues: Sequence[str], names: Set[str]) -> None:
    """Warn once for each job name waiting in ``queues`` that this worker does not run."""
    try:
        waiting: dict[str, frozenset[str]] = await storage.call(ops.WaitingNames(tuple(queues)))
    except Exception as exc:
        log_failure(log, exc, "could not look for waiting jobs this worker does not run")
        return
    for queue, name in not_registered(waiting, names):
        log.warning(
            "queue %s has jobs named %r waiting that this worker does not run (its registry "
            "has no such job): they wait for a worker that registers it",
            queue, name, extra={"queue": queue, "job_name": name},
        )  # fmt: skip
