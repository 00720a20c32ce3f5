"""``app()``: the API, the dashboard and /metrics as one Starlette app; ``serve()``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from trioforge._client import Client
from trioforge._core.errors import MissingExtraError
from trioforge._registry import Registry
from trioforge._runtime import open_client
from trioforge.storage import Backend
from trioforge.web._api import api_routes
from trioforge.web._dashboard import dashboard_routes
from trioforge.web._headers import SecurityHeaders
from trioforge.web._state import WebState
from trioforge.web._static import static_routes

if TYPE_CHECKING:
    from trioforge.metrics import Metrics

__all__ = ["app", "metrics_app", "serve"]


def app(
    database: str | Backend | None = None,
    *,
    client: Client | None = None,
    registry: Registry | None = None,
    token: str | None = None,
    metrics: Metrics | None = None,
    cors_origins: Sequence[str] = (),
) -> Starlette:
    """The ASGI app. With ``client`` (a runtime or client of the embedding program) it uses
    that; else its lifespan opens a client on ``database`` (None: the configuration).

    ``registry`` names the jobs ``POST /api/jobs/{name}`` may enqueue (those declared
    ``public=True``) and the cron schedules the dashboard shows. Dashboard actions (cancel,
    retry, discard, pause, retry-all) need ``token`` (default ``$TRIOFORGE_WEB_TOKEN``);
    without one the dashboard is read-only. ``GET /metrics`` serves ``metrics`` (give the
    one the runtime counts with; default: a new one, with the storage gauges only; without
    the ``metrics`` extra it answers 501 naming the install command).
    ``cors_origins`` lists the frontend origins (``https://app.example``) allowed to call
    the job API from a browser (``track.js`` with a base URL on another origin); the
    dashboard's actions never accept cross-origin requests (docs/web.md, Security).
    """
    if token is None:
        token = os.environ.get("TRIOFORGE_WEB_TOKEN") or None
    web = WebState(client, registry, token, cors_origins)
    measured = metrics if metrics is not None else _default_metrics()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        if client is not None:
            yield {}
            return
        async with open_client(database, registry=registry, metrics=measured) as opened:
            web.serve_with(opened)
            try:
                yield {}
            finally:
                web.serve_with(None)

    routes = [
        *api_routes(web),
        *dashboard_routes(web),
        *static_routes(),
        _metrics_route(web, measured),
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["content-type", "traceparent", "tracestate"],
    )
    middleware = [cors] if cors_origins else []
    return _Secured(routes=routes, lifespan=lifespan, middleware=middleware)


def metrics_app(client: Client, metrics: Metrics) -> Starlette:
    """An ASGI app serving only ``GET /metrics`` for ``client`` (a worker's runtime): the
    collectors ``metrics`` counts with, and the storage gauges read at each scrape when
    ``metrics.database_gauges``."""
    return _Secured(routes=[_metrics_route(WebState(client, None, None), metrics)])


class _Secured(Starlette):
    """Starlette with the security headers outermost, so even its own error pages carry
    them."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def _default_metrics() -> Metrics | None:
    """A new set of collectors, or None when the metrics extra is not installed."""
    try:
        from trioforge.metrics import Metrics
    except MissingExtraError:
        return None
    return Metrics()


def _metrics_route(web: WebState, metrics: Metrics | None) -> Route:
    async def scrape(request: Request) -> Response:
        if metrics is None:
            return Response(
                "GET /metrics needs the metrics extra: pip install 'trioforge[metrics]'\n",
                status_code=501,
                media_type="text/plain; charset=utf-8",
            )
        await metrics.refresh(web.client)
        return Response(metrics.exposition(), media_type=metrics.content_type)

    return Route("/metrics", scrape, methods=["GET"])


async def serve(
    asgi: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``asgi`` with hypercorn's trio worker until cancelled; ``nursery.start(serve,
    ...)`` returns the bound URLs (port 0 picks a free port)."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 1.0
    await hypercorn_serve(asgi, config, task_status=task_status)  # type: ignore[arg-type]
