"""The HTTP API, served for real by hypercorn's trio worker: snapshots, Server-Sent Events,
public enqueues validated like ``enqueue``, and the track.js files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx
import trio

import trioforge
import trioforge.web
from tests.support.fast import FAST
from trioforge import JobContext, Registry

#: A client that would notice nothing for a minute if it had to poll.
NO_POLLING = 60.0


@attrs.frozen
class Resize:
    width: int
    height: int


def make_registry() -> tuple[Registry, dict[str, trio.Event]]:
    registry = Registry()
    gates = {"go": trio.Event(), "progressed": trio.Event()}

    @registry.job("images:resize", public=True)
    async def resize(ctx: JobContext, payload: Resize) -> dict[str, int]:
        await ctx.progress(30, "decoding <b>")
        gates["progressed"].set()
        await gates["go"].wait()
        return {"pixels": payload.width * payload.height}

    @registry.job("internal")
    async def internal(ctx: JobContext) -> None:
        pass

    return registry, gates


@asynccontextmanager
async def served(asgi: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(partial(trioforge.web.serve, asgi, port=0))
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield http
        nursery.cancel_scope.cancel()


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) pairs of a Server-Sent Events response."""
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            yield name, json.loads(data)
            name, data = "message", ""


async def test_track_a_public_job_from_post_to_completion(shared_url: str) -> None:
    registry, gates = make_registry()
    async with (
        trioforge.open_runtime(registry, database=shared_url, queues={"default": 1}, **FAST),
        trioforge.open_client(shared_url, poll_interval=NO_POLLING) as client,
        served(trioforge.web.app(client=client, registry=registry)) as http,
    ):
        with trio.fail_after(20):
            created = await http.post("/api/jobs/images:resize", json={"width": 3, "height": 4})
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            assert created.json()["events"] == f"/api/jobs/{job_id}/events"
            seen: list[tuple[str, Any]] = []
            async with http.stream("GET", f"/api/jobs/{job_id}/events") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                async for event, data in events(response):
                    seen.append((event, data))
                    if event == "update" and data["progress"] == 30:
                        gates["go"].set()
            snapshot = (await http.get(f"/api/jobs/{job_id}")).json()
    updates = [data for event, data in seen if event == "update"]
    assert {"status": "running", "progress": 30.0, "message": "decoding <b>"}.items() <= (
        next(u for u in updates if u["progress"] == 30).items()
    )
    assert (updates[-1]["status"], updates[-1]["result"], updates[-1]["terminal"]) == (
        "completed", {"pixels": 12}, True,
    )  # fmt: skip
    assert seen[-1] == ("end", {"id": job_id, "status": "completed"})
    assert snapshot == updates[-1]
    assert "payload" not in snapshot


async def test_public_enqueue_refuses_what_enqueue_refuses(sqlite_url: str) -> None:
    registry, _ = make_registry()
    async with (
        trioforge.open_client(sqlite_url, registry=registry) as client,
        served(trioforge.web.app(client=client, registry=registry)) as http,
    ):
        wrong = await http.post("/api/jobs/images:resize", json={"width": "three", "height": 4})
        extra = await http.post("/api/jobs/images:resize", json={"width": 3, "height": 4, "x": 1})
        not_json = await http.post(
            "/api/jobs/images:resize",
            content=b"{nope",
            headers={"content-type": "application/json"},
        )
        as_text = await http.post(
            "/api/jobs/images:resize", content=b"{}", headers={"content-type": "text/plain"}
        )
        private = await http.post("/api/jobs/internal", json=None)
        unknown = await http.post("/api/jobs/nothing", json={})
        assert await client.list() == []  # nothing was stored
    assert (wrong.status_code, extra.status_code) == (422, 422)
    assert "images:resize" in wrong.json()["error"]
    assert not_json.status_code == 400
    assert as_text.status_code == 415  # what a cross-site form could send
    assert (private.status_code, unknown.status_code) == (404, 404)
    assert private.json() == {"error": "no public job named 'internal'"}


async def test_unknown_ids_are_404_and_finished_jobs_stream_once(sqlite_url: str) -> None:
    registry, gates = make_registry()
    gates["go"].set()
    async with (
        trioforge.open_runtime(registry, database=sqlite_url, queues={"default": 1}, **FAST) as rt,
        served(trioforge.web.app(client=rt, registry=registry)) as http,
    ):
        job_id = await rt.enqueue("internal")
        await rt.wait(job_id)
        assert (await http.get("/api/jobs/999")).status_code == 404
        assert (await http.get("/api/jobs/999/events")).status_code == 404
        assert (await http.get("/api/jobs/0")).status_code == 404
        with trio.fail_after(10):
            async with http.stream("GET", f"/api/jobs/{job_id}/events") as response:
                seen = [event async for event, _ in events(response)]
    assert seen == ["update", "end"]


async def test_track_js_and_its_types_are_served(sqlite_url: str) -> None:
    async with served(trioforge.web.app(sqlite_url)) as http:
        js = await http.get("/track.js")
        types = await http.get("/track.d.ts")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert "export function track(baseUrl, jobId" in js.text
    assert "export function track(baseUrl: string, jobId: number" in types.text


async def test_cross_origin_frontends_are_allowed_only_when_named(sqlite_url: str) -> None:
    registry, _ = make_registry()
    front = "https://app.example"
    async with trioforge.open_client(sqlite_url, registry=registry) as client:
        job_id = await client.enqueue("internal")
        async with served(trioforge.web.app(client=client, cors_origins=[front])) as http:
            allowed = await http.get(f"/api/jobs/{job_id}", headers={"Origin": front})
            other = await http.get(
                f"/api/jobs/{job_id}", headers={"Origin": "https://evil.example"}
            )
            preflight = await http.options(
                "/api/jobs/images:resize",
                headers={"Origin": front, "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "content-type"},
            )  # fmt: skip
        async with served(trioforge.web.app(client=client)) as http:
            closed = await http.get(f"/api/jobs/{job_id}", headers={"Origin": front})
    assert allowed.headers["access-control-allow-origin"] == front
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 200
    assert "access-control-allow-origin" not in closed.headers
