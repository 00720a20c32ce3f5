"""The dashboard: server-rendered pages (Jinja2, autoescaped) and token-gated actions.

Every page reads a bounded amount: job lists are keyset pages (``before=<id>``) of at
most ``PAGE`` rows served by indexes, counts are per queue and state.

An action (POST) is taken for a script with the token in an ``Authorization: Bearer``
header, or for a logged-in browser when it proves it comes from the dashboard's own pages:
``Origin``/``Sec-Fetch-Site`` say this origin and the form carries the session's CSRF token.
"""

from __future__ import annotations

import datetime as dt
import hmac
import math
import time
import urllib.parse
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from trioforge._core.cron import upcoming
from trioforge._core.errors import InvalidArgumentError, InvalidStateError, JobNotFoundError
from trioforge._core.states import JobState
from trioforge._workflow_info import shown_in
from trioforge.web._bodies import read_body, text, too_large
from trioforge.web._chart import bars, throughput_svg
from trioforge.web._state import SESSION_COOKIE, WebState
from trioforge.web._views import run_updated_at, run_view, step_view

__all__ = ["PAGE", "dashboard_routes"]

#: Jobs per page.
PAGE = 50
#: Throughput is counted over this many recent minutes.
WINDOW_MINUTES = 5
#: The throughput chart covers this many minutes, this one included.
CHART_MINUTES = 60
#: The queues page re-reads itself this often (milliseconds).
REFRESH_MS = 3000
#: Running jobs counted on the processes page, at most.
RUNNING_SHOWN = 1000
#: Largest form body an action or a login reads.
FORM_BYTES = 16 * 1024
#: Largest id (SQLite's and PostgreSQL's bigint); a larger ``before`` pages from the newest.
MAX_ID = 2**63 - 1

_STATES = [s.value for s in JobState]


def _filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    return {
        "state": q.get("state") or None,
        "queue": q.get("queue") or None,
        "name": q.get("name") or None,
        "before": page_key(q.get("before", "")),
    }


def page_key(before: str) -> int | None:
    """A keyset page's ``before=<id>``: ASCII digits (``²`` is a digit to Python, not an
    id), at most ``MAX_ID``; anything else pages from the newest."""
    if not (before.isascii() and before.isdigit()):
        return None
    return min(int(before), MAX_ID)


def _field(body: bytes, name: str) -> str:
    """One field of an urlencoded form ("" when absent)."""
    form = urllib.parse.parse_qs(body.decode(errors="replace"))
    return (form.get(name) or [""])[0]


def _query(filters: dict[str, Any]) -> str:
    return urllib.parse.urlencode(
        {k: v for k, v in filters.items() if v is not None and k != "before"}
    )


