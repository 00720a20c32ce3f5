"""The files the app serves as they are: ``track.js`` (and its types) for frontends, and
the dashboard's scripts and stylesheet (no inline script or style: the CSP forbids them)."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["static_routes"]

#: URL path → (file in static/, media type).
_FILES = {
    "/track.js": ("track.js", "text/javascript"),
    "/track.d.ts": ("track.d.ts", "application/typescript"),
    "/static/dashboard.css": ("dashboard.css", "text/css"),
    "/static/job.js": ("job.js", "text/javascript"),
    "/static/run.js": ("run.js", "text/javascript"),
    "/static/queues.js": ("queues.js", "text/javascript"),
    "/static/confirm.js": ("confirm.js", "text/javascript"),
}


def static_routes() -> list[Route]:
    def route(path: str, name: str, media: str) -> Route:
        async def serve(request: Request) -> Response:
            body = resources.files("trioforge.web").joinpath("static", name).read_bytes()
            return Response(body, media_type=media, headers={"Cache-Control": "max-age=300"})

        return Route(path, serve, methods=["GET"])

    return [route(path, name, media) for path, (name, media) in _FILES.items()]
