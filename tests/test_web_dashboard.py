"""The dashboard over real HTTP: pages, escaping, keyset pages, token-gated actions."""

from __future__ import annotations

import datetime as dt
import re

import trio

import trioforge
import trioforge.web
from tests.support.fast import FAST
from tests.test_web_api import served
from trioforge import JobContext, JobState, Registry, Retention
from trioforge.storage import Backend

TOKEN = "s3cret-token"


def make_registry() -> Registry:
    registry = Registry()

    @registry.job("render", queue="pages")
    async def render(ctx: JobContext, text: str) -> str:
        await ctx.progress(12, text)
        await trio.sleep_forever()
        return text

    @registry.job("explode", queue="pages")
    async def explode(ctx: JobContext, text: str) -> None:
        raise trioforge.Discard(text)

    @registry.cron("*/5 * * * *")
    async def tick(ctx: trioforge.CronContext) -> None:
        pass

    return registry


async def test_pages_escape_job_text_and_show_counts(sqlite_url: str) -> None:
    registry = make_registry()
    evil = "<script>alert(1)</script>"
    async with (
        trioforge.open_runtime(registry, database=sqlite_url, queues={"pages": 2}, **FAST) as rt,
        served(trioforge.web.app(client=rt, registry=registry, token=TOKEN)) as http,
    ):
        dead_id = await rt.enqueue("explode", evil)
        await rt.wait(dead_id)
        pages = {p: await http.get(p) for p in ("/", "/jobs", "/dead", f"/jobs/{dead_id}",
                                                   "/cron", "/processes")}  # fmt: skip
        missing = await http.get("/jobs/424242")
        jump = await http.get("/jobs", params={"id": str(dead_id)}, follow_redirects=False)
    for path, page in pages.items():
        assert page.status_code == 200, path
        assert evil not in page.text, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[f"/jobs/{dead_id}"].text
    assert re.search(r">pages</a>\s*</td>", pages["/"].text)  # no "paused" badge
    assert "*/5 * * * *" in pages["/cron"].text
    assert "cron:tick" in pages["/cron"].text
    assert rt.owner in pages["/processes"].text
    assert f'href="/jobs/{dead_id}"' in pages["/dead"].text
    assert missing.status_code == 404
    assert (jump.status_code, jump.headers["location"]) == (303, f"/jobs/{dead_id}")


async def test_jobs_are_paged_by_id_and_filtered(sqlite_url: str) -> None:
    registry = make_registry()
    async with (
        trioforge.open_client(sqlite_url, registry=registry) as client,
        served(trioforge.web.app(client=client, registry=registry)) as http,
    ):
        ids = await client.enqueue_many("render", [str(i) for i in range(120)])
        other = await client.enqueue("explode", "x")
        first = await http.get("/jobs", params={"name": "render"})
        found = [int(i) for i in re.findall(r'<a href="/jobs/(\d+)">', first.text)]
        older = re.search(r'href="/jobs\?([^"]+)">older', first.text)
        assert older is not None
        second = await http.get("/jobs?" + older.group(1).replace("&amp;", "&"))
        found2 = [int(i) for i in re.findall(r'<a href="/jobs/(\d+)">', second.text)]
    assert found == ids[::-1][:50]
    assert found2 == ids[::-1][50:100]
    assert other not in found


