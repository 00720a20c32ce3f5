"""The JSON API: follow a job or a workflow run by id (snapshot and Server-Sent Events),
enqueue public jobs and start public workflows, and the ``track.js`` browser client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import nullcontext
from importlib import resources
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from trioforge._errors import InvalidArgumentError, JobNotFoundError, PayloadError
from trioforge._registry import JobDefinition
from trioforge.storage import JobInfo
from trioforge.web._state import WebState
from trioforge.web._views import job_view, run_view

__all__ = ["api_routes"]

#: An SSE comment this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
#: Largest request body accepted by ``POST /api/jobs/{name}`` (payloads are checked again
#: against the client's own limit).
MAX_BODY_BYTES = 2 * 1024 * 1024


def _not_found(job_id: object) -> JSONResponse:
    return JSONResponse({"error": f"no job with id {job_id}"}, status_code=404)


def _no_run(run_id: object) -> JSONResponse:
    return JSONResponse({"error": f"no workflow run with id {run_id}"}, status_code=404)


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
        return JSONResponse(job_view(info))

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
        checks it; 201 with where to follow it (``path``: ``jobs`` or ``workflows``)."""
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        tracing = web.client.tracing
        try:
            with nullcontext() if tracing is None else tracing.incoming(request.headers):
                job_id = (await web.client.enqueue(definition, payload)).id
        except (PayloadError, InvalidArgumentError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        root = request.scope.get("root_path", "")
        return JSONResponse(
            {"id": job_id, "url": f"{root}/api/{path}/{job_id}",
             "events": f"{root}/api/{path}/{job_id}/events"},
            status_code=201,
        )  # fmt: skip

    async def enqueue(request: Request) -> Response:
        name = request.path_params["name"]
        registry = web.registry
        if registry is None or name not in registry.names() or not registry.get(name).public:
            return JSONResponse({"error": f"no public job named {name!r}"}, status_code=404)
        return await start(request, registry.get(name), "jobs")

    async def start_run(request: Request) -> Response:
        name = request.path_params["name"]
        definition = web.public_workflow(name)
        if definition is None:
            return JSONResponse({"error": f"no public workflow named {name!r}"}, status_code=404)
        return await start(request, definition, "workflows")

    async def run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            info = await web.client.workflow(run_id)
        except (JobNotFoundError, InvalidArgumentError):
            return _no_run(run_id)
        return JSONResponse(run_view(info))

    async def run_events(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            await web.client.workflow(run_id)
        except (JobNotFoundError, InvalidArgumentError):
            return _no_run(run_id)
        return StreamingResponse(
            _run_stream(web, run_id), media_type="text/event-stream", headers=_STREAM_HEADERS
        )

    async def static(request: Request) -> Response:
        name, media = _STATIC[request.url.path.rsplit("/", 1)[-1]]
        text = resources.files("trioforge.web").joinpath("static", name).read_text()
        return Response(text, media_type=media, headers={"Cache-Control": "max-age=300"})

    return [
        Route("/api/jobs/{job_id:int}", job, methods=["GET"]),
        Route("/api/jobs/{job_id:int}/events", events, methods=["GET"]),
        Route("/api/jobs/{name:path}", enqueue, methods=["POST"]),
        Route("/api/workflows/{run_id:int}", run, methods=["GET"]),
        Route("/api/workflows/{run_id:int}/events", run_events, methods=["GET"]),
        Route("/api/workflows/{name:path}", start_run, methods=["POST"]),
        Route("/track.js", static, methods=["GET"]),
        Route("/track.d.ts", static, methods=["GET"]),
    ]


_STATIC = {
    "track.js": ("track.js", "text/javascript"),
    "track.d.ts": ("track.d.ts", "application/typescript"),
}


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
            yield sse("update", job_view(info))
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
                    data = run_view(await views.__anext__())
                except (StopAsyncIteration, JobNotFoundError, InvalidArgumentError):
                    return
            if data is None:
                yield ": keep-alive\n\n"
                continue
            yield sse("update", data)
            if data["terminal"]:
                yield sse("end", {"id": run_id, "status": data["status"]})
                return
