"""The stored counts (stats, throughput) against a recount of the jobs themselves, after
broad random sequences of every operation that changes a job's state, and across the
migration that introduced them on a database already holding jobs."""

from __future__ import annotations

import math
import random
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import BACKENDS
from trioforge import JobState
from trioforge._core.states import (
    TERMINAL_STATES,
    Cancelled,
    Compensated,
    Discarded,
    Failed,
    Released,
    Succeeded,
    Suspended,
)
from trioforge.storage import Backend, ClaimResult, JobInfo, NewJob, Outcome, opened, ops
from trioforge.storage import postgres as postgres_module
from trioforge.storage import sqlite as sqlite_module
from trioforge.storage._records import OutcomeEvent
from trioforge.storage.postgres import PostgresBackend
from trioforge.storage.sqlite import SQLiteBackend

T0 = 1_000.0
QUEUES = ("q1", "q2")
NAMES = frozenset({"a", "b"})

Counts = dict[str, dict[JobState, int]]


def _new_job(rng: random.Random, now: float, parents: list[int]) -> NewJob:
    workflow = rng.random() < 0.15
    return NewJob(
        rng.choice(sorted(NAMES)),
        rng.choice(QUEUES),
        "{}",
        rng.randint(0, 2),
        now + rng.choice([0.0, 0.0, 0.5, 3.0]),
        rng.randint(1, 3),
        f"k{rng.randint(0, 6)}" if rng.random() < 0.2 else None,
        parent_id=rng.choice(parents) if parents and not workflow and rng.random() < 0.3 else None,
        workflow=workflow,
        retain=rng.choice([None, None, None, RETAIN]),
    )


#: A job's own retention, as stored: its expired jobs go by PurgeExpired.
RETAIN = '{"cancelled": 0.0, "compensated": 2.0, "completed": 1.0, "dead": null}'


def _outcome(rng: random.Random, job_id: int, lease: int, now: float) -> Outcome:
    events: list[OutcomeEvent] = [
        Succeeded(), Succeeded(), Failed(now + rng.choice([0.0, 1.0])), Failed(None),
        Discarded(), Cancelled(), Released(), Suspended(now + 2.0), Compensated(),
    ]  # fmt: skip
    event = rng.choice(events)
    return Outcome(job_id, lease, event, result="1" if isinstance(event, Succeeded) else None,
                   error=None if isinstance(event, Succeeded | Released) else "boom")  # fmt: skip


