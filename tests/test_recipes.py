"""The documentation's recipes (examples/recipes/, included by docs/recipes/) do what their
pages say: a FastAPI route and a Django async view enqueue and answer with tracking URLs
that ``trioforge.web`` answers, and the track.js page follows a job to its result."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from recipes import jobs

import trioforge
import trioforge.web
from tests.support.browser import CHROMIUM, Served, require_browser
from trioforge import JobState

TRACKING = "http://jobs.test"


def run_and_track(database: str, tracked: dict[str, Any]) -> dict[str, Any]:
    """Run the enqueued job with a trio worker, then GET its tracking URL from
    ``trioforge.web`` as a browser would, and return the answer."""

    async def main() -> dict[str, Any]:
        async with trioforge.open_runtime(
            jobs.registry, database=database, queues={"thumbnails": 1}, poll_interval=0.05
        ) as rt:
            job = rt.job(jobs.make_thumbnail, tracked["id"])
            with trio.fail_after(30):
                await job.result()
            web = trioforge.web.app(client=rt, registry=jobs.registry)
            transport = httpx.ASGITransport(app=web)
            async with httpx.AsyncClient(transport=transport) as http:
                answer = await http.get(tracked["track"])
                assert answer.status_code == 200
                view: dict[str, Any] = answer.json()
                return view

    return trio.run(main)


def test_fastapi_route_enqueues_and_answers_a_tracking_url(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from recipes.fastapi_app import create_app

    database = f"sqlite:///{tmp_path / 'jobs.db'}"
    with TestClient(create_app(database, TRACKING)) as client:
        refused = client.post("/thumbnails", json={"url": "https://x.test/a.png"})
        assert refused.status_code == 422  # FastAPI validates the dataclass body first
        answer = client.post("/thumbnails", json={"url": "https://x.test/a.png", "width": 96})
    assert answer.status_code == 202
    tracked = answer.json()
    assert tracked["track"] == f"{TRACKING}/api/jobs/{tracked['id']}"
    assert tracked["events"] == f"{TRACKING}/api/jobs/{tracked['id']}/events"
    view = run_and_track(database, tracked)
    assert (view["status"], view["result"]) == ("completed", {"url": "https://x.test/a.png",
                                                               "width": 96})  # fmt: skip


def test_django_async_view_enqueues_and_answers_a_tracking_url(tmp_path: Path) -> None:
    from django.conf import settings
    from django.test import AsyncClient
    from recipes import django_app

    database = f"sqlite:///{tmp_path / 'jobs.db'}"
    trio.run(_migrated, database)  # the view opens its client with migrate=False
    settings.TRIOFORGE_DATABASE, settings.TRIOFORGE_TRACKING = database, TRACKING

    async def requests() -> list[Any]:
        client = AsyncClient()
        return [
            await client.post("/thumbnails", {"url": "u", "width": "96"}, "application/json"),
            await client.post("/thumbnails", "{", "application/json"),
            await client.get("/thumbnails"),
            await client.post("/thumbnails", {"url": "https://x.test/b.png", "width": 48},
                              "application/json"),
        ]  # fmt: skip

    # An asyncio loop of asyncio's own, as under a server (tests/conftest.py sets the policy).
    wrong_type, not_json, get, answer = asyncio.run(requests())
    assert django_app.urlpatterns  # the module the page shows is the one served
    assert wrong_type.status_code == 422
    assert "$.width: expected int, got str" in wrong_type.json()["error"]
    assert (not_json.status_code, get.status_code) == (400, 405)
    assert answer.status_code == 202
    tracked = answer.json()
    assert tracked["track"] == f"{TRACKING}/api/jobs/{tracked['id']}"
    view = run_and_track(database, tracked)
    assert (view["status"], view["result"]["width"]) == ("completed", 48)


async def _migrated(database: str) -> None:
    async with trioforge.open_client(database):
        pass


@contextmanager
def frontend(page_html: str) -> Iterator[str]:
    """Serve the page from an origin of its own on loopback, as a frontend app's would be
    (Chromium refuses a page from a public origin access to loopback)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page_html.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page) as httpd:
        thread = threading.Thread(target=httpd.serve_forever)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()
            thread.join()


@pytest.fixture
def chromium() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()


def test_the_track_page_follows_a_job_from_another_origin(tmp_path: Path, chromium: Any) -> None:
    page_html = (Path(jobs.__file__).parent / "track.html").read_text()
    with frontend(page_html) as origin:
        server = Served(
            jobs.registry, f"sqlite:///{tmp_path / 'jobs.db'}", "token",
            web_options={"cors_origins": [origin]},
            queues={"thumbnails": 1}, poll_interval=0.05, heartbeat_interval=0.2,
        )  # fmt: skip
        with server.running():
            follow(server, chromium, origin)


def follow(server: Served, chromium: Any, origin: str) -> None:
    """Open the page on a job, then on an id no job has."""
    rt = server.runtime
    assert rt is not None
    job = server.call(rt.enqueue, jobs.make_thumbnail, jobs.Thumbnail("https://x.test/c", 32))
    page = chromium.new_page()
    page.goto(f"{origin}/track.html?job={job.id}&api={server.url}")
    page.wait_for_function("() => document.body.dataset.done !== undefined")
    assert page.locator("#status").text_content() == "completed"
    assert page.locator("#result").text_content() == '{"url":"https://x.test/c","width":32}'
    assert server.call(rt.get, job.id).status is JobState.COMPLETED
    page.goto(f"{origin}/track.html?job=987654&api={server.url}")
    page.wait_for_function("() => document.body.dataset.done === 'not_found'")
