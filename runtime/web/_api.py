"""The JSON API: follow a job or a workflow run by id (snapshot and Server-Sent Events),
enqueue public jobs and start public workflows, and the ``track.js`` browser client.
Times are ISO 8601 strings in UTC (``2026-12-03T10:24:38.123Z``), as in the CLI's JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import nullcontext
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from trioforge._core.errors import InvalidArgumentError, JobNotFoundError, PayloadError
from trioforge._registry import JobDefinition
from trioforge._timestamps import with_iso_times
from trioforge.storage import JobInfo
from trioforge.web._bodies import JSONOut, read_body, too_large
from trioforge.web._origin import is_json
from trioforge.web._state import WebState
from trioforge.web._views import job_view, run_view

__all__ = ["api_routes"]

#: An SSE comment this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
#: Largest request body accepted by ``POST /api/jobs/{name}`` (payloads are checked again
#: against the client's own limit); a longer one is not read past this.
MAX_BODY_BYTES = 2 * 1024 * 1024


def _not_found(job_id: object) -> JSONOut:
    return JSONOut({"error": f"no job with id {job_id}"}, status_code=404)


def _no_run(run_id: object) -> JSONOut:
    return JSONOut({"error": f"no workflow run with id {run_id}"}, status_code=404)


def _error(status: int, message: str) -> JSONOut:
    return JSONOut({"error": message}, status_code=status)


_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: object) -> str:
    """One Server-Sent Event (JSON data is one line, so one ``data:`` field)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def api_routes(web: WebState) -> list[Route]:
    async def job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            info = await web.client.get(job_id)
        except (JobNotFoundError, InvalidArgumentError):
            return _not_found(job_id)
        return JSONOut(with_iso_times(job_view(info)))

    async def events(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            await web.client.get(job_id)
        except (JobNotFoundError, InvalidArgumentError):
            return _not_found(job_id)
        return StreamingResponse(
            _stream(web, job_id), media_type="text/event-stream", headers=_STREAM_HEADERS
        )

    async def start(request: Request, definition: JobDefinition[Any, Any], path: str) -> Response:
        """Enqueue ``definition`` with the request's JSON body, checked as ``enqueue``
        checks it; 201 with where to follow it (``path``: ``jobs`` or ``workflows``).

        Only ``application/json`` (a cross-origin page cannot send it without a CORS
        preflight, which only ``cors_origins`` pass), from this origin, a CORS origin or
        a script; the body is not read past ``MAX_BODY_BYTES``."""
        if not is_json(request.headers.get("content-type")):
            return _error(415, "send the payload as JSON, with Content-Type: application/json")
        foreign = web.from_here(request) is False
        if foreign and request.headers.get("origin") not in web.cors_origins:
            return _error(403, "refused: the page's origin is not one of the CORS origins")
        body = await read_body(request, MAX_BODY_BYTES)
        if body is None:
            return too_large(MAX_BODY_BYTES, as_json=True)
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError as exc:
            return _error(400, f"the body is not JSON: {exc}")
        except RecursionError:
            return _error(400, "the body is nested too deeply to read")
        tracing = web.client.tracing
        try:
            with nullcontext() if tracing is None else tracing.incoming(request.headers):
                job_id = (await web.client.enqueue(definition, payload)).id
        except (PayloadError, InvalidArgumentError) as exc:
            return _error(422, str(exc))
        except RecursionError:
            return _error(400, "the payload is nested too deeply to store")
        root = request.scope.get("root_path", "")
        return JSONOut(
            {"id": job_id, "url": f"{root}/api/{path}/{job_id}",
             "events": f"{root}/api/{path}/{job_id}/events"},
            status_code=201,
        )  # fmt: skip

    async def enqueue(request: Request) -> Response:
        name = request.path_params["name"]
        registry = web.registry
        if registry is None or name not in registry.names() or not registry.get(name).public:
            return _error(404, f"no public job named {name!r}")
        return await start(request, registry.get(name), "jobs")

    async def start_run(request: Request) -> Response:
        name = request.path_params["name"]
        definition = web.public_workflow(name)
        if definition is None:
            return _error(404, f"no public workflow named {name!r}")
        return await start(request, definition, "workflows")

    async def run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            info = await web.client.workflow(run_id)
        except (JobNotFoundError, InvalidArgumentError):
            return _no_run(run_id)
        return JSONOut(with_iso_times(run_view(info)))

    async def run_events(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            await web.client.workflow(run_id)
        except (JobNotFoundError, InvalidArgumentError):
            return _no_run(run_id)
        return StreamingResponse(
            _run_stream(web, run_id), media_type="text/event-stream", headers=_STREAM_HEADERS
        )

    async def no_such_id(request: Request) -> Response:
        return _error(404, f"no job or run at {request.url.path} (ids are whole numbers)")

    return [
        Route("/api/jobs/{job_id:int}", job, methods=["GET"]),
        Route("/api/jobs/{job_id:int}/events", events, methods=["GET"]),
        Route("/api/jobs/{name:path}", enqueue, methods=["POST"]),
        Route("/api/workflows/{run_id:int}", run, methods=["GET"]),
        Route("/api/workflows/{run_id:int}/events", run_events, methods=["GET"]),
        Route("/api/workflows/{name:path}", start_run, methods=["POST"]),
        # A GET of a path the POST routes above take (/api/jobs/abc) is a 404, not a 405.
        Route("/api/jobs/{rest:path}", no_such_id, methods=["GET"]),
        Route("/api/workflows/{rest:path}", no_such_id, methods=["GET"]),
    ]


async def _stream(web: WebState, job_id: int) -> AsyncIterator[str]:
    """``update`` events (the job view) until the terminal one, then ``end``."""
    async with web.client.watch(job_id) as updates:
        while True:
            info: JobInfo | None = None
            with trio.move_on_after(KEEPALIVE_SECONDS):
                try:
                    info = await updates.__anext__()
                except (StopAsyncIteration, JobNotFoundError):
                    return
            if info is None:
                yield ": keep-alive\n\n"
                continue
            yield sse("update", with_iso_times(job_view(info)))
            if info.is_terminal:
                yield sse("end", {"id": job_id, "status": info.status.value})
                return


async def _run_stream(web: WebState, run_id: int) -> AsyncIterator[str]:
    """``update`` events (the run view, with every step) whenever the run or its record
    changes, until it is terminal, then ``end``."""
    async with web.client.watch_workflow(run_id) as views:
        while True:
            data: dict[str, object] | None = None
            with trio.move_on_after(KEEPALIVE_SECONDS):
                try:
                    data = with_iso_times(run_view(await views.__anext__()))
                except (StopAsyncIteration, JobNotFoundError, InvalidArgumentError):
                    return
            if data is None:
                yield ": keep-alive\n\n"
                continue
            yield sse("update", data)
            if data["terminal"]:
                yield sse("end", {"id": run_id, "status": data["status"]})
                return