def _ops(rng: random.Random, now: float, ids: list[int], held: dict[int, int]) -> list[ops.Op]:
    """One batch of one to three random operations."""
    out: list[ops.Op] = []
    parents = ids[-20:]
    for _ in range(rng.choice([1, 1, 2, 3])):
        pick = rng.random()
        some = rng.choice(ids) if ids else 1
        if pick < 0.2:
            out.append(
                ops.Enqueue(tuple(_new_job(rng, now, parents) for _ in range(rng.randint(1, 6))))
            )
        elif pick < 0.4:
            out.append(
                ops.Claim(
                    rng.choice(QUEUES), NAMES, rng.randint(1, 5), "w", now + rng.choice([1.0, 5.0])
                )
            )
        elif pick < 0.6 and held:
            chosen = rng.sample(sorted(held.items()), min(len(held), rng.randint(1, 4)))
            out.append(ops.Finish(tuple(_outcome(rng, i, lease, now) for i, lease in chosen)))
        elif pick < 0.65:
            out.append(ops.Cancel(some))
        elif pick < 0.7:
            out.append(ops.Discard(some, "discarded"))
        elif pick < 0.75:
            out.append(ops.RetryJob(some))
        elif pick < 0.8:
            out.append(ops.Rescue(now))
        elif pick < 0.84:
            statuses = tuple(rng.sample(sorted(TERMINAL_STATES, key=str), 2))
            out.append(ops.Purge(statuses, now - rng.choice([0.0, 2.0]), rng.randint(1, 4)))
        elif pick < 0.87:
            status = rng.choice([JobState.DEAD, JobState.CANCELLED])
            out.append(
                ops.RetryMany(status, ops.JobFilter(queue=rng.choice([None, *QUEUES]), limit=3))
            )
        elif pick < 0.9:
            out.append(
                ops.DiscardMany(None, ops.JobFilter(name=rng.choice([None, "a"]), limit=3), "bulk")
            )
        elif pick < 0.93 and held:
            queue = rng.choice(QUEUES)
            out.append(
                ops.ReleaseOrphans(
                    queue, "w", tuple(rng.sample(sorted(held.items()), len(held) // 2))
                )
            )
        elif pick < 0.95:
            out.append(ops.Delete(some))
        elif pick < 0.97:
            out.append(ops.PurgeExpired(now - rng.choice([0.0, 1.0]), rng.randint(1, 4)))
        else:
            out.append(ops.FoldCounts())
    return out


def _recount(jobs: dict[int, JobInfo], since: float | None = None) -> Counts:
    counted: Counter[tuple[str, JobState]] = Counter()
    for info in jobs.values():
        if since is None or (
            info.finished_at is not None and info.finished_at >= math.floor(since)
        ):
            counted[info.queue, info.status] += 1
    out: Counts = {}
    for (queue, status), n in counted.items():
        out.setdefault(queue, {})[status] = n
    return out


async def _check(backend: Backend, ids: list[int], now: float) -> None:
    windows = (now - 0.5, now - 2.7, now - 10.0, 0.0)
    stored, everything, *recent = await backend.execute(
        [ops.GetMany(tuple(ids)), ops.Stats(), *(ops.Throughput(s) for s in windows)], now
    )
    assert isinstance(stored, dict)
    assert everything == _recount(stored)
    for since, counted in zip(windows, recent, strict=True):
        assert counted == _recount(stored, since), since


async def _random_run(
    backend: Backend, seed: int, steps: int, ids: list[int] | None = None, now: float = T0
) -> None:
    rng = random.Random(seed)
    ids, held = list(ids or []), dict[int, int]()
    for step in range(steps):
        now += rng.choice([0.0, 0.25, 0.5, 1.0, 1.75])
        batch = _ops(rng, now, ids, held)
        results = await backend.execute(batch, now)
        for op, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                continue
            if isinstance(op, ops.Enqueue):
                ids.extend(e.id for e in result if e.created)  # type: ignore[attr-defined]
            elif isinstance(result, ClaimResult):
                held.update((j.id, j.lease) for j in result.jobs)
            elif isinstance(op, ops.Finish):
                for outcome in op.outcomes:
                    held.pop(outcome.job_id, None)
            elif isinstance(op, ops.Purge | ops.PurgeExpired):  # a child's parent must exist
                gone = set(result)  # type: ignore[call-overload]
                ids = [i for i in ids if i not in gone]
            elif isinstance(op, ops.Delete):
                ids.remove(op.job_id)
        if step % 5 == 4:
            await _check(backend, ids, now)
            [current] = await backend.execute([ops.GetMany(tuple(held))], now)
            assert isinstance(current, dict)
            held = {
                i: lease
                for i, lease in held.items()
                if getattr(current.get(i), "status", None) is JobState.RUNNING
            }
    await _check(backend, ids, now)
    await backend.execute([ops.FoldCounts()], now)
    await _check(backend, ids, now)


@pytest.mark.parametrize("seed", range(3))
async def test_stored_counts_equal_a_recount_after_random_operations(
    backend: Backend, seed: int
) -> None:
    await _random_run(backend, seed, 150)


async def test_counts_follow_every_kind_of_change_in_one_transaction(backend: Backend) -> None:
    """Several batches of many ops each: one transaction on the shared backends."""
    rng = random.Random(99)
    now, ids, held = T0, list[int](), dict[int, int]()
    for _ in range(20):
        now += 1.0
        batch = [op for _ in range(4) for op in _ops(rng, now, ids, held)]
        for op, result in zip(batch, await backend.execute(batch, now), strict=True):
            if isinstance(op, ops.Enqueue) and isinstance(result, list):
                ids.extend(e.id for e in result if e.created)
            elif isinstance(result, ClaimResult):
                held.update((j.id, j.lease) for j in result.jobs)
            elif isinstance(op, ops.Purge | ops.PurgeExpired) and isinstance(result, list):
                ids = [i for i in ids if i not in set(result)]
            elif isinstance(op, ops.Delete) and isinstance(result, JobState):
                ids.remove(op.job_id)
        await _check(backend, ids, now)


#: Jobs as an earlier release left them: (queue, status, finished_at).
ROWS_BEFORE = [
    *[("q1", "completed", T0 - 0.5 * i) for i in range(6)],
    ("q1", "dead", T0 - 3.0), ("q2", "cancelled", T0 - 0.1), ("q2", "compensated", T0),
    *[("q1", "available", None)] * 3, ("q2", "scheduled", None), ("q2", "retrying", None),
    ("q1", "running", None),
]  # fmt: skip
_INSERT_ROW = (
    "INSERT INTO trioforge_jobs (name, queue, payload, priority, run_at, max_attempts, "
    "created_at, status, attempt, finished_at, lease_until) "
    "VALUES ('a', {p[0]}, '{{}}', 0, {t0}, 3, {t0}, {p[1]}, 1, {p[2]}, {t0})"
)


async def _store_rows(backend: Backend, rows: list[tuple[str, str, float | None]]) -> None:
    """Rows written straight to the jobs table, as the previous schema version held them."""
    if isinstance(backend, SQLiteBackend):
        db = sqlite3.connect(backend.path)
        with db:
            db.executemany(_INSERT_ROW.format(p=("?", "?", "?"), t0=T0), rows)
        db.close()
        return
    assert isinstance(backend, PostgresBackend)

    async def store(conn: Any) -> None:
        await conn.executemany(_INSERT_ROW.format(p=("$1", "$2", "$3"), t0=T0), rows)

    await backend._aio(backend._run, store)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_counts_migration_counts_the_jobs_already_stored(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module: Any = sqlite_module if kind == "sqlite" else postgres_module
    full = module.MIGRATIONS
    async with BACKENDS[kind].backend(tmp_path) as before:
        # Every migration before the one that adds the counts (later ones may follow it).
        counts = next(i for i, m in enumerate(full) if "CREATE TABLE trioforge_counts" in m)
        monkeypatch.setattr(module, "MIGRATIONS", full[:counts])
        async with opened(before):
            await _store_rows(before, ROWS_BEFORE)
        monkeypatch.setattr(module, "MIGRATIONS", full)
        after = (
            SQLiteBackend(before.path)
            if isinstance(before, SQLiteBackend)
            else PostgresBackend(before.url, schema=before.schema)  # type: ignore[attr-defined]
        )
        async with opened(after):
            assert (await after.schema_status()).current == len(full)
            ids = list(range(1, len(ROWS_BEFORE) + 1))
            await _check(after, ids, T0 + 2)
            await _random_run(after, 7, 40, ids, T0 + 2)
