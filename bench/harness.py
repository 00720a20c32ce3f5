"""How every bench ends: an overall deadline, a failed subprocess shown with its stderr, and
the figures measured so far printed as they come (so a bench stopped early still shows them).

A bench prints each figure when it has it (``say``), runs its body under ``bounded`` and
reads from its subprocesses only through ``Child``, which keeps draining their stderr so a
chatty child can never block on a full pipe (the way a bench used to hang in silence).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence

import trio

#: Exit status of a bench stopped by its deadline (a failure: its rows are incomplete).
STOPPED = 3
#: The subprocesses started through ``Child`` and not yet reaped.
LIVE: set[trio.Process] = set()


class ChildFailed(RuntimeError):
    """A subprocess of a bench exited early or never said it was ready."""


def say(*lines: str) -> None:
    """Print at once: a bench killed later still leaves what it measured on the terminal."""
    print(*lines, sep="\n", flush=True)


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, rows: dict[str, str]) -> None:
    """A section of figures: its title, then one aligned line per row."""
    say(f"\n{name}", *(f"  {key:38} {value}" for key, value in rows.items()))


def add_deadline(parser: argparse.ArgumentParser, default: float) -> None:
    parser.add_argument(
        "--deadline",
        type=float,
        default=default,
        help=f"seconds (default {default:.0f}): the bench stops there, keeping what it printed",
    )


def bounded(name: str, deadline: float, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` in trio, stopped after ``deadline`` seconds; exit non-zero if stopped."""

    async def run() -> bool:
        with trio.move_on_after(deadline) as scope:
            await body()
        return scope.cancelled_caught

    # The backstop, should a cleanup itself hang: a minute after the deadline, kill the
    # children and leave.
    watchdog = threading.Timer(deadline + 60, hard_stop, (name, deadline))
    watchdog.daemon = True
    watchdog.start()
    try:
        stopped = trio.run(run)
    except* ChildFailed as group:
        say(*(f"\n{name}: FAILED: {exc}" for exc in leaves(group)))
        sys.exit(1)
    if stopped:
        say(f"\n{name}: stopped at its deadline ({deadline:.0f} s); the figures above are all "
            "it measured")  # fmt: skip
        sys.exit(STOPPED)


def hard_stop(name: str, deadline: float) -> None:
    say(f"\n{name}: still cleaning up a minute after its deadline ({deadline:.0f} s); "
        "killing its subprocesses and exiting")  # fmt: skip
    for proc in list(LIVE):
        proc.kill()
    os._exit(STOPPED)


def leaves(group: BaseExceptionGroup[ChildFailed]) -> list[ChildFailed]:
    """The failures in a group of them (trio's nurseries nest them in groups)."""
    found: list[ChildFailed] = []
    for exc in group.exceptions:
        found += leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


class Child:
    """A subprocess whose stderr is always drained (kept, bounded, for the failure report)."""

    def __init__(self, name: str, proc: trio.Process) -> None:
        self.name = name
        self.proc = proc
        self.stderr = bytearray()
        self._stdout = bytearray()
        self._seen = trio.Condition()
        self._stderr_closed = trio.Event()

    @classmethod
    async def start(
        cls,
        nursery: trio.Nursery,
        name: str,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        stdin: bool = False,
    ) -> Child:
        proc = await trio.lowlevel.open_process(
            list(command),
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        child = cls(name, proc)
        LIVE.add(proc)
        nursery.start_soon(child._drain_stderr)
        return child

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.receive_some():
            self.stderr += chunk
            del self.stderr[: max(0, len(self.stderr) - 64_000)]
            async with self._seen:
                self._seen.notify_all()
        self._stderr_closed.set()  # all of it is in: a failure report need not wait
        async with self._seen:
            self._seen.notify_all()

    def failure(self, what: str) -> ChildFailed:
        code = self.proc.returncode
        status = "still running" if code is None else f"exit status {code}"
        tail = self.stderr.decode(errors="replace").strip()[-4000:] or "(no stderr)"
        return ChildFailed(f"{self.name} {what} ({status}); its stderr:\n{tail}")

    async def wait_stderr(self, marker: bytes) -> None:
        """Until ``marker`` appears on its stderr; the child's exit before that is a failure."""
        async with self._seen:
            while marker not in self.stderr:
                if self.proc.returncode is not None or self.proc.poll() is not None:
                    raise self.failure(f"exited before saying {marker.decode()!r}")
                with trio.move_on_after(0.5):
                    await self._seen.wait()

    async def read_line(self) -> bytes:
        """The next line of its stdout; end of file is a failure."""
        assert self.proc.stdout is not None
        while (end := self._stdout.find(b"\n")) < 0:
            chunk = await self.proc.stdout.receive_some()
            if not chunk:
                await self.proc.wait()
                with trio.move_on_after(2):  # the rest of its stderr, for the report
                    await self._stderr_closed.wait()
                raise self.failure("closed its stdout")
            self._stdout += chunk
        line = bytes(self._stdout[: end + 1])
        del self._stdout[: end + 1]
        return line

    async def stop(self) -> None:
        """SIGINT, then SIGKILL if it is still there after 10 s."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        with trio.move_on_after(10):
            await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        LIVE.discard(self.proc)
