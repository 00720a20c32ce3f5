"""Odd input over a real server on SQLite: every probe gets a 4xx or a page that renders,
never a 500, and never a body read past the limit."""

from __future__ import annotations

import re
import sqlite3
from functools import partial
from typing import Any

import httpx
import trio

import trioforge
import trioforge.web
from tests.support.fast import FAST
from tests.test_web_api import served
from tests.test_web_workflows import make_registry as workflow_registry
from tests.test_web_workflows import waiting_for_its_signal
from trioforge import InvalidArgumentError, JobContext, Registry
from trioforge.web._api import MAX_BODY_BYTES
from trioforge.web._views import when

TOKEN = "probe-token"


def make_registry() -> Registry:
    registry = workflow_registry()

    @registry.job("echo", public=True, queue="probes")
    async def echo(ctx: JobContext, value: Any) -> Any:
        return value

    return registry


def assert_renders(response: httpx.Response, path: str) -> None:
    assert response.status_code < 500, (path, response.status_code, response.text[:300])
    response.content.decode("utf-8")  # strict: no lone surrogate leaked into the bytes


async def test_a_run_waiting_forever_renders_its_job_page(sqlite_url: str) -> None:
    registry = make_registry()
    async with (
        trioforge.open_runtime(registry, database=sqlite_url, queues={"accounts": 1}, **FAST) as rt,
        served(trioforge.web.app(client=rt, registry=registry)) as http,
    ):
        run_id = (await rt.enqueue("accounts:verify", {"email": "a@x"})).id
        with trio.fail_after(10):
            await waiting_for_its_signal(rt, run_id)
        job_page = await http.get(f"/jobs/{run_id}")
        run_page = await http.get(f"/workflows/{run_id}")
        await rt.cancel(run_id)
        try:  # refused at enqueue, or stored and shown
            far_id: int | None = (await rt.enqueue("echo", 1, delay=1e300, queue="idle")).id
        except InvalidArgumentError:
            far_id = None
        far_page = await http.get(f"/jobs/{far_id}") if far_id is not None else None
    assert (job_page.status_code, run_page.status_code) == (200, 200)
    assert re.search(r"<dt>run at</dt><dd>never</dd>", job_page.text)
    if far_page is not None:
        assert far_page.status_code == 200
        assert re.search(r"<dt>run at</dt><dd>never</dd>", far_page.text)


def test_times_out_of_range_read_never() -> None:
    assert when(1e300) == "never"
    assert when(float("inf")) == "never"
    assert when(trioforge.storage.NEVER) == "never"
    assert when(float("nan")) == "—"
    assert when(-1e300) == "—"
    assert when(0.0) == "1970-01-01 00:00:00 UTC"


async def test_lone_surrogates_in_stored_rows_render(sqlite_url: str) -> None:
    """A row written before text was made storable: payload and result hold a JSON escape
    of a lone surrogate, which reads back as one."""
    registry = make_registry()
    async with trioforge.open_client(sqlite_url, registry=registry) as client:
        job_id = (await client.enqueue("echo", "plain")).id
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
            db.execute(
                "UPDATE trioforge_jobs SET payload = ?, result = ?, status = 'completed',"
                " finished_at = created_at WHERE id = ?",
                ('"bad \\ud800 payload"', '"bad \\udfff result"', job_id),
            )
        async with served(trioforge.web.app(client=client, registry=registry)) as http:
            responses = {p: await http.get(p) for p in (
                f"/jobs/{job_id}", f"/api/jobs/{job_id}", "/jobs", "/dead")}  # fmt: skip
            async with http.stream("GET", f"/api/jobs/{job_id}/events") as stream:
                events = (await stream.aread()).decode("utf-8")
    for path, response in responses.items():
        assert response.status_code == 200, path
        assert_renders(response, path)
    assert "ud800" in responses[f"/jobs/{job_id}"].text
    assert "udfff" in responses[f"/jobs/{job_id}"].text
    assert (
        "udfff"
        in str(responses[f"/api/jobs/{job_id}"].json()["result"]).encode("unicode_escape").decode()
    )
    assert "event: end" in events


