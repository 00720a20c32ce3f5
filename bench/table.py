"""The performance table, trioforge beside its peers (`make bench`; `--quick` for a smoke run).

Rows: the SQLite drain beside huey's SQLite backend; the PostgreSQL drain beside PgQueuer;
cross-process enqueue -> start latency beside PgQueuer's; CPU per job (enqueue + drain,
every process that works for it, bench/cpu.py); 1, 3 and 6 worker processes on PostgreSQL
beside PgQueuer's (each side's driver enqueues while they drain), with no-op jobs and
(``io-processes``) with jobs that wait ``--io-seconds`` (20 ms); the CPU per job of a
trickle (one job every 10 ms) with as many idle worker processes, beside PgQueuer's;
workflow steps/s on PostgreSQL; 50,000 I/O-bound jobs at once in one process (and 10,000,
for the cost per job). Each pair runs in the same minute, the order alternating from one
pair to the next; every side runs in a process of its own (bench/trioforge_side.py,
bench/peers/), the peers from a virtualenv the bench installs (bench/peers/__init__.py).
Figures are printed as they come, then the table; never asserted. The whole run stops at
``--deadline``, keeping what it printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from bench import floor, peers, replicas, workflows
from bench.cpu import METHOD, Meter
from bench.databases import add_postgres_url, postgres_databases
from bench.harness import Child, ChildFailed, add_deadline, bounded, leaves, pct, say

ROOT = Path(__file__).resolve().parent.parent
ROWS = (
    "sqlite", "postgres", "latency", "processes", "io-processes", "trickle", "workflows", "wide"
)  # fmt: skip


@dataclass
class Side:
    """One contender's figures over the pairs of a row."""

    name: str
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    def cell(self) -> str:
        if not self.rates:
            return "-"
        rate = spread(self.rates, "{:,.0f}")
        return f"{rate} jobs/s, {spread(self.cpu_us, '{:,.0f}')} µs CPU/job"


def spread(values: list[float], fmt: str) -> str:
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low} to {high}"


def ratios(ours: list[float], theirs: list[float]) -> list[float]:
    return [a / b for a, b in zip(ours, theirs, strict=False) if b]


