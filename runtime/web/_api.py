"""The JSON API: follow a job by id (snapshot and Server-Sent Events), enqueue public jobs,
and the ``track.js`` browser client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib import resources

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from trioforge._errors import InvalidArgumentError, JobNotFoundError, PayloadError
from trioforge.storage import JobInfo
from trioforge.web._state import WebState
from trioforge.web._views import job_view

__all__ = ["api_routes"]

#: An SSE comment this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
#: Largest request body accepted by ``POST /api/jobs/{name}`` (payloads are checked again
#: against the client's own limit).
MAX_BODY_BYTES = 2 * 1024 * 1024


def _not_found(job_id: object) -> JSONResponse:
    return JSONResponse({"error": f"no job with id {job_id}"}, status_code=404)


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
            _stream(web, job_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def enqueue(request: Request) -> Response:
        name = request.path_params["name"]
        registry = web.registry
        if registry is None or name not in registry.names() or not registry.get(name).public:
            return JSONResponse({"error": f"no public job named {name!r}"}, status_code=404)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        try:
            job_id = await web.client.enqueue(registry.get(name), payload)
        except (PayloadError, InvalidArgumentError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        root = request.scope.get("root_path", "")
        return JSONResponse(
            {"id": job_id, "url": f"{root}/api/jobs/{job_id}",
             "events": f"{root}/api/jobs/{job_id}/events"},
            status_code=201,
        )  # fmt: skip

    async def static(request: Request) -> Response:
        name, media = _STATIC[request.url.path.rsplit("/", 1)[-1]]
        text = resources.files("trioforge.web").joinpath("static", name).read_text()
        return Response(text, media_type=media, headers={"Cache-Control": "max-age=300"})

    return [
        Route("/api/jobs/{job_id:int}", job, methods=["GET"]),
        Route("/api/jobs/{job_id:int}/events", events, methods=["GET"]),
        Route("/api/jobs/{name:path}", enqueue, methods=["POST"]),
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