async def test_actions_need_the_token(sqlite_url: str) -> None:
    registry = make_registry()
    async with (
        trioforge.open_runtime(registry, database=sqlite_url, queues={"pages": 1}, **FAST) as rt,
        served(trioforge.web.app(client=rt, registry=registry, token=TOKEN)) as http,
    ):
        job_id = await rt.enqueue("render", "hello")
        with trio.fail_after(10):
            async for info in rt.watch(job_id):
                if info.progress == 12:
                    break
        here = {"Origin": str(http.base_url).rstrip("/")}
        anonymous = await http.post(f"/jobs/{job_id}/cancel")
        page = await http.get(f"/jobs/{job_id}")
        wrong = await http.post("/login", data={"token": "nope"}, headers=here)
        logged_in = await http.post(
            "/login", data={"token": TOKEN}, headers=here, follow_redirects=False
        )
        cookie = logged_in.cookies.get("trioforge_session")
        authed_page = await http.get(f"/jobs/{job_id}")
        cancelled = await http.post(
            f"/jobs/{job_id}/cancel", data={"csrf": csrf_of(authed_page.text)}, headers=here,
            follow_redirects=False,
        )  # fmt: skip
        with trio.fail_after(10):
            info = await rt.wait(job_id)
        http.cookies.clear()  # the bearer header alone
        bearer = await http.post(
            f"/jobs/{job_id}/retry", headers={"Authorization": f"Bearer {TOKEN}"},
            follow_redirects=False,
        )  # fmt: skip
        await rt.cancel(job_id)
    assert anonymous.status_code == 403
    assert 'id="cancel"' not in page.text
    assert "log in to act" in page.text
    assert wrong.status_code == 403
    assert logged_in.status_code == 303
    assert cookie
    assert TOKEN not in cookie  # a session id, not the token
    assert "samesite=strict" in logged_in.headers["set-cookie"].lower()
    assert "httponly" in logged_in.headers["set-cookie"].lower()
    assert 'id="cancel"' in authed_page.text
    assert cancelled.status_code == 303
    assert info.status is JobState.CANCELLED
    assert bearer.status_code == 303


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "no form with a CSRF token on the page"
    return found.group(1)


async def test_actions_need_proof_of_origin_and_the_csrf_token(sqlite_url: str) -> None:
    """A logged-in browser's cookie alone acts on nothing: another origin (another port
    of the same host), no origin at all, or a form without the session's token is
    refused; a script acts with the bearer header alone."""
    registry = make_registry()
    async with (
        trioforge.open_client(sqlite_url, registry=registry) as client,
        served(trioforge.web.app(client=client, registry=registry, token=TOKEN)) as http,
    ):
        job_id = await client.enqueue("render", "x")
        here = str(http.base_url).rstrip("/")
        other_port = here.rsplit(":", 1)[0] + ":1"
        no_origin_login = await http.post("/login", data={"token": TOKEN})
        foreign_login = await http.post(
            "/login", data={"token": TOKEN}, headers={"Origin": other_port}
        )
        await http.post("/login", data={"token": TOKEN}, headers={"Origin": here})
        csrf = csrf_of((await http.get("/")).text)
        tries = {
            "other port": ({"Origin": other_port}, csrf),
            "same site": ({"Sec-Fetch-Site": "same-site"}, csrf),
            "no origin": ({}, csrf),
            "null origin": ({"Origin": "null"}, csrf),
            "no token": ({"Origin": here}, ""),
            "wrong token": ({"Origin": here, "Sec-Fetch-Site": "same-origin"}, csrf + "x"),
        }
        refused = {}
        for why, (headers, token) in tries.items():
            refused[why] = (await http.post(
                f"/jobs/{job_id}/cancel", data={"csrf": token}, headers=headers
            )).status_code  # fmt: skip
            refused[why + " (pause)"] = (await http.post(
                "/queues/pages/pause", data={"csrf": token}, headers=headers
            )).status_code  # fmt: skip
        untouched = (await client.get(job_id)).status, [q.paused for q in await client.queues()]
        fetched = await http.post(
            "/queues/pages/pause", data={"csrf": csrf},
            headers={"Origin": here, "Sec-Fetch-Site": "same-origin"}, follow_redirects=False,
        )  # fmt: skip
        http.cookies.clear()
        script = await http.post(
            "/queues/pages/resume", headers={"Authorization": f"Bearer {TOKEN}"},
            follow_redirects=False,
        )  # fmt: skip
        wrong_bearer = await http.post(
            "/queues/pages/pause", headers={"Authorization": "Bearer nope"}
        )
        paused = [q.paused for q in await client.queues()]
    assert (no_origin_login.status_code, foreign_login.status_code) == (403, 403)
    assert refused == dict.fromkeys(refused, 403)
    assert untouched == (JobState.AVAILABLE, [False])
    assert (fetched.status_code, script.status_code) == (303, 303)
    assert wrong_bearer.status_code == 403
    assert paused == [False]


