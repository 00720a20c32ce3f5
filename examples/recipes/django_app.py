"""Enqueue from Django: an async view that enqueues with the asyncio client and answers
with the job's tracking URLs (served by ``trioforge web``).

A one-file project, so the recipe fits on a page: in a real project the settings go in
settings.py, the view in views.py and the route in urls.py. Serve it under ASGI
(``uvicorn recipes.django_app:application``) or WSGI; run the jobs with ``trioforge worker
recipes.jobs:registry``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import django
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, JsonResponse
from django.urls import path

import trioforge.aio
from recipes.jobs import make_thumbnail, registry

settings.configure(
    ROOT_URLCONF=__name__,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "recipe-only-secret"),
    ALLOWED_HOSTS=["*"],
    DATABASES={},  # the recipe's jobs need none of Django's database
    # Where the jobs are and where the browser reaches `trioforge web`.
    TRIOFORGE_DATABASE=os.environ.get("TRIOFORGE_DATABASE_URL"),
    TRIOFORGE_TRACKING=os.environ.get("TRACKING_URL", "http://127.0.0.1:8080"),
)
django.setup()


@asynccontextmanager
async def jobs_client() -> AsyncIterator[trioforge.aio.AsyncioClient]:
    """A client for this request. Django has no lifespan in which to open one for the
    process, and under WSGI each async view runs in an event loop of its own, so the
    client is opened where it is used. ``migrate=False``: ``trioforge db migrate`` (or the
    worker) creates the schema once."""
    database = settings.TRIOFORGE_DATABASE
    async with trioforge.aio.open_client(database, registry=registry, migrate=False) as client:
        yield client


async def request_thumbnail(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST a thumbnail request"}, status=405)
    try:
        payload = json.loads(request.body)
    except ValueError:
        return JsonResponse({"error": "the body is not JSON"}, status=400)
    async with jobs_client() as jobs:
        try:
            job = await jobs.enqueue(make_thumbnail, payload)  # checked as the dataclass
        except trioforge.PayloadError as exc:
            return JsonResponse({"error": str(exc)}, status=422)
    base = settings.TRIOFORGE_TRACKING
    return JsonResponse(
        {"id": job.id, "track": f"{base}/api/jobs/{job.id}",
         "events": f"{base}/api/jobs/{job.id}/events"},
        status=202,
    )  # fmt: skip


urlpatterns = [path("thumbnails", request_thumbnail)]
application = ASGIHandler()