class Table:
    """The summary printed at the end: one line per row, the peer beside trioforge."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str, str]] = []

    def add(self, row: str, ours: str, theirs: str = "", ratio: str = "") -> None:
        self.lines.append((row, ours, theirs, ratio))

    def show(self) -> None:
        say("\n| row | trioforge | peer | ratio |", "|---|---|---|---|")
        for line in self.lines:
            say("| " + " | ".join(line) + " |")
        say("(taken " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + f"; {METHOD})")


async def drive(command: list[str], name: str, database: str | None) -> dict[str, Any]:
    """Run one side: wait for its ready line, meter it from "go" to its figures."""
    async with trio.open_nursery() as nursery:
        child = await Child.start(nursery, name, command, {"PYTHONPATH": str(ROOT)}, stdin=True)
        try:
            # {"ready": true}: set up, schema installed; "pids": its worker processes
            ready = json.loads(await child.read_line())
            meter = Meter([child.proc.pid, *ready.get("pids", [])], database)
            meter.start()
            nursery.start_soon(meter.poll)
            assert child.proc.stdin is not None
            await child.proc.stdin.send_all(b"go\n")
            figures: dict[str, Any] = json.loads(await child.read_line())
            clients, servers = meter.used()
            await child.proc.stdin.aclose()
            with trio.move_on_after(30):
                await child.proc.wait()
            if child.proc.returncode != 0:
                raise child.failure("did not end cleanly")
        finally:
            with trio.CancelScope(shield=True):
                await child.stop()
            nursery.cancel_scope.cancel()
    figures["cpu_us"] = (clients + servers) * 1e6 / figures["jobs"]
    figures["cpu_split"] = (clients * 1e6 / figures["jobs"], servers * 1e6 / figures["jobs"])
    return figures


def ours(mode: str, database: str, jobs: int) -> list[str]:
    command = [sys.executable, "-m", "bench.trioforge_side", mode, "--database", database]
    return [*command, "--jobs", str(jobs)]


async def pairs(
    row: str,
    count: int,
    jobs: int,
    trioforge: Callable[[], Awaitable[dict[str, Any]]],
    peer_name: str,
    peer: Callable[[], Awaitable[dict[str, Any]]] | None,
    table: Table,
    cpu_row: str | None = None,
    kind: str = "no-op jobs",
) -> dict[str, Side]:
    """``count`` same-minute pairs, alternating which side runs first."""
    sides = {"trioforge": Side("trioforge"), peer_name: Side(peer_name)}
    runners = {"trioforge": trioforge, **({peer_name: peer} if peer else {})}
    say(f"\n{row}: {jobs:,} {kind} with attrs payloads, 64 slots a process")
    for i in range(count):
        order = list(runners) if i % 2 == 0 else list(reversed(runners))
        cells = []
        for name in order:
            figures = await runners[name]()
            rate = figures["jobs"] / figures["drain_s"]
            sides[name].rates.append(rate)
            sides[name].cpu_us.append(figures["cpu_us"])
            clients, servers = figures["cpu_split"]
            split = f" = {clients:,.0f} clients + {servers:,.0f} PostgreSQL" if servers else ""
            cells.append(
                f"{name} {rate:,.0f} jobs/s (enqueue {figures['jobs'] / figures['enqueue_s']:,.0f}"
                f"/s), {figures['cpu_us']:,.0f} µs CPU/job{split}"
            )
        say(f"  pair {i + 1} ({order[0]} first): " + "; ".join(cells))
    mine, theirs = sides["trioforge"], sides[peer_name]
    if theirs.rates:
        speed = spread(ratios(mine.rates, theirs.rates), "{:.2f}x")
        cpu = spread(ratios(mine.cpu_us, theirs.cpu_us), "{:.2f}x")
        table.add(row, mine.cell(), f"{peer_name}: {theirs.cell()}", f"{speed} (CPU {cpu})")
        if cpu_row:
            table.add(
                cpu_row,
                f"{spread(mine.cpu_us, '{:,.0f}')} µs",
                f"{peer_name} {spread(theirs.cpu_us, '{:,.0f}')} µs",
                cpu,
            )
    else:
        table.add(row, mine.cell(), f"{peer_name}: not run")
    return sides


async def install_peers() -> Path | None:
    try:
        return await trio.to_thread.run_sync(peers.peers_python)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        say(f"\nthe peers could not be installed, so they are left out: {exc}")
        return None


async def sqlite_row(args: argparse.Namespace, python: Path | None, table: Table) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = (Path(tmp) / f"db{i}.sqlite" for i in range(1_000_000))

        async def trioforge() -> dict[str, Any]:
            return await drive(
                ours("drain", f"sqlite:///{next(files)}", args.jobs), "trioforge", None
            )

        async def huey() -> dict[str, Any]:
            assert python is not None
            command = [str(python), str(peers.driver("huey")), "--path", str(next(files))]
            return await drive([*command, "--jobs", str(args.jobs)], "huey", None)

        await pairs(
            "SQLite drain vs huey's SQLite backend (64 thread workers)",
            args.pairs, args.jobs, trioforge, "huey", huey if python else None, table,
        )  # fmt: skip


async def postgres_row(args: argparse.Namespace, python: Path | None, table: Table) -> None:
    async with postgres_databases(args.postgres_url) as fresh:

        async def trioforge() -> dict[str, Any]:
            url, name = await fresh()
            return await drive(ours("drain", url, args.jobs), "trioforge", name)

        async def pgqueuer() -> dict[str, Any]:
            assert python is not None
            url, name = await fresh()
            command = [str(python), str(peers.driver("pgqueuer")), "drain", "--dsn", url]
            more = ["--jobs", str(args.jobs), "--batch-size", str(args.peer_batch)]
            return await drive([*command, *more], "PgQueuer", name)

        await pairs(
            f"PostgreSQL drain vs PgQueuer (QueueManager, asyncpg, batch {args.peer_batch})",
            args.pairs, args.jobs, trioforge, "PgQueuer", pgqueuer if python else None, table,
            "CPU per job, enqueue + drain, all processes incl. PostgreSQL backends",
        )  # fmt: skip


async def latency_row(args: argparse.Namespace, python: Path | None, table: Table) -> None:
    say(
        f"\ncross-process enqueue -> start, idle worker, one job every 10 ms, "
        f"{args.samples} samples"
    )
    found: dict[str, list[float]] = {"trioforge": [], "PgQueuer": []}
    async with postgres_databases(args.postgres_url) as fresh:
        for i in range(args.pairs):
            order = ["trioforge", "PgQueuer"] if i % 2 == 0 else ["PgQueuer", "trioforge"]
            for name in order:
                url, _ = await fresh()
                if name == "trioforge":
                    with tempfile.TemporaryDirectory() as tmp:
                        samples, _cancels = await replicas.latencies(url, args.samples, Path(tmp))
                elif python is not None:
                    command = [str(python), str(peers.driver("pgqueuer")), "latency"]
                    command += ["--dsn", url, "--samples", str(args.samples)]
                    samples = (await run_once(command, "PgQueuer latency"))["latencies"]
                else:
                    continue
                found[name] += samples
                say(f"  pair {i + 1}: {name} p50 / p99 {ms(samples)} ms")
        lowest = await floor.floor((await fresh())[0], args.samples)
        say(f"  the floor (insert + NOTIFY commit, LISTEN, claim commit): {ms(lowest)} ms")
    mine, theirs = found["trioforge"], found["PgQueuer"]
    if theirs:
        p50, p99 = (pct(mine, q) / pct(theirs, q) for q in (0.5, 0.99))
        ratio = f"{p50:.2f}x p50, {p99:.2f}x p99"
        table.add(
            "cross-process enqueue -> start, p50 / p99",
            f"{ms(mine)} ms",
            f"PgQueuer {ms(theirs)} ms",
            ratio,
        )
    else:
        table.add(
            "cross-process enqueue -> start, p50 / p99", f"{ms(mine)} ms", "PgQueuer: not run"
        )
    table.add("  its floor: two commits and a NOTIFY (bench/floor.py)", f"{ms(lowest)} ms")


def ms(samples: list[float]) -> str:
    return f"{pct(samples, 0.5) * 1000:.2f} / {pct(samples, 0.99) * 1000:.2f}"


async def run_once(command: list[str], name: str) -> dict[str, Any]:
    """A driver that prints one JSON line and exits (no ready / go)."""
    async with trio.open_nursery() as nursery:
        child = await Child.start(nursery, name, command, {"PYTHONPATH": str(ROOT)})
        try:
            figures: dict[str, Any] = json.loads(await child.read_line())
            await child.proc.wait()
            if child.proc.returncode != 0:
                raise child.failure("did not end cleanly")
        finally:
            with trio.CancelScope(shield=True):
                await child.stop()
            nursery.cancel_scope.cancel()
    return figures


async def processes_row(
    args: argparse.Namespace, python: Path | None, table: Table, job_seconds: float = 0.0
) -> None:
    """1, 3 and 6 (``--processes``) worker processes, each side's driver enqueueing while they
    drain; with ``job_seconds``, jobs that wait that long (I/O-bound: the slots are the
    bound, not the CPU, so more processes can drain faster on this machine too)."""
    rates: dict[str, dict[int, list[float]]] = {"trioforge": {}, "PgQueuer": {}}
    kind = f"jobs of {job_seconds * 1000:g} ms" if job_seconds else "no-op jobs"
    async with postgres_databases(args.postgres_url) as fresh:
        for count in args.processes:
            more = ["--jobs", str(args.jobs), "--processes", str(count)]
            more += ["--job-seconds", str(job_seconds)] if job_seconds else []

            async def trioforge(more: list[str] = more) -> dict[str, Any]:
                url, name = await fresh()
                return await drive([*ours("drain", url, args.jobs), *more[2:]], "trioforge", name)

            async def pgqueuer(more: list[str] = more) -> dict[str, Any]:
                assert python is not None
                url, name = await fresh()
                command = [str(python), str(peers.driver("pgqueuer")), "drain", "--dsn", url]
                return await drive([*command, *more], "PgQueuer", name)

            row = f"PostgreSQL, {count} worker process(es) of 64 slots, enqueue + drain"
            row += f", {kind}" if job_seconds else ""
            sides = await pairs(
                row, args.pairs, args.jobs, trioforge, "PgQueuer", pgqueuer if python else None,
                table, kind=kind,
            )  # fmt: skip
            for name, side in sides.items():
                rates[name][count] = side.rates
    for name, found in rates.items():
        for count in args.processes:
            if count > 1 and found.get(count) and found.get(1):
                scaling = spread(ratios(found[count], found[1]), "{:.2f}x")
                table.add(f"{count} worker processes vs 1 (PostgreSQL, {kind}), {name}", scaling)


async def trickle_row(args: argparse.Namespace, python: Path | None, table: Table) -> None:
    """1, 3 and 6 (``--processes``) idle worker processes, each side's driver enqueueing one
    job every 10 ms: the CPU per job that idle processes cost (the rates only follow the
    driver's)."""
    async with postgres_databases(args.postgres_url) as fresh:
        for count in args.processes:
            more = ["--jobs", str(args.trickle), "--processes", str(count), "--gap", "0.01"]

            async def trioforge(more: list[str] = more) -> dict[str, Any]:
                url, name = await fresh()
                return await drive([*ours("drain", url, args.trickle), *more], "trioforge", name)

            async def pgqueuer(more: list[str] = more) -> dict[str, Any]:
                assert python is not None
                url, name = await fresh()
                command = [str(python), str(peers.driver("pgqueuer")), "drain", "--dsn", url]
                return await drive([*command, *more, "--trickle"], "PgQueuer", name)

            row = f"PostgreSQL trickle, one job every 10 ms, {count} idle worker process(es)"
            await pairs(
                row, args.pairs, args.trickle, trioforge, "PgQueuer", pgqueuer if python else None,
                table,
            )  # fmt: skip


async def workflows_row(args: argparse.Namespace, table: Table) -> None:
    runs, steps = args.runs, workflows.STEPS
    say(
        f"\nworkflow steps/s, {runs:,} runs x {steps} steps, 64 slots, PostgreSQL, "
        f"{args.pairs} runs"
    )
    found = []
    async with postgres_databases(args.postgres_url) as fresh:
        for i in range(args.pairs):
            url, _ = await fresh()
            seconds = await workflows.timed_drain(url, workflows.ten_steps, runs, 64)
            found.append(runs * steps / seconds)
            say(f"  run {i + 1}: {found[-1]:,.0f} steps/s")
    table.add(
        f"workflow steps/s, {runs:,} runs x {steps} steps (PostgreSQL)", spread(found, "{:,.0f}")
    )


async def wide_row(args: argparse.Namespace, table: Table) -> None:
    """Each size twice: in a process that leaves the collector as Python sets it (an
    application's ``open_runtime``), and with the heap settled as ``trioforge worker``
    settles it once ready (frozen, its collector thresholds)."""
    for heap, how in (([], "Python's collector"), (["--worker-heap"], "as trioforge worker")):
        say(
            f"\nI/O-bound jobs at once in one process ({args.sleep:g} s sleep each, a slot "
            f"per job, SQLite), {how}"
        )
        cells = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, jobs in enumerate(args.wide):
                command = ours("wide", f"sqlite:///{Path(tmp) / f'wide{i}.db'}", jobs)
                figures = await run_once(
                    [*command, "--sleep", str(args.sleep), *heap], f"wide {jobs:,}"
                )
                added = figures["rss_peak_kib"] - figures["rss_before_kib"]
                over = figures["wall_s"] - figures["sleep_s"]
                cell = (
                    f"{jobs:,}: done in {figures['wall_s']:.1f} s (+{over:.1f} s), "
                    f"{figures['at_once']:,} at once, peak RSS "
                    f"{figures['rss_peak_kib'] / 1024:,.0f} MB ({added / jobs:.1f} KiB, "
                    f"{figures['cpu_s'] / jobs * 1e6:,.0f} µs CPU per job; full collections: "
                    f"{figures['gc_passes'][2]}, all collections {figures['gc_s']:.1f} s)"
                )
                say(f"  {cell}")
                cells.append(cell)
        table.add(
            f"I/O-bound jobs at once, one process, SQLite, {how}",
            "; ".join(cells),
            "thread pools: -",
        )


async def main(args: argparse.Namespace) -> None:
    table = Table()
    try:
        needs_peers = {"sqlite", "postgres", "latency", "processes", "io-processes", "trickle"}
        python = await install_peers() if needs_peers & set(args.rows) else None
        steps: dict[str, Callable[[], Awaitable[None]]] = {
            "sqlite": lambda: sqlite_row(args, python, table),
            "postgres": lambda: postgres_row(args, python, table),
            "latency": lambda: latency_row(args, python, table),
            "processes": lambda: processes_row(args, python, table),
            "io-processes": lambda: processes_row(args, python, table, args.io_seconds),
            "trickle": lambda: trickle_row(args, python, table),
            "workflows": lambda: workflows_row(args, table),
            "wide": lambda: wide_row(args, table),
        }
        for row in args.rows:
            try:
                await steps[row]()
            except* ChildFailed as group:
                say(*(f"\n{row}: FAILED: {exc}" for exc in leaves(group)))
                table.add(row, "FAILED (above)")
    finally:
        table.show()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one pair: a smoke run")
    parser.add_argument("--jobs", type=int, help="jobs per drain (default 20,000; quick 2,000)")
    parser.add_argument("--pairs", type=int, help="same-minute pairs per row (3; quick 1)")
    parser.add_argument("--samples", type=int, help="latency samples per side (200; quick 30)")
    parser.add_argument("--runs", type=int, help="workflow runs of 10 steps (1,000; quick 100)")
    parser.add_argument("--trickle", type=int, help="jobs of the trickle row (300; quick 50)")
    parser.add_argument(
        "--wide",
        type=int,
        nargs="+",
        help="I/O-bound jobs at once (1,000 10,000 50,000; quick 1,000 5,000)",
    )
    parser.add_argument("--sleep", type=float, default=2.0, help="each I/O-bound job's sleep")
    parser.add_argument(
        "--io-seconds", type=float, default=0.02, help="each job's wait in the io-processes row"
    )
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 3, 6], help="worker process counts (1 3 6)"
    )
    parser.add_argument(
        "--peer-batch",
        type=int,
        default=10,
        help="PgQueuer's batch size in the postgres row (10, its default; at most half the slots)",
    )
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    add_postgres_url(parser)
    add_deadline(parser, 900)
    args = parser.parse_args()
    sizes = {
        "jobs": (20_000, 2_000), "pairs": (3, 1), "samples": (200, 30), "runs": (1000, 100),
        "trickle": (300, 50),
        "wide": ([1_000, 10_000, 50_000], [1_000, 5_000]),
    }  # fmt: skip
    for name, (full, quick) in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


if __name__ == "__main__":
    arguments = parse()
    bounded("bench.table", arguments.deadline, lambda: main(arguments))
