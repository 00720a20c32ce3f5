"""Model-based test of workflows: random programs, with crashes injected at random moments,
against the same program run without crashes.

A program is a list of durable calls: steps (that fail their first ``fails`` attempts, with
an undo or not), sleeps, signal waits (the signal sent before the run starts, sent long
after with no timeout, or never sent and timed out), and fan-outs of child jobs; it may end
by raising Discard. Each play runs the program in virtual time on one memory backend shared
by successive "processes": a crash severs the current runtime from storage at a random
instant (nothing it sends arrives any more) and starts a new one, which rescues the run once
its lease expires. Every play must end as the crash-free play does: the same final status
and result, the same record (kinds, names, statuses, results, attempts); no completed
entry is ever written twice; no sleep ends early; and the undos run for exactly the
completed steps that have one, newest first.

The signals and timeouts are chosen so a crash's delay cannot change which happens first
(a crash may legitimately let a late signal beat a timeout): that keeps "the same as
without crashes" an exact expectation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import trio
from hypothesis import event, given
from hypothesis import strategies as st

import trioforge
from tests.test_partitions import Partition
from trioforge import DatabaseUnavailableError, JobState, VirtualClock, WorkflowContext
from trioforge.storage import MemoryBackend, StepStatus, StepWrite, ops
from trioforge.testing import EPOCH, run

LEASE = 5.0
TIMINGS: dict[str, Any] = {"heartbeat_interval": 1.0, "lease_seconds": LEASE, "poll_interval": 1.0}
#: Steps whose results are instants.
TIMES = ("mark", "woke")
#: When a late signal is sent: after any crash-free program of this size has reached it.
LATE = 400.0


@attrs.frozen
class Step:
    name: str
    seconds: int
    fails: int
    attempts: int
    undo: bool


@attrs.frozen
class Sleep:
    seconds: int


@attrs.frozen
class Signal:
    name: str
    sent: Literal["early", "late", "never"]


@attrs.frozen
class Children:
    numbers: tuple[int, ...]


Call = Step | Sleep | Signal | Children


@attrs.frozen
class Program:
    calls: tuple[Call, ...]
    discard_at_end: bool


@attrs.frozen
class Played:
    status: JobState
    result: Any
    record: tuple[tuple[str, str, StepStatus, Any, int], ...]
    undos: tuple[str, ...]
    problems: tuple[str, ...]


def programs() -> st.SearchStrategy[Program]:
    step = st.builds(
        Step,
        name=st.just(""),
        seconds=st.integers(0, 3),
        fails=st.sampled_from([0, 0, 0, 1, 2]),  # mostly succeeding, so runs get far
        attempts=st.integers(1, 3),
        undo=st.booleans(),
    )
    call = st.one_of(
        step,
        step,
        step,
        st.builds(Sleep, st.integers(1, 30)),
        st.builds(Signal, st.just(""), st.sampled_from(["early", "late", "never"])),
        st.builds(Children, st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple)),
    )

    def named(calls: list[Call], discard: bool) -> Program:
        out: list[Call] = []
        for i, c in enumerate(calls):
            if isinstance(c, Step | Signal):
                c = attrs.evolve(c, name=f"{type(c).__name__.lower()}{i}")
            out.append(c)
        return Program(tuple(out), discard)

    return st.builds(named, st.lists(call, min_size=2, max_size=8), st.booleans())


class Severable(Partition):
    """One process's view of the shared backend; ``sever()`` is that process dying."""

    def __init__(self, backend: MemoryBackend) -> None:
        super().__init__(backend)
        self.severed = False

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        if self.severed:
            raise DatabaseUnavailableError("this process is gone")
        return await super().execute(batch, now)


class Recording(MemoryBackend):
    """The shared backend, remembering every completed record entry written."""

    def __init__(self) -> None:
        super().__init__()
        self.completed: list[tuple[int, int]] = []

    async def execute(self, batch: Sequence[ops.Op], now: float) -> list[object]:
        results = await super().execute(batch, now)
        for op, result in zip(batch, results, strict=True):
            if (
                isinstance(op, ops.RecordStep)
                and isinstance(result, StepWrite)
                and result.applied
                and op.step.status is StepStatus.COMPLETED
            ):
                self.completed.append((op.run_id, op.step.seq))
        return results


