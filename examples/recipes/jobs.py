"""The jobs the recipes enqueue: one registry, shared by the web app and the worker
(`trioforge worker recipes.jobs:registry`)."""

from __future__ import annotations

from dataclasses import dataclass

import trioforge

registry = trioforge.Registry()


@dataclass(frozen=True)
class Thumbnail:
    """A dataclass payload: FastAPI validates it as a request body, trioforge at enqueue."""

    url: str
    width: int


@registry.job("thumbnails:make", queue="thumbnails", public=True)
async def make_thumbnail(ctx: trioforge.JobContext, request: Thumbnail) -> dict[str, object]:
    await ctx.progress(50, f"resizing {request.url}")  # the real work would await here
    return {"url": request.url, "width": request.width}
