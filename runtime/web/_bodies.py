"""Request bodies read up to a limit and no further, and responses that survive any text."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["JSONOut", "read_body", "text", "too_large"]


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` bytes: a declared length over
    it is refused before a byte is read, a chunked body as soon as it passes it. The rest
    is never read: the 413 closes the connection, so the server holds at most ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and (not _digits(declared) or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _digits(text: str) -> bool:
    return text.strip().isascii() and text.strip().isdigit()


def too_large(limit: int, *, as_json: bool) -> Response:
    message = f"request body too large: at most {limit} bytes"
    headers = {"Connection": "close"}  # the unread rest of the body is not waited for
    if as_json:
        return JSONOut({"error": message}, status_code=413, headers=headers)
    return text(message, 413, headers=headers)


class JSONOut(JSONResponse):
    """JSON with every non-ASCII character escaped, so a lone surrogate read from an old
    row is sent as ``\\ud800`` (valid JSON) instead of failing to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def text(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """A plain-text answer; a lone surrogate in it is written as its escape."""
    body = message.encode("utf-8", "backslashreplace")
    return Response(body, status_code=status, media_type="text/plain", headers=headers)