async def test_logging_out_revokes_the_session(sqlite_url: str) -> None:
    async with (
        trioforge.open_client(sqlite_url) as client,
        served(trioforge.web.app(client=client, token=TOKEN)) as http,
    ):
        here = {"Origin": str(http.base_url).rstrip("/")}
        await http.post("/login", data={"token": TOKEN}, headers=here)
        cookie = http.cookies["trioforge_session"]
        csrf = csrf_of((await http.get("/")).text)
        out = await http.post("/logout", data={"csrf": csrf}, headers=here)
        http.cookies.clear()
        http.cookies.set("trioforge_session", cookie)  # replayed
        replayed = await http.post("/queues/x/pause", data={"csrf": csrf}, headers=here)
        page = await http.get("/")
        paused = await client.queues()
    assert out.status_code == 303
    assert replayed.status_code == 403
    assert "log in to act" in page.text
    assert paused == []


async def test_login_attempts_are_throttled_per_address(sqlite_url: str) -> None:
    async with (
        trioforge.open_client(sqlite_url) as client,
        served(trioforge.web.app(client=client, token=TOKEN)) as http,
    ):
        here = {"Origin": str(http.base_url).rstrip("/")}
        codes = [
            (await http.post("/login", data={"token": "guess"}, headers=here)).status_code
            for _ in range(10)
        ]
        throttled = await http.post("/login", data={"token": TOKEN}, headers=here)
    assert codes == [403] * 10
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1
    assert "trioforge_session" not in throttled.cookies


async def test_every_response_carries_the_security_headers(sqlite_url: str) -> None:
    registry = make_registry()
    async with (
        trioforge.open_client(sqlite_url, registry=registry) as client,
        served(trioforge.web.app(client=client, registry=registry, token=TOKEN)) as http,
    ):
        job_id = await client.enqueue("render", "x")
        responses = {p: await http.get(p) for p in (
            "/", f"/jobs/{job_id}", f"/api/jobs/{job_id}", "/no/such/page", "/track.js",
            "/static/dashboard.css", "/static/job.js", "/static/run.js", "/metrics")}  # fmt: skip
        responses["POST /login"] = await http.post("/login", data={"token": "x"})
    for path, response in responses.items():
        h = response.headers
        assert "script-src 'self'" in h["content-security-policy"], path
        assert "frame-ancestors 'none'" in h["content-security-policy"], path
        assert (h["x-frame-options"], h["x-content-type-options"]) == ("DENY", "nosniff"), path
        assert h["referrer-policy"] == "same-origin", path
    assert "<script>" not in responses[f"/jobs/{job_id}"].text  # no inline script
    assert "<style>" not in responses["/"].text
    assert " style=" not in responses[f"/jobs/{job_id}"].text
    assert responses["/static/dashboard.css"].headers["content-type"].startswith("text/css")


async def test_without_a_token_the_dashboard_is_read_only(sqlite_url: str) -> None:
    async with (
        trioforge.open_client(sqlite_url) as client,
        served(trioforge.web.app(client=client, token="")) as http,
    ):
        job_id = await client.enqueue(trioforge.Registry().job("x")(_noop), None)
        page = await http.get(f"/jobs/{job_id}")
        refused = await http.post(f"/jobs/{job_id}/discard")
        paused = await http.post("/queues/default/pause")
        login = await http.post("/login", data={"token": ""})
        info = await client.get(job_id)
    assert "read-only" in page.text
    assert 'id="discard"' not in page.text
    assert (refused.status_code, paused.status_code, login.status_code) == (403, 403, 403)
    assert info.status is JobState.AVAILABLE


async def _noop(ctx: JobContext) -> None:
    pass


