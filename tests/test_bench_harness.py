"""The benches end: a failed subprocess is reported with its stderr as soon as it is gone,
and a bench past its deadline stops with what it printed so far (bench/harness.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from bench.harness import STOPPED, Child, ChildFailed


async def test_a_child_that_dies_is_reported_with_its_stderr_without_waiting() -> None:
    script = "import sys; sys.stderr.write('no database here\\n'); sys.exit(4)"
    async with trio.open_nursery() as nursery:
        child = await Child.start(nursery, "the side", [sys.executable, "-c", script])
        await child.proc.wait()
        # Its stderr has ended: the report must not sit out the 2 s kept for a slow pipe.
        with trio.fail_after(1.5), pytest.raises(ChildFailed) as failed:
            await child.read_line()
    message = str(failed.value)
    assert "the side closed its stdout (exit status 4)" in message
    assert "no database here" in message


async def test_a_child_that_never_gets_ready_fails_with_its_stderr() -> None:
    script = "import sys; sys.stderr.write('Traceback: boom\\n'); sys.exit(1)"
    async with trio.open_nursery() as nursery:
        child = await Child.start(nursery, "worker process 1", [sys.executable, "-c", script])
        with trio.fail_after(30), pytest.raises(ChildFailed) as failed:
            await child.wait_stderr(b"ready")
    assert "exited before saying 'ready'" in str(failed.value)
    assert "Traceback: boom" in str(failed.value)


def test_a_bench_past_its_deadline_exits_3_keeping_what_it_printed() -> None:
    bench = textwrap.dedent(
        """
        import trio
        from bench.harness import bounded, say

        async def body():
            say("first figure: 12 jobs/s")
            await trio.sleep_forever()

        bounded("toy bench", 0.5, body)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", bench],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[1],  # where ``bench`` imports from
    )
    assert done.returncode == STOPPED
    assert "first figure: 12 jobs/s" in done.stdout
    assert "toy bench: stopped at its deadline" in done.stdout
