"""Workflow runs over real HTTP: the run's JSON with its steps, its event stream following
each step, public starts validated like ``enqueue``, and the dashboard's pages and cancel."""

from __future__ import annotations

import re
from typing import Any

import attrs
import trio

import trioforge
import trioforge.web
from tests.support.fast import FAST
from tests.test_web_api import NO_POLLING, events, served
from trioforge import JobState, Registry, WorkflowContext

TOKEN = "run-token"


@attrs.frozen
class Signup:
    email: str


def make_registry() -> Registry:
    registry = Registry()

    def undo(email: str) -> None:
        pass

    @registry.workflow("accounts:verify", public=True, queue="accounts")
    async def verify(ctx: WorkflowContext, req: Signup) -> str:
        await ctx.step("store <token>", lambda e: f"stored {e}", req.email, compensate=undo)
        clicked = await ctx.wait_for_signal("clicked")
        await ctx.step("welcome", lambda: "sent")
        return f"verified {clicked}"

    @registry.workflow("internal:sweep")
    async def sweep(ctx: WorkflowContext) -> None:
        pass

    @registry.job("plain", queue="accounts")
    async def plain(ctx: trioforge.JobContext) -> None:
        pass

    return registry


async def waiting_for_its_signal(client: trioforge.Client, run_id: int) -> None:
    async with client.watch_workflow(run_id) as views:
        async for view in views:
            if view.job.status is JobState.SCHEDULED and view.steps:
                return


def step_states(run: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["kind"], s["name"], s["status"]) for s in run["steps"]]


async def test_a_public_run_is_followed_step_by_step_to_completed(shared_url: str) -> None:
    registry = make_registry()
    async with (
        trioforge.open_runtime(registry, database=shared_url, queues={"accounts": 2}, **FAST),
        trioforge.open_client(shared_url, poll_interval=NO_POLLING) as client,
        served(trioforge.web.app(client=client, registry=registry)) as http,
    ):
        with trio.fail_after(30):
            created = await http.post("/api/workflows/accounts:verify", json={"email": "a@x"})
            assert created.status_code == 201, created.text
            run_id = created.json()["id"]
            assert created.json()["events"] == f"/api/workflows/{run_id}/events"
            seen: list[dict[str, Any]] = []
            async with http.stream("GET", f"/api/workflows/{run_id}/events") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                async for event, data in events(response):
                    if event == "end":
                        assert data == {"id": run_id, "status": "completed"}
                        break
                    seen.append(data)
                    if data["status"] == "scheduled" and data["steps"]:
                        await client.signal(run_id, "clicked", "yes")
            snapshot = (await http.get(f"/api/workflows/{run_id}")).json()
    waiting = next(u for u in seen if u["status"] == "scheduled" and u["steps"])
    assert step_states(waiting)[1] == ("signal", "clicked", "running")
    assert waiting["wake_at"] is None  # until the signal: no wake time
    assert step_states(waiting)[0] == ("step", "store <token>", "completed")
    assert waiting["steps"][0]["result"] == "stored a@x"
    assert (seen[-1]["status"], seen[-1]["result"]) == ("completed", "verified yes")
    assert step_states(seen[-1]) == [
        ("step", "store <token>", "completed"),
        ("signal", "clicked", "completed"),
        ("step", "welcome", "completed"),
    ]
    assert (snapshot["workflow"], snapshot["version"]) == ("accounts:verify", 1)
    assert snapshot == seen[-1]
    assert "payload" not in snapshot


async def test_public_starts_refuse_what_enqueue_refuses(database: Any) -> None:
    registry = make_registry()
    async with (
        trioforge.open_client(database, registry=registry) as client,
        served(trioforge.web.app(client=client, registry=registry)) as http,
    ):
        wrong = await http.post("/api/workflows/accounts:verify", json={"mail": "a"})
        extra = await http.post("/api/workflows/accounts:verify", json={"email": "a", "x": 1})
        not_json = await http.post(
            "/api/workflows/accounts:verify",
            content=b"{nope",
            headers={"content-type": "application/json"},
        )
        as_text = await http.post(
            "/api/workflows/accounts:verify", content=b"{}", headers={"content-type": "text/plain"}
        )
        private = await http.post("/api/workflows/internal:sweep", json=None)
        a_job = await http.post("/api/workflows/plain", json=None)
        unknown = await http.post("/api/workflows/nothing", json={})
        assert await client.list() == []  # nothing was stored
        versioned = await http.post("/api/workflows/accounts:verify@v1", json={"email": "a"})
        plain_id = await client.enqueue("plain")
        not_a_run = await http.get(f"/api/workflows/{plain_id}")
        missing = await http.get("/api/workflows/424242")
        missing_events = await http.get("/api/workflows/424242/events")
    assert (wrong.status_code, extra.status_code) == (422, 422)
    assert "accounts:verify" in wrong.json()["error"]
    assert not_json.status_code == 400
    assert as_text.status_code == 415  # what a cross-site form could send
    assert [r.status_code for r in (private, a_job, unknown)] == [404, 404, 404]
    assert private.json() == {"error": "no public workflow named 'internal:sweep'"}
    assert versioned.status_code == 201
    assert [r.status_code for r in (not_a_run, missing, missing_events)] == [404, 404, 404]


