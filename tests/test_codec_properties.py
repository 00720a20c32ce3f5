"""Generated payloads of every supported type round-trip exactly through enqueue, the
handler and the stored result, on every backend; generated values of a wrong type are
refused with the JSON path, and nothing is stored.

One runtime per backend: hypothesis runs in a worker thread and calls into the runtime's
trio loop for each example.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trioforge
from tests.support.fast import FAST
from tests.support.strategies import FIELDS, WRONG, Everything, everythings, json_values, same
from trioforge import JobContext, JobState, Registry
from trioforge.storage import Backend

#: Several values per example, few examples: each one is a round trip through storage.
ROUND_TRIPS = settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow])
#: A refusal stores nothing, so the profile's number of examples is affordable.
REFUSALS = settings(suppress_health_check=[HealthCheck.too_slow])


def make_registry(seen: dict[int, Any]) -> Registry:
    registry = Registry()

    @registry.job("everything")
    async def everything(ctx: JobContext, payload: Everything) -> Everything:
        seen[ctx.job_id] = payload
        return payload

    @registry.job("anything")
    async def anything(ctx: JobContext, payload: Any) -> Any:
        seen[ctx.job_id] = payload
        return payload

    return registry


async def test_generated_values_round_trip_exactly(database: str | Backend) -> None:
    seen: dict[int, Any] = {}
    registry = make_registry(seen)
    async with trioforge.open_runtime(registry, database=database, **FAST) as rt:

        async def round_trip(values: list[Everything], loose: list[Any]) -> None:
            ids = [job.id for job in await rt.enqueue_many("everything", values)]
            loose_ids = [job.id for job in await rt.enqueue_many("anything", loose)]
            for job_id, value in zip(ids, values, strict=True):
                info = await rt.wait(job_id)
                assert info.status is JobState.COMPLETED, info.error
                assert same(seen[job_id], value)  # what the handler was given
                text = json.dumps(info.result)  # what was stored, as JSON again
                assert same(registry.codec.decode(Everything, text, "result"), value)
            for job_id, value in zip(loose_ids, loose, strict=True):
                info = await rt.wait(job_id)
                assert same(seen[job_id], value)
                assert same(info.result, value)

        @ROUND_TRIPS
        @given(
            st.lists(everythings, min_size=1, max_size=4),
            st.lists(json_values, min_size=1, max_size=4),
        )
        def check(values: list[Everything], loose: list[Any]) -> None:
            trio.from_thread.run(round_trip, values, loose)

        await trio.to_thread.run_sync(check)


async def test_generated_values_of_a_wrong_type_are_refused_and_nothing_is_stored(
    database: str | Backend,
) -> None:
    registry = make_registry({})
    async with trioforge.open_runtime(registry, database=database, queues={}) as rt:

        async def refused(good: Everything, payload: Any, field: str) -> None:
            with pytest.raises(trioforge.PayloadError) as caught:
                await rt.enqueue("everything", payload)
            # The path of the field (or of the item in it), what it takes and what it got.
            assert re.search(rf"\$\.{field}\S*: expected .+, got ", str(caught.value))
            with pytest.raises(trioforge.PayloadError, match=rf"\$\.{field}"):
                await rt.enqueue_many("everything", [good, payload])  # one bad: none stored
            assert await rt.list() == []

        @REFUSALS
        @given(st.sampled_from(sorted(FIELDS)), st.data(), st.booleans())
        def check(field: str, data: st.DataObject, as_dict: bool) -> None:
            good = data.draw(everythings)
            bad = attrs.evolve(good, **{field: data.draw(WRONG[field], label=field)})
            # An instance is checked field by field, exactly like a dict of its fields.
            payload = attrs.asdict(bad, recurse=False) if as_dict else bad
            trio.from_thread.run(refused, good, payload, field)

        await trio.to_thread.run_sync(check)
