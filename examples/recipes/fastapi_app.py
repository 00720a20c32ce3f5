"""Enqueue from FastAPI: the asyncio client opened once in the app's lifespan, and a route
that enqueues and answers with the job's tracking URLs (served by ``trioforge web``).

Run it with ``uvicorn recipes.fastapi_app:app``; run the jobs with ``trioforge worker
recipes.jobs:registry`` and the tracking API with ``trioforge web``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

import trioforge.aio
from recipes.jobs import Thumbnail, make_thumbnail, registry


def create_app(database: str | None = None, tracking: str | None = None) -> FastAPI:
    """The app. ``database``: None reads ``$TRIOFORGE_DATABASE_URL`` (then the settings
    file); ``tracking``: the base URL of ``trioforge web``, as the browser reaches it."""
    tracking_base = tracking or os.environ.get("TRACKING_URL", "http://127.0.0.1:8080")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client for the process: PostgreSQL connections are pooled inside it.
        async with trioforge.aio.open_client(database, registry=registry) as client:
            app.state.jobs = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/thumbnails", status_code=202)
    async def request_thumbnail(body: Thumbnail, request: Request) -> dict[str, object]:
        jobs: trioforge.aio.AsyncioClient = request.app.state.jobs
        job = await jobs.enqueue(make_thumbnail, body)
        return {
            "id": job.id,
            "track": f"{tracking_base}/api/jobs/{job.id}",
            "events": f"{tracking_base}/api/jobs/{job.id}/events",
        }

    return app


app = create_app()
