"""The verification workflow of workflow_verification.py, tested in virtual time.

The same handler as the demo, on the memory backend under trio's MockClock (the
``autojump_clock`` fixture): its retry backoff, signal timeout and durable sleep take no
real time, and the record is checked through ``rt.workflow(run_id)``.
"""

from __future__ import annotations

import trio
import workflow_verification as demo

from trioforge import JobState, StepKind, StepStatus
from trioforge.testing import open_test_runtime


async def test_a_click_verifies_and_no_click_undoes(autojump_clock: trio.abc.Clock) -> None:
    demo.mail_sent.update(ada=trio.Event(), bob=trio.Event())
    demo.tokens.clear()
    demo.mail_attempts.clear()
    async with open_test_runtime(demo.registry) as rt:
        ada = await rt.enqueue(demo.verify, demo.VerifyRequest("ada", "ada@example.com"))
        bob = await rt.enqueue(demo.verify, demo.VerifyRequest("bob", "bob@example.com"))
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(demo.click_later, rt, "ada", ada)
            verified, undone = await rt.wait(ada), await rt.wait(bob)
        elapsed = trio.current_time() - start
        ada_view, bob_view = await rt.workflow(ada), await rt.workflow(bob)
    assert (verified.status, verified.result) == (JobState.COMPLETED, "verified")
    assert (undone.status, undone.error) == (JobState.COMPENSATED, "link never clicked")
    assert elapsed >= 1.5  # bob's wait timed out, never early
    assert demo.mail_attempts == {"ada": 2, "bob": 2}
    assert sorted(demo.tokens) == ["ada"]
    kinds = [s.kind for s in ada_view.steps]
    assert kinds.count(StepKind.CHILD) == 3
    assert kinds[3:6] == [StepKind.SIGNAL, StepKind.STEP, StepKind.SLEEP]
    status = {(s.kind, s.name): s.status for s in bob_view.steps}
    assert status[(StepKind.STEP, "store_token")] is StepStatus.COMPENSATED
    assert status[(StepKind.STEP, "generate_token")] is StepStatus.COMPLETED  # nothing to undo
    assert status[(StepKind.COMPENSATION, "store_token")] is StepStatus.COMPLETED
