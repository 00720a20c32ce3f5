"""The registry is frozen once a runtime runs: its workers read the job names once."""

from __future__ import annotations

import pytest
import trio

from trioforge import AttemptEnd, InvalidStateError, JobContext, Registry
from trioforge.testing import open_test_runtime


async def test_registering_after_a_runtime_started_is_refused_with_the_fix(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = Registry()

    @registry.job("early")
    async def early(ctx: JobContext) -> None: ...

    async def late(ctx: JobContext) -> None: ...

    async def hook(end: AttemptEnd) -> None: ...

    async def before(ctx: JobContext) -> None: ...

    assert not registry.frozen
    async with open_test_runtime(registry) as rt:
        assert registry.frozen
        fix = "register every job, cron schedule and hook before opening the runtime"
        with pytest.raises(InvalidStateError, match=fix):
            registry.job("late")(late)
        with pytest.raises(InvalidStateError, match="cron schedule"):
            registry.cron("@daily")(late)
        with pytest.raises(InvalidStateError, match="after_perform hook"):
            registry.after_perform(hook)
        with pytest.raises(InvalidStateError, match="before_perform hook"):
            registry.before_perform(before)
        assert "late" not in registry
        info = await rt.wait(await rt.enqueue("early"))
        assert info.is_terminal


def test_a_decorator_taken_before_the_runtime_is_refused_after() -> None:
    registry = Registry()
    register = registry.job("late")
    registry.freeze()

    async def late(ctx: JobContext) -> None: ...

    with pytest.raises(InvalidStateError, match="job 'late'"):
        register(late)
