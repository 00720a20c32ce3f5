"""Payload and idempotency-key size limits: checked before storage, so nothing is stored."""

from __future__ import annotations

import pytest
import trio

import trioforge
from trioforge import InvalidArgumentError, JobContext, JobState, PayloadError, Registry
from trioforge.storage import MemoryBackend
from trioforge.testing import open_test_runtime

MIB = 1024 * 1024


def make_registry() -> Registry:
    registry = Registry()

    @registry.job("echo")
    async def echo(ctx: JobContext, text: str) -> str:
        return text

    @registry.job("parent")
    async def parent(ctx: JobContext, size: int) -> str:
        try:
            await ctx.enqueue("echo", "x" * size)
        except PayloadError as exc:
            return str(exc)
        return "enqueued"

    return registry


async def test_default_limits_count_json_and_utf8_bytes(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_runtime(make_registry(), queues={}) as rt:
        await rt.enqueue("echo", "x" * (MIB - 2))  # with its quotes: exactly the limit
        with pytest.raises(PayloadError, match=rf"{MIB + 1} bytes of JSON.*max_payload_bytes="):
            await rt.enqueue("echo", "x" * (MIB - 1))
        await rt.enqueue("echo", "k", idempotency_key="é" * 128)  # 256 bytes
        with pytest.raises(InvalidArgumentError, match=r"258 bytes of UTF-8.*max_key_bytes="):
            await rt.enqueue("echo", "k", idempotency_key="é" * 129)
        assert (await rt.stats()).count(JobState.AVAILABLE) == 2


async def test_nothing_over_a_limit_is_stored(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_runtime(make_registry(), max_payload_bytes=100, max_key_bytes=8) as rt:
        with pytest.raises(PayloadError, match="over the limit of 100"):
            await rt.enqueue("echo", "x" * 99)
        with pytest.raises(PayloadError, match="over the limit of 100"):
            await rt.enqueue_many("echo", ["small", "x" * 200, "small"])
        with pytest.raises(InvalidArgumentError, match="over the limit of 8"):
            await rt.enqueue("echo", "small", idempotency_key="123456789")
        assert await rt.list() == []
        info = await rt.wait(await rt.enqueue("parent", 200))
        assert "over the limit of 100" in info.result
        assert [j.name for j in await rt.list()] == ["parent"]  # no child stored


async def test_a_client_takes_its_own_limits_and_refuses_bad_ones() -> None:
    backend = MemoryBackend()
    async with trioforge.open_client(backend, registry=make_registry(), max_payload_bytes=10) as c:
        with pytest.raises(PayloadError, match="over the limit of 10"):
            await c.enqueue("echo", "x" * 10)
        assert await c.list() == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(trioforge.ConfigurationError, match="max_key_bytes must be an int"):
            async with trioforge.open_client(backend, max_key_bytes=bad):  # type: ignore[arg-type]
                pass