def registry_for(program: Program, undos: list[str], problems: list[str]) -> trioforge.Registry:
    registry = trioforge.Registry()
    clock = VirtualClock(EPOCH)

    @registry.job("square", retry=trioforge.Retry(max_attempts=3, base_delay=1))
    async def square(ctx: trioforge.JobContext, n: int) -> int:
        await trio.sleep(n)
        return n * n

    def undo(name: str) -> None:
        undos.append(name)

    @registry.workflow("model")
    async def model(ctx: WorkflowContext) -> list[Any]:
        out: list[Any] = []
        for i, call in enumerate(program.calls):
            if isinstance(call, Step):
                step = call

                async def body(step: Step = step) -> str:
                    await trio.sleep(step.seconds)
                    if ctx.step_attempt <= step.fails:
                        raise ConnectionError(f"{step.name} attempt {ctx.step_attempt}")
                    return f"{step.name}@{ctx.step_attempt}"

                retry = trioforge.Retry(max_attempts=step.attempts, base_delay=2)
                compensate = (lambda n=step.name: undo(n)) if step.undo else None
                out.append(await ctx.step(step.name, body, retry=retry, compensate=compensate))
            elif isinstance(call, Sleep):
                reached = await ctx.step(f"mark{i}", clock.now)
                await ctx.sleep(call.seconds)
                after = await ctx.step(f"woke{i}", clock.now)
                if after < reached + call.seconds:
                    problems.append(f"a {call.seconds}s sleep woke after {after - reached}s")
                out.append("slept")
            elif isinstance(call, Signal):
                timeout = 50.0 if call.sent == "never" else None
                out.append(await ctx.wait_for_signal(call.name, timeout=timeout))
            else:
                handles = [await ctx.start_child(square, n) for n in call.numbers]
                out.append(await ctx.gather(*handles))
        if program.discard_at_end:
            raise trioforge.Discard("the program says so")
        return out

    return registry


def play(program: Program, crashes: Sequence[float]) -> Played:
    undos: list[str] = []
    problems: list[str] = []
    registry = registry_for(program, undos, problems)
    shared = Recording()
    clock = VirtualClock(EPOCH)

    async def main() -> Played:
        async with trioforge.open_client(shared, registry=registry, clock=clock) as client:
            run_id = await client.enqueue("model")
            for call in program.calls:
                if isinstance(call, Signal) and call.sent == "early":
                    await client.signal(run_id, call.name, call.name)
            async with trio.open_nursery() as nursery:
                late = [c for c in program.calls if isinstance(c, Signal) and c.sent == "late"]
                if late:

                    async def send_late() -> None:
                        await trio.sleep(LATE)
                        for c in late:  # unless the run ended first (a step failed)
                            with contextlib.suppress(trioforge.InvalidStateError):
                                await client.signal(run_id, c.name, c.name)

                    nursery.start_soon(send_late)
                for n, at in enumerate([*crashes, None]):
                    view = Severable(shared)
                    with trio.CancelScope() as process:
                        async with trioforge.open_runtime(
                            registry, database=view, clock=clock, owner=f"p{n}", **TIMINGS
                        ):
                            if at is None:
                                with trio.fail_after(24 * 3600):
                                    info = await client.wait(run_id)
                                break
                            await trio.sleep_until(at)
                            view.severed = True  # the process dies on the spot
                            process.cancel()
            workflow = await client.workflow(run_id)
        seen: set[tuple[int, int]] = set()
        for entry in shared.completed:
            if entry in seen:
                problems.append(f"record entry {entry} completed twice")
            seen.add(entry)
        record = tuple(
            # When a mark or a wake-up happened depends on the crashes; the rest must not.
            (s.kind.value, s.name, s.status, None if s.name[:4] in TIMES else s.result,
             s.attempts)
            for s in workflow.steps
        )  # fmt: skip
        # The undos' first calls (a crash may repeat one), in order.
        first_undos = tuple(dict.fromkeys(undos))
        return Played(info.status, info.result, record, first_undos, tuple(problems))

    return run(main)


def expected_undos(played: Played) -> tuple[str, ...]:
    return tuple(
        name
        for kind, name, status, _, _ in reversed(played.record)
        if kind == "step" and status is StepStatus.COMPENSATED
    )


@given(
    programs(),
    # Crash instants fall between the whole seconds every event happens on.
    st.lists(st.integers(1, 400 * 64).map(lambda t: t / 64 + 1 / 128), max_size=2).map(sorted),
)
def test_crashes_change_nothing_a_run_records_or_returns(
    program: Program, crash_offsets: list[float]
) -> None:
    clean = play(program, [])
    event(f"{clean.status.value}, {len(clean.undos)} undone, {len(crash_offsets)} crashes")
    assert clean.problems == ()
    crashed = play(program, crash_offsets)
    assert crashed.problems == ()
    assert (crashed.status, crashed.result) == (clean.status, clean.result)
    assert crashed.record == clean.record
    # Undos ran for exactly the completed steps that have one, newest first.
    assert crashed.undos == clean.undos == expected_undos(clean)
    undoable = [c.name for c in program.calls if isinstance(c, Step) and c.undo]
    if clean.status is JobState.COMPLETED:
        assert clean.undos == ()
    else:
        assert set(clean.undos) <= set(undoable)
