"""The storage contract for finding jobs nobody runs, on every backend: the job names each
process records with its heartbeat, and the names of each queue's pending jobs."""

from __future__ import annotations

from tests.contract.test_contract import T0, claim, enqueue, finish, job, one
from trioforge._core.states import Failed, Succeeded
from trioforge.storage import Backend, Outcome, ops


async def test_a_process_row_keeps_the_job_names_it_runs(backend: Backend) -> None:
    await one(backend, ops.Beat("p1", ("q",), names=("a", "b")), T0)
    await one(backend, ops.Beat("old", ("q",)), T0)  # an older trioforge says nothing
    await one(backend, ops.Beat("p1", ("q", "r"), names=("a", "c")), T0 + 1)  # replaced
    rows = {p.owner: p for p in await one(backend, ops.Processes(), T0 + 2)}
    assert (rows["p1"].queues, rows["p1"].names) == (("q", "r"), ("a", "c"))
    assert rows["old"].names is None
    await one(backend, ops.Beat("p2", ("q",), names=()), T0 + 3)
    rows = {p.owner: p for p in await one(backend, ops.Processes(), T0 + 3)}
    assert rows["p2"].names == ()


async def test_waiting_names_are_those_of_pending_jobs_per_queue(backend: Backend) -> None:
    await enqueue(
        backend,
        job("a", queue="q"), job("a", queue="q"), job("b", queue="q", run_at=T0 + 60),
        job("c", queue="r"), job("done", queue="r"), job("busy", queue="s"),
        job("again", queue="s"),
    )  # fmt: skip
    [done] = (await claim(backend, queue="r", names=frozenset({"done"}))).jobs
    assert await finish(backend, done, Outcome(done.id, done.lease, Succeeded()), T0)
    [again] = (await claim(backend, queue="s", names=frozenset({"again"}))).jobs
    retry = Outcome(again.id, again.lease, Failed(retry_at=T0 + 10))
    assert await finish(backend, again, retry, T0)  # retrying: waiting
    await claim(backend, queue="s", names=frozenset({"busy"}))  # running: not waiting
    assert await one(backend, ops.WaitingNames()) == {
        "q": frozenset({"a", "b"}), "r": frozenset({"c"}), "s": frozenset({"again"}),
    }  # fmt: skip
    assert await one(backend, ops.WaitingNames(("r", "s", "t"))) == {
        "r": frozenset({"c"}), "s": frozenset({"again"}),
    }  # fmt: skip
    assert await one(backend, ops.WaitingNames(())) == {}