async def test_odd_bodies_queries_and_paths_are_4xx(sqlite_url: str) -> None:
    registry = make_registry()
    json_headers = {"content-type": "application/json"}
    async with (
        trioforge.open_client(sqlite_url, registry=registry) as client,
        served(trioforge.web.app(client=client, registry=registry, token=TOKEN)) as http,
    ):
        deep = "[" * 5000 + "]" * 5000
        nested = await http.post("/api/jobs/echo", content=deep, headers=json_headers)
        nested_run = await http.post(
            "/api/workflows/accounts:verify", content=deep, headers=json_headers
        )
        pages = {}
        for path in ("/jobs", "/dead", "/workflows"):
            for before in ("%C2%B2", "99999999999999999999999999", "-1", "1e9"):
                pages[f"{path}?before={before}"] = await http.get(f"{path}?before={before}")
        for path in ("/jobs?id=%C2%B2", "/jobs?id=99999999999999999999999999",
                     "/jobs/99999999999999999999999999", "/workflows/99999999999999999999999",
                     "/api/jobs/99999999999999999999999999"):  # fmt: skip
            pages[path] = await http.get(path, follow_redirects=True)
        api_abc = await http.get("/api/jobs/abc")
        api_run_abc = await http.get("/api/workflows/abc")
        api_abc_events = await http.get("/api/jobs/abc/events")
        assert await client.list() == []  # nothing was enqueued
    assert (nested.status_code, nested_run.status_code) == (400, 400)
    assert "nested" in nested.json()["error"]
    for path, page in pages.items():
        assert_renders(page, path)
    assert pages["/jobs?before=%C2%B2"].status_code == 200
    assert pages["/jobs?before=99999999999999999999999999"].status_code == 200
    assert (api_abc.status_code, api_run_abc.status_code) == (404, 404)
    assert api_abc.json()["error"]
    assert api_abc_events.status_code == 404


async def test_a_queue_with_a_slash_is_paused_from_the_dashboard(sqlite_url: str) -> None:
    registry = make_registry()
    async with (
        trioforge.open_client(sqlite_url, registry=registry) as client,
        served(trioforge.web.app(client=client, registry=registry, token=TOKEN)) as http,
    ):
        http.headers["Authorization"] = f"Bearer {TOKEN}"
        await client.enqueue("echo", 1, queue="a/b")
        home = await http.get("/")
        action = re.search(r'action="(/queues/[^"]*/pause)"', home.text)
        assert action is not None, home.text
        paused = await http.post(action.group(1), follow_redirects=False)
        queues = {q.name: q.paused for q in await client.queues()}
        resumed = await http.post("/queues/a%2Fb/resume", follow_redirects=False)
        after = {q.name: q.paused for q in await client.queues()}
    assert paused.status_code == 303
    assert queues["a/b"] is True
    assert resumed.status_code == 303
    assert after["a/b"] is False


async def post_endless(url: str, path: str, *, chunked: bool, most: int) -> tuple[int, int]:
    """POST up to ``most`` bytes (not JSON: never parsed) to ``url + path`` over a raw socket, a
    length declared up front or chunked, while reading the answer; stops sending once the
    answer came or the server hung up. (status, bytes of body sent)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {most}"
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\n{framing}\r\n\r\n")  # fmt: skip
    stream = await trio.open_tcp_stream(host, int(port))
    answer = b""
    sent = 0

    async def send(nursery: trio.Nursery) -> None:
        nonlocal sent
        piece = b"x" * 2**16
        try:
            await stream.send_all(head.encode())
            while sent < most:
                await stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the server hung up on the rest

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send, nursery)
        with trio.fail_after(30):
            while b"\r\n\r\n" not in answer:
                chunk = await stream.receive_some()
                assert chunk, "the server closed without answering"
                answer += chunk
        nursery.cancel_scope.cancel()
    return int(answer.split(b" ", 2)[1]), sent


async def test_bodies_stop_at_the_limit(sqlite_url: str) -> None:
    """A 50 MB body, its length declared or chunked: refused with 413 after reading at
    most the limit; the rest is never read (the server hangs up)."""
    registry = make_registry()
    most = 50 * 2**20
    async with trioforge.open_client(sqlite_url, registry=registry) as client:
        asgi = trioforge.web.app(client=client, registry=registry)
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(trioforge.web.serve, asgi, port=0))
            declared = await post_endless(url, "/api/jobs/echo", chunked=False, most=most)
            chunked = await post_endless(url, "/api/workflows/accounts:verify",
                                         chunked=True, most=most)  # fmt: skip
            nursery.cancel_scope.cancel()
        assert await client.list() == []
    assert declared[0] == 413
    assert chunked[0] == 413
    assert chunked[1] < MAX_BODY_BYTES + 16 * 2**20  # the limit plus socket buffers at most
