"""The storage contract for per-job policy and flow control, on every backend."""

from __future__ import annotations

import attrs

from tests.contract.test_contract import T0, claim, enqueue, get, job
from trioforge.storage import Backend


async def test_a_per_enqueue_timeout_and_max_attempts_reach_the_claim(backend: Backend) -> None:
    plain, timed = await enqueue(
        backend, job(max_attempts=3), attrs.evolve(job(max_attempts=1), timeout=2.5)
    )
    claimed = {j.id: j for j in (await claim(backend)).jobs}
    assert (claimed[plain].timeout, claimed[plain].max_attempts) == (None, 3)
    assert (claimed[timed].timeout, claimed[timed].max_attempts) == (2.5, 1)
    assert (await get(backend, timed)).max_attempts == 1


async def test_timeouts_survive_enqueue_with_idempotency_keys(backend: Backend) -> None:
    [keyed] = await enqueue(backend, attrs.evolve(job(key="k"), timeout=0.25))
    [claimed] = (await claim(backend, T0)).jobs
    assert (claimed.id, claimed.timeout) == (keyed, 0.25)
