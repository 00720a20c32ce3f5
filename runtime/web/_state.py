"""What every route of one web app shares: its client, registry, token, sessions and
templates."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response

from trioforge._client import Client
from trioforge._core.errors import TrioforgeError
from trioforge._policy import describe_retention
from trioforge._registry import JobDefinition, Registry
from trioforge.web._bodies import text
from trioforge.web._origin import same_origin
from trioforge.web._sessions import Session, Sessions, Throttle
from trioforge.web._views import priority_name, shown_progress, when

__all__ = ["SESSION_COOKIE", "WebState"]

#: The cookie that carries the session id after logging in (HttpOnly, SameSite=Strict).
SESSION_COOKIE = "trioforge_session"


def _summary(error: str | None) -> str:
    """An error's last line (a traceback ends with the exception and its message)."""
    lines = (error or "").strip().splitlines()
    return lines[-1][:200] if lines else ""


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


class WebState:
    def __init__(
        self,
        client: Client | None,
        registry: Registry | None,
        token: str | None,
        cors_origins: Sequence[str] = (),
    ):
        self._client = client
        self.registry = registry
        self.token = token or None
        self.cors_origins = frozenset(cors_origins)
        self.sessions = Sessions()
        self.logins = Throttle()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("trioforge.web", "templates"),
            autoescape=True,  # every job text (names, payloads, errors, messages) is escaped
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["when"] = when
        self.templates.filters["pretty"] = _pretty
        self.templates.filters["summary"] = _summary
        self.templates.filters["priority"] = priority_name
        self.templates.filters["progress"] = shown_progress
        self.templates.filters["retention"] = describe_retention

    @property
    def client(self) -> Client:
        if self._client is None:
            raise TrioforgeError("the web app is not serving yet (its lifespan opens storage)")
        return self._client

    def serve_with(self, client: Client | None) -> None:
        self._client = client

    def public_workflow(self, name: str) -> JobDefinition[Any, Any] | None:
        """The workflow ``name`` (its highest version, or ``name@vN``) if it is declared
        ``public=True`` in the registry, else None."""
        registry = self.registry
        if registry is None:
            return None
        try:
            definition = registry.get(name)
        except LookupError:
            return None
        return definition if definition.workflow is not None and definition.public else None

    def bearer(self, request: Request) -> bool:
        """Whether an ``Authorization: Bearer`` header carries the action token (a script;
        a browser sends no such header to another origin without a CORS preflight)."""
        header = request.headers.get("authorization", "")
        return header[:7].lower() == "bearer " and self.accepts(header[7:])

    def session(self, request: Request) -> Session | None:
        """The logged-in session the request's cookie names, if it is still open."""
        if self.token is None:
            return None
        return self.sessions.get(request.cookies.get(SESSION_COOKIE), time.monotonic())

    def from_here(self, request: Request) -> bool | None:
        """Whether the browser says the request comes from this app's own origin (None:
        it says nothing, a script)."""
        h = request.headers
        return same_origin(h.get("origin"), h.get("sec-fetch-site"), h.get("host"))

    def refuse_foreign(self, request: Request) -> Response | None:
        """A 403 unless the request proves it comes from this app's pages."""
        verdict = self.from_here(request)
        if verdict is True:
            return None
        if verdict is False:
            return text("refused: the request comes from another origin", 403)
        return text(
            "refused: the request names no origin (Origin, Sec-Fetch-Site); scripts send"
            " 'Authorization: Bearer <TRIOFORGE_WEB_TOKEN>'",
            403,
        )

    def accepts(self, offered: str | None) -> bool:
        """Whether ``offered`` is the action token (compared in constant time)."""
        if self.token is None or not offered:
            return False
        return hmac.compare_digest(offered.encode(), self.token.encode())
