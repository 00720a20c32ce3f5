"""How to test your own jobs with trioforge.testing (copy this file next to your app).

Three styles, all without real sleeps: a pytest-trio test with the ``autojump_clock``
fixture, a plain synchronous test using ``trioforge.testing.run``, and a hypothesis
property test that runs one virtual-time scenario per example.
"""

from __future__ import annotations

import attrs
import pytest
import trio
from hypothesis import given, settings

import trioforge
from trioforge import JobContext, JobState, Retry
from trioforge.testing import open_test_runtime, payloads, perform, run

registry = trioforge.Registry()


@attrs.frozen
class Invoice:
    customer: str
    cents: int


@registry.job("billing:charge", retry=Retry(max_attempts=4, base_delay=30))
async def charge(ctx: JobContext, invoice: Invoice) -> str:
    if invoice.cents < 0:
        raise trioforge.Discard("negative amount")
    if ctx.attempt < 3:
        raise ConnectionError("payment gateway busy")
    await ctx.progress(100, "charged")
    return f"{invoice.customer}: {invoice.cents}"


async def test_retries_until_it_succeeds(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_runtime(registry) as rt:
        job = await rt.enqueue(charge, Invoice("ada", 1200))
        await rt.run_until_idle()  # 30 s and 60 s of backoff pass in no real time
        info = await job.info()
        assert await job.result() == "ada: 1200"
    assert (info.status, info.attempt) == (JobState.COMPLETED, 3)


def test_inline_runs_the_handler_directly() -> None:
    async def main() -> None:
        assert await perform(charge, Invoice("bo", 5), attempt=3) == "bo: 5"
        with pytest.raises(ConnectionError):
            await perform(charge, Invoice("bo", 5), attempt=1)
        with pytest.raises(trioforge.Discard):
            await perform(charge, {"customer": "bo", "cents": -1}, attempt=3)

    run(main)


@given(payloads(charge))
@settings(max_examples=25, deadline=None)
def test_any_invoice_ends_completed_or_dead(invoice: Invoice) -> None:
    async def scenario() -> JobState:
        async with open_test_runtime(registry) as rt:
            job_id = await rt.enqueue(charge, invoice)
            await rt.run_until_idle()
            return (await rt.get(job_id)).status

    expected = JobState.DEAD if invoice.cents < 0 else JobState.COMPLETED
    assert run(scenario) is expected
