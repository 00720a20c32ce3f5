"""trioforge's web side: a JSON and Server-Sent Events API for following jobs from a
frontend, ``track.js`` for browsers, a dashboard, and Prometheus metrics, as one ASGI app
(Starlette on anyio, so it runs on trio) served by hypercorn's trio worker.

``app(database)`` opens its own client when served; ``app(client=rt)`` uses a runtime or
client of the embedding program, and ``serve(app, ...)`` runs it in that program's nursery.
``metrics_app(rt, metrics)`` is ``/metrics`` alone (``trioforge worker --metrics-port``).
"""

from trioforge._core.extras import needs_extra

with needs_extra("web", "The web app (trioforge.web)"):
    from trioforge.web._app import app, metrics_app, serve
    from trioforge.web._views import job_view

__all__ = ["app", "job_view", "metrics_app", "serve"]
