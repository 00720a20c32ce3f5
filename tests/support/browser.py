"""Reaching a real browser: Debian's Chromium driven by Playwright, or a visible skip.

With ``TRIOFORGE_REQUIRE_BROWSER=1`` (CI) a missing browser fails the tests instead.
``$TRIOFORGE_CHROMIUM`` names the binary (default ``/usr/bin/chromium``).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import pytest
import trio
from starlette.types import ASGIApp, Receive, Scope, Send

import trioforge
import trioforge.web
from trioforge import Registry

CHROMIUM = os.environ.get("TRIOFORGE_CHROMIUM", "/usr/bin/chromium")
T = TypeVar("T")


def require_browser() -> None:
    """Skip (or, in CI, fail) the calling test when Chromium or Playwright is missing."""
    missing = None
    if shutil.which(CHROMIUM) is None:
        missing = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "Playwright is not installed (pip install playwright)"
    if missing is None:
        return
    if os.environ.get("TRIOFORGE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{missing}, and TRIOFORGE_REQUIRE_BROWSER=1 says it must be there")
    pytest.skip(f"{missing}; browser tests need a system Chromium")


def with_files(app: ASGIApp, files: Mapping[str, bytes]) -> ASGIApp:
    """``app`` that also answers ``GET`` of each path of ``files`` with its bytes."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        body = files.get(scope["path"]) if scope["type"] == "http" else None
        if body is None:
            await app(scope, receive, send)
            return
        headers = [(b"content-type", b"text/javascript"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return serve


class Served:
    """A runtime and the web app, served from a trio run of their own in a thread, so a
    synchronous browser driver can talk to it."""

    def __init__(
        self,
        registry: Registry,
        database: str,
        token: str,
        *,
        files: Mapping[str, bytes] | None = None,
        web_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """``files``: more scripts served from the app's origin, by path (text/javascript);
        ``web_options``: more arguments of ``trioforge.web.app`` (``cors_origins``)."""
        self._registry, self._database, self._token = registry, database, token
        self._files = dict(files or {})
        self._web_options = dict(web_options or {})
        self._options = options
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""
        self.runtime: trioforge.Runtime | None = None
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the test thread
            self._ready.put(exc)

    async def _main(self) -> None:
        self._stop = trio.Event()
        async with trioforge.open_runtime(
            self._registry, database=self._database, **self._options
        ) as rt:
            self.runtime = rt
            asgi = with_files(
                trioforge.web.app(
                    client=rt, registry=self._registry, token=self._token, **self._web_options
                ),
                self._files,
            )
            async with trio.open_nursery() as nursery:
                [url] = await nursery.start(partial(trioforge.web.serve, asgi, port=0))
                self._trio_token = trio.lowlevel.current_trio_token()
                self._ready.put(url)
                await self._stop.wait()
                nursery.cancel_scope.cancel()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` in the server's trio run and return its result."""
        return trio.from_thread.run(partial(fn, *args), trio_token=self._trio_token)

    @contextmanager
    def running(self) -> Iterator[Served]:
        self._thread.start()
        ready = self._ready.get(timeout=60)
        if isinstance(ready, BaseException):
            raise ready
        self.url = ready
        try:
            yield self
        finally:
            assert self._stop is not None
            trio.from_thread.run_sync(self._stop.set, trio_token=self._trio_token)
            self._thread.join(timeout=60)