async def test_attempts_dead_letter_actions_and_process_details(sqlite_url: str) -> None:
    registry = Registry()
    tries: list[int] = []

    @registry.job("flaky", queue="pages", retry=trioforge.Retry(max_attempts=3, base_delay=0))
    async def flaky(ctx: JobContext) -> str:
        tries.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ValueError(f"try <{ctx.attempt}> failed")
        return "third time"

    @registry.job("doomed", queue="pages")
    async def doomed(ctx: JobContext, n: int) -> None:
        raise trioforge.Discard(f"doomed {n}")

    async with (
        trioforge.open_runtime(registry, database=sqlite_url, queues={"pages": 2}, **FAST) as rt,
        served(trioforge.web.app(client=rt, registry=registry, token=TOKEN)) as http,
    ):
        http.headers["Authorization"] = f"Bearer {TOKEN}"
        flaky_id = await rt.enqueue("flaky")
        dead_ids = await rt.enqueue_many("doomed", [1, 2, 3])
        with trio.fail_after(10):
            for job_id in [flaky_id, *dead_ids]:
                await rt.wait(job_id)
        job_page = await http.get(f"/jobs/{flaky_id}")
        processes = await http.get("/processes")
        retried = await http.post("/dead/retry-all", follow_redirects=False)
        with trio.fail_after(10):
            after_retry = [await rt.wait(job_id) for job_id in dead_ids]
        deleted = await http.post("/dead/delete-all", follow_redirects=False)
        left = await rt.list(status="dead")
    assert "Every attempt's error" in job_page.text
    assert "try &lt;1&gt; failed" in job_page.text
    assert "try &lt;2&gt; failed" in job_page.text
    assert "pages 0 / 2" in processes.text  # its pool: busy / slots
    assert (retried.status_code, deleted.status_code) == (303, 303)
    assert [i.attempt for i in after_retry] == [1, 1, 1]  # run again, fresh attempts
    assert left == []


async def test_a_finished_job_is_deleted_from_the_dashboard_and_shows_its_retention(
    database: str | Backend,
) -> None:
    """``POST /jobs/{id}/delete`` behind the same guards as the other actions: a finished
    job goes for good, an unfinished one is refused with what to do first."""
    registry = make_registry()
    async with (
        trioforge.open_runtime(registry, database=database, queues={"pages": 2}, **FAST) as rt,
        served(trioforge.web.app(client=rt, registry=registry, token=TOKEN)) as http,
    ):
        dead = (await rt.enqueue("explode", "x", retain=Retention(dead=dt.timedelta(hours=2)))).id
        running = (await rt.enqueue("render", "y")).id
        with trio.fail_after(10):
            await rt.wait(dead)
            async for info in rt.watch(running):
                if info.progress == 12:
                    break
        views = [(await http.get(f"/api/jobs/{i}")).json() for i in (dead, running)]
        anonymous = await http.post(f"/jobs/{dead}/delete")
        http.headers["Authorization"] = f"Bearer {TOKEN}"
        pages = [(await http.get(f"/jobs/{i}")).text for i in (dead, running)]
        refused = await http.post(f"/jobs/{running}/delete", follow_redirects=False)
        deleted = await http.post(f"/jobs/{dead}/delete", follow_redirects=False)
        again = await http.post(f"/jobs/{dead}/delete", follow_redirects=False)
        gone = await http.get(f"/api/jobs/{dead}")
        assert (await rt.get(running)).status is JobState.RUNNING
        await rt.cancel(running)
    assert views[0]["retain"] == {
        "completed": 86400.0, "cancelled": 604800.0, "dead": 7200.0, "compensated": 2592000.0,
    }  # fmt: skip
    assert views[1]["retain"] is None
    assert "dead 2h" in pages[0]
    assert "its queue&#39;s retention" in pages[1]
    assert re.search(
        r'<form class="inline" method="post" action="/jobs/\d+/delete" '
        r'data-confirm="Delete job \d+, its attempts and its record for good\?">',
        pages[0],
    )
    assert re.search(r'action="/jobs/\d+/delete" data-confirm="[^"]*" hidden>', pages[1])
    assert anonymous.status_code == 403
    assert refused.status_code == 409
    what_to_do = "not finished: cancel it first, then delete it"
    assert refused.text == f"job {running} is running, {what_to_do}"
    assert (deleted.status_code, deleted.headers["location"]) == (303, "/jobs")
    assert again.status_code == 404
    assert gone.status_code == 404
