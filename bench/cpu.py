"""CPU time spent on a measured run by every process that works for it.

The method, printed beside each CPU figure: user + system time from ``/proc/<pid>/stat``
(all threads; clock ticks, 10 ms each) of each client process (the bench's drivers and
worker processes, never the bench's own orchestrating process), plus the same for each
PostgreSQL backend serving a connection to the run's own database. A backend is found by
its process title (``postgres: ... <user> <database> <client> <state>``), so each run gets
a fresh database and only its connections count; the server's background processes (WAL
writer, checkpointer, autovacuum) are not counted. Backends are polled every 50 ms and
read once more at the end, while the run's connections are still open; a backend that
closes between two polls loses at most its last 50 ms. Backends are visible only when the
server runs on this machine; otherwise the figure says "client processes only".
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

TICK = os.sysconf("SC_CLK_TCK")
METHOD = (
    "CPU = user+system from /proc/<pid>/stat of the client processes and of the PostgreSQL "
    "backends of the run's own database (polled every 50 ms, read again at the end)"
)


def cpu_seconds(pid: int) -> float | None:
    """User + system seconds of ``pid`` so far; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def backends_of(database: str) -> list[int]:
    """Pids of the PostgreSQL backends connected to ``database`` on this machine."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            title = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"postgres: ") and database.encode() in title.split():
            pids.append(int(entry.name))
    return pids


class Meter:
    """CPU seconds used since ``start`` by some processes and the backends of a database."""

    def __init__(self, pids: list[int], database: str | None) -> None:
        self.pids = pids
        self.database = database
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.backends: set[int] = set()

    def _sample(self) -> None:
        found = backends_of(self.database) if self.database else []
        self.backends.update(found)
        for pid in [*self.pids, *found]:
            used = cpu_seconds(pid)
            if used is not None:
                self.last[pid] = used

    def start(self) -> None:
        self._sample()
        self.base = dict(self.last)

    async def poll(self) -> None:
        """Run in a nursery for the run's length: catches backends that come and go."""
        while True:
            self._sample()
            await trio.sleep(0.05)

    def used(self) -> tuple[float, float]:
        """(client processes, database backends) CPU seconds since ``start``."""
        self._sample()
        spent = {pid: used - self.base.get(pid, 0.0) for pid, used in self.last.items()}
        clients = sum(spent.get(pid, 0.0) for pid in self.pids)
        servers = sum(spent.get(pid, 0.0) for pid in self.backends)
        return clients, servers

    def per_job(self, jobs: int) -> str:
        """``'212 µs (clients 150 + PostgreSQL 62)'``."""
        clients, servers = self.used()
        us = 1e6 / jobs
        if self.database and not self.backends:
            return f"{clients * us:,.0f} µs (client processes only: no backend seen here)"
        if not self.database:
            return f"{clients * us:,.0f} µs"
        return (
            f"{(clients + servers) * us:,.0f} µs (clients {clients * us:,.0f} + "
            f"PostgreSQL {servers * us:,.0f})"
        )
