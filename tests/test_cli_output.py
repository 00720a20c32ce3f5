"""Stored text never reaches the terminal as control characters: the CLI escapes it, on a
real SQLite file, through every command that prints jobs, queues, workers or runs."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import trio
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

import trioforge
from tests.support.fast import FAST
from trioforge import JobContext, Registry
from trioforge._cli import main
from trioforge._terminal import terminal_text

#: A window title, a screen clear, a right-to-left override and a forged row.
EVIL = "\x1b]0;pwned\x07\x1b[2J\u202eevil\x9b31m\nforged row"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def dangerous(char: str) -> bool:
    """Characters that change what the terminal does or shows rather than print."""
    return (
        unicodedata.category(char) in ("Cc", "Cs")
        or "\u202a" <= char <= "\u202e"
        or ("\u2066" <= char <= "\u2069")
    )


@given(st.text(st.characters(codec=None)))
def test_escaped_text_has_no_controls_and_keeps_only_its_own_lines(text: str) -> None:
    one_line = terminal_text(text)
    assert not any(dangerous(c) for c in one_line)
    one_line.encode("utf-8")  # lone surrogates too are written out
    block = terminal_text(text, lines=True)
    assert not any(dangerous(c) for c in block if c not in "\n\t")
    assert block.count("\n") == text.count("\n")
    if not any(dangerous(c) for c in text):
        assert one_line == text == block


registry = Registry()


@registry.job(f"name{EVIL}", queue=EVIL)
async def fail(ctx: JobContext, text: str) -> None:
    await ctx.progress(50, text)
    raise RuntimeError(text)


@registry.job("paused:job", queue="calm")
async def calm(ctx: JobContext) -> None:
    pass


def test_listings_and_details_escape_stored_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def seed() -> int:
        async with trioforge.open_runtime(
            registry, database=url, queues={EVIL: 1}, owner=f"me{EVIL}", **FAST
        ) as rt:
            job = await rt.enqueue(fail, EVIL, idempotency_key=f"key{EVIL}", max_attempts=1)
            await rt.wait(job)
            return job.id

    job_id = trio.run(seed)
    outputs = {
        "jobs list": cli("jobs", "list", "--database", url),
        "jobs show": cli("jobs", "show", str(job_id), "--database", url),
        "queues list": cli("queues", "list", "--database", url),
        "workflows list": cli("workflows", "list", "--database", url),
    }
    for command, result in outputs.items():
        assert result.exit_code == 0, (command, result.output)
        assert not any(dangerous(c) for c in result.output if c != "\n"), command
    escaped = "\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil\\x9b31m\\nforged row"
    assert outputs["queues list"].output.splitlines()[1].startswith(escaped[:16] + " active")
    assert len(outputs["jobs list"].output.splitlines()) == 2  # the header and one row
    assert len(outputs["queues list"].output.splitlines()) == 2
    shown = outputs["jobs show"].output
    for field in ("name", "queue", "progress", "idempotency key"):
        [line] = [line for line in shown.splitlines() if line.lstrip().startswith(field + ":")]
        assert escaped in line, field
    assert "RuntimeError: \\x1b]0;pwned\\x07" in shown  # the traceback, still a block
    assert "Traceback (most recent call last):\n" in shown
