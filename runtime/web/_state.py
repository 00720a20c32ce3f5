"""What every route of one web app shares: its client, registry, token and templates."""

from __future__ import annotations

import hmac
import json
from typing import Any

import jinja2
from starlette.requests import Request

from trioforge._client import Client
from trioforge._errors import TrioforgeError
from trioforge._registry import JobDefinition, Registry
from trioforge.web._views import when

__all__ = ["TOKEN_COOKIE", "WebState"]

#: The cookie that carries the action token after logging in (HttpOnly, SameSite=Strict).
TOKEN_COOKIE = "trioforge_token"


def _summary(error: str | None) -> str:
    """An error's last line (a traceback ends with the exception and its message)."""
    lines = (error or "").strip().splitlines()
    return lines[-1][:200] if lines else ""


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


class WebState:
    def __init__(self, client: Client | None, registry: Registry | None, token: str | None):
        self._client = client
        self.registry = registry
        self.token = token or None
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("trioforge.web", "templates"),
            autoescape=True,  # every job text (names, payloads, errors, messages) is escaped
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["when"] = when
        self.templates.filters["pretty"] = _pretty
        self.templates.filters["summary"] = _summary

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

    def may_act(self, request: Request) -> bool:
        """Whether this request carries the action token (cookie or bearer header)."""
        header = request.headers.get("authorization", "")
        offered = header[7:] if header.lower().startswith("bearer ") else None
        return self.accepts(offered or request.cookies.get(TOKEN_COOKIE))

    def accepts(self, offered: str | None) -> bool:
        """Whether ``offered`` is the action token (compared in constant time)."""
        if self.token is None or not offered:
            return False
        return hmac.compare_digest(offered.encode(), self.token.encode())