def dashboard_routes(web: WebState) -> list[Route]:
    def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        session = web.session(request)
        page = web.templates.get_template(template).render(
            root=request.scope.get("root_path", ""),
            can_act=session is not None or web.bearer(request),
            csrf=session.csrf if session is not None else "",
            actions_configured=web.token is not None,
            **context,
        )
        # A lone surrogate (an old row's text) is written as its escape, not a 500.
        return HTMLResponse(page.encode("utf-8", "backslashreplace"), status_code=status)

    async def queues(request: Request) -> Response:
        client = web.client
        stored = await client.queues()
        recent = await client.throughput(WINDOW_MINUTES * 60)
        per_minute = await client.throughput_per_minute(CHART_MINUTES)
        now = math.floor(time.time())
        last_minute = now - now % 60
        serving: Counter[str] = Counter()
        slots: Counter[str] = Counter()
        busy: Counter[str] = Counter()
        for process in await client.processes():
            serving.update(process.queues)
            if process.details is not None:
                slots.update(dict(process.details.pools))
                busy.update(dict(process.details.busy))
        rows = [
            {
                "name": q.name,
                "paused": q.paused,
                "counts": {s.value: n for s, n in q.counts.items()},
                "recent": sum(recent.by_queue.get(q.name, {}).values()),
                "processes": serving.get(q.name, 0),
                "busy": busy.get(q.name, 0),
                "slots": slots.get(q.name, 0),
                "chart": throughput_svg(
                    q.name, bars(per_minute.get(q.name, {}), last_minute, CHART_MINUTES)
                ),
                "unserved": q.unserved,
            }
            for q in stored
        ]
        return render(
            request, "queues.html", queues=rows, states=_STATES, window_minutes=WINDOW_MINUTES,
            chart_minutes=CHART_MINUTES, refresh_ms=REFRESH_MS,
        )  # fmt: skip

    async def job_list(request: Request, *, dead: bool) -> Response:
        filters = _filters(request)
        if dead:
            filters["state"] = JobState.DEAD.value
        jump = request.query_params.get("id", "")
        if jump.strip().isascii() and jump.strip().isdigit():
            return RedirectResponse(
                f"{request.scope.get('root_path', '')}/jobs/{jump.strip()}", 303
            )
        if filters["state"] is not None and filters["state"] not in _STATES:
            filters["state"] = None
        jobs = await web.client.list(
            status=filters["state"], queue=filters["queue"], name=filters["name"],
            limit=PAGE, before=filters["before"],
        )  # fmt: skip
        shown = dict(filters)
        if dead:
            shown["state"] = None
        return render(
            request,
            "jobs.html",
            heading="Dead jobs" if dead else "Jobs",
            path="/dead" if dead else "/jobs",
            jobs=jobs,
            states=_STATES,
            filters=filters,
            query=_query(shown),
            next_before=jobs[-1].id if len(jobs) == PAGE else None,
        )

    async def jobs(request: Request) -> Response:
        return await job_list(request, dead=False)

    async def dead(request: Request) -> Response:
        return await job_list(request, dead=True)

    async def job(request: Request) -> Response:
        try:
            info = await web.client.get(request.path_params["job_id"])
        except (JobNotFoundError, InvalidArgumentError):
            return render(
                request, "jobs.html", status=404, heading="No such job", path="/jobs",
                jobs=[], states=_STATES, filters=_filters(request), query="", next_before=None,
            )  # fmt: skip
        try:
            run_id = (await web.client.workflow(info.id)).job.id
        except InvalidArgumentError:  # a plain job
            run_id = None
        return render(
            request, "job.html", job=info, attempts=await web.client.attempts(info.id),
            run_id=run_id,
        )  # fmt: skip

    async def workflows(request: Request) -> Response:
        filters = _filters(request)
        if filters["state"] is not None and filters["state"] not in _STATES:
            filters["state"] = None
        runs = await web.client.runs(
            status=filters["state"], name=filters["name"], limit=PAGE, before=filters["before"]
        )
        current = await web.client.current_steps(r.id for r in runs)
        rows = []
        for job in runs:
            name, _, version = job.name.rpartition("@v")
            step = current.get(job.id)
            rows.append(
                {
                    "job": job,
                    "workflow": name,
                    "version": version,
                    "step": None if step is None else step_view(shown_in(step, job.status)),
                    "updated_at": run_updated_at(job, step),
                }
            )
        return render(
            request,
            "workflows.html",
            runs=rows,
            states=_STATES,
            filters=filters,
            query=_query({**filters, "queue": None}),
            next_before=runs[-1].id if len(runs) == PAGE else None,
        )

    async def run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            info = await web.client.workflow(run_id)
        except (JobNotFoundError, InvalidArgumentError):
            return render(
                request, "workflows.html", status=404, runs=[], states=_STATES,
                filters=_filters(request), query="", next_before=None,
            )  # fmt: skip
        return render(request, "run.html", run=run_view(info), job=info.job)

    async def cron(request: Request) -> Response:
        states = await web.client.cron_states()
        declared = {d.name: d for d in web.registry.schedules()} if web.registry else {}
        now = dt.datetime.now(dt.UTC)
        rows = []
        for name in sorted(set(states) | set(declared)):
            state, definition = states.get(name), declared.get(name)
            schedule = definition.cron.schedule if definition and definition.cron else None
            fires = upcoming(schedule, now, 3) if schedule else []
            rows.append(
                {
                    "name": name,
                    "expr": schedule.expr if schedule else None,
                    "zone": str(schedule.zone) if schedule else None,
                    "next": [f.isoformat() for f in fires] if isinstance(fires, list) else [],
                    "error": fires if isinstance(fires, str) else None,
                    "last_tick": state.last_tick if state else None,
                    "skipped": state.skipped if state else 0,
                    "last_job_id": state.last_job_id if state else None,
                }
            )
        return render(request, "cron.html", schedules=rows)

    async def processes(request: Request) -> Response:
        # Running jobs by the (status, id) index, not a count of the whole table.
        running = await web.client.list(status=JobState.RUNNING, limit=RUNNING_SHOWN + 1)
        shown = f"{RUNNING_SHOWN}+" if len(running) > RUNNING_SHOWN else str(len(running))
        return render(
            request,
            "processes.html",
            processes=await web.client.processes(),
            now=dt.datetime.now(dt.UTC).timestamp(),
            running=shown,
        )

    # --- actions (POST, token required) ---------------------------------------------------

    def back(request: Request, path: str) -> Response:
        return RedirectResponse(f"{request.scope.get('root_path', '')}{path}", status_code=303)

    async def refused(request: Request) -> Response | None:
        """None when the request may act: the bearer token, or a session whose own page
        sent it (this origin, and the form's CSRF token); else the refusal."""
        if web.bearer(request):
            return None
        session = web.session(request)
        if session is None:
            why = "disabled: no TRIOFORGE_WEB_TOKEN" if web.token is None else "log in first"
            return text(f"actions are {why}", 403)
        if (foreign := web.refuse_foreign(request)) is not None:
            return foreign
        body = await read_body(request, FORM_BYTES)
        if body is None:
            return too_large(FORM_BYTES, as_json=False)
        offered = _field(body, "csrf")
        if not hmac.compare_digest(offered.encode(), session.csrf.encode()):
            return text("refused: the form's CSRF token is missing or stale; reload the page", 403)
        return None

    async def job_action(request: Request) -> Response:
        if (refusal := await refused(request)) is not None:
            return refusal
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        client = web.client
        try:
            if action == "cancel":
                await client.cancel(job_id)
            elif action == "retry":
                await client.retry(job_id)
            elif action == "discard":
                await client.discard(job_id, "discarded from the dashboard")
            elif action == "delete":
                await client.delete(job_id)
                return back(request, "/jobs")  # its page is gone with it
            else:
                return text("unknown action", 404)
        except (JobNotFoundError, InvalidArgumentError):
            return text(f"no job with id {job_id}", 404)
        except InvalidStateError as exc:
            return text(str(exc), 409)
        return back(request, f"/jobs/{job_id}")

    async def run_action(request: Request) -> Response:
        if (refusal := await refused(request)) is not None:
            return refusal
        run_id = request.path_params["run_id"]
        try:
            await web.client.workflow(run_id)
            await web.client.cancel(run_id)
        except (JobNotFoundError, InvalidArgumentError):
            return text(f"no workflow run with id {run_id}", 404)
        except InvalidStateError as exc:
            return text(str(exc), 409)
        return back(request, f"/workflows/{run_id}")

    async def queue_action(request: Request) -> Response:
        if (refusal := await refused(request)) is not None:
            return refusal
        name, action = request.path_params["name"], request.path_params["action"]
        try:
            if action == "pause":
                await web.client.pause(name)
            elif action == "resume":
                await web.client.resume(name)
            else:
                return text("unknown action", 404)
        except InvalidArgumentError as exc:
            return text(str(exc), 400)
        return back(request, "/")

    async def retry_all(request: Request) -> Response:
        if (refusal := await refused(request)) is not None:
            return refusal
        filters = _filters(request)
        await web.client.retry_many(queue=filters["queue"], name=filters["name"])
        return back(request, "/dead")

    async def delete_all(request: Request) -> Response:
        if (refusal := await refused(request)) is not None:
            return refusal
        await web.client.purge(status=JobState.DEAD, older_than=0, queue=_filters(request)["queue"])
        return back(request, "/dead")

    async def login(request: Request) -> Response:
        """A session for the browser that offers the token from the login page itself;
        attempts per client address are throttled (429 with Retry-After)."""
        if request.method == "GET":
            return render(request, "login.html", failed=False)
        address = request.client.host if request.client is not None else ""
        wait = web.logins.take(address, time.monotonic())
        if wait > 0:
            return text(
                "too many login attempts from this address; try again later", 429,
                headers={"Retry-After": str(math.ceil(wait))},
            )  # fmt: skip
        if (foreign := web.refuse_foreign(request)) is not None:
            return foreign
        body = await read_body(request, FORM_BYTES)
        if body is None:
            return too_large(FORM_BYTES, as_json=False)
        if not web.accepts(_field(body, "token")):
            return render(request, "login.html", status=403, failed=True)
        session_id, _ = web.sessions.open(time.monotonic())
        response = back(request, "/")
        response.set_cookie(
            SESSION_COOKIE, session_id, httponly=True, samesite="strict",
            secure=request.url.scheme == "https", path="/",
        )  # fmt: skip
        return response

    async def logout(request: Request) -> Response:
        """Ends the session here, so the cookie is worth nothing even if it was copied."""
        if (refusal := await refused(request)) is not None:
            return refusal
        web.sessions.close(request.cookies.get(SESSION_COOKIE))
        response = back(request, "/")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return [
        Route("/", queues, methods=["GET"]),
        Route("/jobs", jobs, methods=["GET"]),
        Route("/dead", dead, methods=["GET"]),
        Route("/jobs/{job_id:int}", job, methods=["GET"]),
        Route("/workflows", workflows, methods=["GET"]),
        Route("/workflows/{run_id:int}", run, methods=["GET"]),
        Route("/workflows/{run_id:int}/cancel", run_action, methods=["POST"]),
        Route("/cron", cron, methods=["GET"]),
        Route("/processes", processes, methods=["GET"]),
        Route("/jobs/{job_id:int}/{action}", job_action, methods=["POST"]),
        Route("/queues/{name:path}/{action}", queue_action, methods=["POST"]),  # name: a/b
        Route("/dead/retry-all", retry_all, methods=["POST"]),
        Route("/dead/delete-all", delete_all, methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