async def test_the_workflows_pages_list_filter_page_and_escape(sqlite_url: str) -> None:
    registry = make_registry()
    async with (
        trioforge.open_runtime(registry, database=sqlite_url, queues={"accounts": 2}, **FAST) as rt,
        served(trioforge.web.app(client=rt, registry=registry, token=TOKEN)) as http,
    ):
        evil = "<script>alert(1)</script>"
        ids = [(await rt.enqueue("accounts:verify", Signup(f"{evil}{i}"))).id for i in range(55)]
        plain = await rt.enqueue("plain")
        with trio.fail_after(30):
            for run_id in ids:
                await waiting_for_its_signal(rt, run_id)
        await rt.signal(ids[0], "clicked", "ok")
        await rt.wait(ids[0])
        first = await http.get("/workflows")
        found = [int(i) for i in re.findall(r'<a href="/workflows/(\d+)">', first.text)]
        older = re.search(r'href="/workflows\?([^"]*)">older', first.text)
        assert older is not None
        second = await http.get("/workflows?" + older.group(1).replace("&amp;", "&"))
        found2 = [int(i) for i in re.findall(r'<a href="/workflows/(\d+)">', second.text)]
        done = await http.get("/workflows", params={"state": "completed"})
        by_name = await http.get("/workflows", params={"name": "accounts:verify@v1"})
        other = await http.get("/workflows", params={"name": "internal:sweep"})
        page = await http.get(f"/workflows/{ids[0]}")
        job_page = await http.get(f"/jobs/{ids[0]}")
        plain_page = await http.get(f"/jobs/{plain}")
        not_a_run = await http.get(f"/workflows/{plain}")
    assert found == ids[::-1][:50]
    assert found2 == ids[::-1][50:]
    assert plain not in found + found2
    assert re.findall(r'<a href="/workflows/(\d+)">', done.text) == [str(ids[0])]
    assert len(re.findall(r'<a href="/workflows/(\d+)">', by_name.text)) == 50
    assert "no workflow runs match" in other.text
    assert "accounts:verify@v1" in first.text
    assert "signal</span> clicked" in first.text  # each waiting run's current step
    for text in (first.text, page.text):
        assert evil not in text
    assert "store &lt;token&gt;" in page.text
    assert "welcome" in page.text
    assert "verified" in page.text
    assert f'href="/workflows/{ids[0]}"' in job_page.text
    assert 'id="run-link"' not in plain_page.text
    assert not_a_run.status_code == 404


async def test_cancelling_a_run_needs_the_token_and_undoes_it(sqlite_url: str) -> None:
    registry = make_registry()
    async with (
        trioforge.open_runtime(registry, database=sqlite_url, queues={"accounts": 1}, **FAST) as rt,
        served(trioforge.web.app(client=rt, registry=registry, token=TOKEN)) as http,
    ):
        run_id = (await rt.enqueue("accounts:verify", Signup("c@x"))).id
        with trio.fail_after(30):
            await waiting_for_its_signal(rt, run_id)
            refused = await http.post(f"/workflows/{run_id}/cancel")
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            page = await http.get(f"/workflows/{run_id}", headers=bearer)
            done = await http.post(
                f"/workflows/{run_id}/cancel", headers=bearer, follow_redirects=False
            )
            info = await rt.wait(run_id)
            view = await rt.workflow(run_id)
    assert refused.status_code == 403
    assert 'id="cancel"' in page.text
    assert (done.status_code, done.headers["location"]) == (303, f"/workflows/{run_id}")
    assert info.status is JobState.COMPENSATED
    assert [s.kind.value for s in view.steps][-2:] == ["compensating", "compensation"]
