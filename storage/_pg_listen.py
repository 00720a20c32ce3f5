"""PostgreSQL LISTEN: the notices of other processes (wake-ups, cancels, freed slots) and
the job change feed, each on a connection of its own."""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from trioforge._core.errors import DatabaseUnavailableError
from trioforge._core.extras import needs_extra
from trioforge.storage._backend import Changed, Listening
from trioforge.storage._changes import parse_ids
from trioforge.storage._pg_sql import CHANNEL
from trioforge.storage._records import CancelNotice, Notice, SlotsFreedNotice, WakeNotice
from trioforge.storage._urls import redact

with needs_extra("postgres", "PostgreSQL"):
    import asyncpg


log = logging.getLogger("trioforge.postgres")

#: How long a listener waits for its own probe notice before it concludes LISTEN is deaf.
PROBE_TIMEOUT = 2.0
#: How often a deaf change feed marks every watched job for a re-read instead.
DEAF_REREAD = 1.0
#: How often a listener with an address checks that it still hears its own notices, and
#: how long it waits for one (generous: a busy event loop reads notices late). A connection
#: can stay up and hear nothing (half-open after a network fault); addressed, its process
#: would keep being sent wake-ups it never gets, so it reconnects instead.
REPROBE_EVERY = 10.0
REPROBE_TIMEOUT = 30.0


def trio_asyncio_module() -> Any:
    """trio-asyncio, imported when a trio runtime first crosses into asyncio. Importing it
    makes ``asyncio.new_event_loop()`` (so ``asyncio.run``) return its own loop in the
    whole process, which an asyncio application that only uses ``trioforge.aio`` must not
    get; so this module never imports it at import time."""
    with needs_extra("postgres", "PostgreSQL"):
        import trio_asyncio
    return trio_asyncio


def parse_notice(payload: str, schema: str | None = None) -> Notice | None:
    """The notice in ``payload``, for a listener on ``schema`` (None: the default tables).

    The channel is shared by every schema of the database. A cancel names its schema
    (``c:<job id>:<schema>``), since job ids repeat across schemas; a wake-up does not, as
    one meant for another schema only costs a claim that finds nothing.
    """
    kind, _, rest = payload.partition(":")
    try:
        if kind == "w":
            run_at, _, queue = rest.partition(":")
            return WakeNotice(queue, float(run_at))
        if kind == "a":  # on the listener's own channel: addressed to this process alone
            jobs, _, rest = rest.partition(":")
            run_at, _, queue = rest.partition(":")
            return WakeNotice(queue, float(run_at), max(1, int(jobs)))
        if kind == "c":
            job_id, _, scope = rest.partition(":")
            return CancelNotice(int(job_id)) if scope == (schema or "") else None
        if kind == "f":
            return SlotsFreedNotice() if rest == (schema or "") else None
    except ValueError:
        pass
    return None  # not ours: ignore


async def _every(interval: float, fn: Callable[[], None]) -> None:
    while True:
        await trio.sleep(interval)
        with contextlib.suppress(trio.ClosedResourceError):
            fn()


class PostgresListening:
    """The LISTEN side of :class:`~trioforge.storage.postgres.PostgresBackend`."""

    url: str
    listen_url: str
    schema: str | None
    changes_channel: str
    _connect_timeout: float
    #: Sends a payload on a channel through the pool.
    _notify_probe: Callable[[str, str], Awaitable[None]]
    #: Whether the deaf-listener warning was given (once per backend, not per reconnect).
    _warned_deaf = False
    #: The channel where notices reach this backend's listener alone (under PostgreSQL's
    #: 63-byte limit for a name).
    _address: str

    async def _aio(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """One crossing into asyncio."""
        return await trio_asyncio_module().aio_as_trio(fn)(*args)

    @asynccontextmanager
    async def listen(self, on_notice: Callable[[Notice], None]) -> AsyncIterator[Listening]:
        """LISTEN on a connection of its own (a pooled one would be UNLISTENed on release),
        ``on_notice`` called from asyncpg's callback itself (trio-asyncio runs it on trio's
        thread): on the channel every process hears, and on one of its own, the same for
        every connection of this backend (after a reconnect, an enqueue that still reads
        the address advertised before the drop reaches the new connection)."""
        address = self._address
        probe, heard, lost = f"p:{uuid.uuid4().hex}", trio.Event(), trio.Event()
        probes = {probe: heard}  # sent and not heard yet

        def on_notify(conn: object, pid: int, channel: str, payload: str) -> None:
            if payload in probes:
                probes.pop(payload).set()
                return
            notice = parse_notice(payload, self.schema)
            if notice is None or lost.is_set():
                return
            if isinstance(notice, WakeNotice) and notice.owed and channel != address:
                notice = WakeNotice(notice.queue, notice.run_at)  # only ours are addressed
            try:
                on_notice(notice)
            except Exception:  # raised into asyncio's loop it would end the runtime
                log.exception("handling the notice %r failed", notice)

        conn = await self._aio(self._listening, (CHANNEL, address), on_notify, lost.set, "listener")
        try:
            addressed = await self._check_heard(address, probe, heard)
            async with trio.open_nursery() as nursery:
                if addressed:
                    nursery.start_soon(self._keep_hearing, address, probes, lost)
                yield Listening(lost, address if addressed else None)
                nursery.cancel_scope.cancel()
        finally:
            lost.set()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._aio(conn.close)

    @asynccontextmanager
    async def changes(self) -> AsyncIterator[trio.MemoryReceiveChannel[Changed]]:
        """LISTEN for job change notices on a connection of its own; the channel ends
        when that connection drops."""
        send, receive = trio.open_memory_channel[Changed](math.inf)
        probe, heard = f"p:{uuid.uuid4().hex}", trio.Event()

        def on_notify(conn: object, pid: int, channel: str, payload: str) -> None:
            if payload == probe:
                heard.set()
                return
            ids = parse_ids(payload)
            if ids is not None:
                with contextlib.suppress(trio.ClosedResourceError):
                    send.send_nowait(ids)

        conn = await self._aio(
            self._listening, (self.changes_channel,), on_notify, send.close, "live feed"
        )
        try:
            async with trio.open_nursery() as nursery:
                if not await self._check_heard(self.changes_channel, probe, heard):
                    # No notice will come: "everything watched may have changed", on a beat.
                    nursery.start_soon(_every, DEAF_REREAD, partial(send.send_nowait, None))
                yield receive
                nursery.cancel_scope.cancel()
        finally:
            send.close()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._aio(conn.close)

    async def _keep_hearing(
        self, address: str, probes: dict[str, trio.Event], lost: trio.Event
    ) -> None:
        """Every :data:`REPROBE_EVERY`, a probe on ``address``; not heard within
        :data:`REPROBE_TIMEOUT`, the connection counts as lost (``lost`` set: the listener
        reconnects, and stops advertising the address meanwhile)."""
        while True:
            await trio.sleep(REPROBE_EVERY)
            probe, heard = f"p:{uuid.uuid4().hex}", trio.Event()
            probes[probe] = heard
            try:
                await self._notify_probe(address, probe)
            except Exception:  # the database is away: the connection's own end says so
                probes.pop(probe, None)
                continue
            with trio.move_on_after(REPROBE_TIMEOUT):
                await heard.wait()
                continue
            log.warning(
                "the listening connection to %s heard none of its own notices for %.0fs; "
                "reconnecting", redact(self.listen_url), REPROBE_TIMEOUT,
            )  # fmt: skip
            lost.set()
            return

    async def _check_heard(self, channel: str, probe: str, heard: trio.Event) -> bool:
        """NOTIFY ``probe`` on ``channel`` through the pool and wait for it on the listening
        connection. LISTEN through a transaction pooler is accepted and then never fires
        (the server connection that ran it serves other clients); the runtime still claims
        every poll interval and reads cancels at each heartbeat, so this only says why it
        is slow."""
        await self._notify_probe(channel, probe)
        with trio.move_on_after(PROBE_TIMEOUT):
            await heard.wait()
            return True
        if not self._warned_deaf:
            self._warned_deaf = True
            log.warning(
                "no notice came back on the listening connection to %s within %.0fs: "
                "likely LISTEN through a transaction pooler (PgBouncer pool_mode = "
                "transaction); set listen_url to a direct connection to PostgreSQL. "
                "Until then wake-ups and cancels are found by polling (claims every "
                "poll_interval, cancels at each heartbeat)",
                redact(self.listen_url), PROBE_TIMEOUT,
            )  # fmt: skip
        return False

    async def _listening(
        self,
        channels: tuple[str, ...],
        on_notify: Callable[..., None],
        on_lost: Callable[[], None],
        role: str,
    ) -> asyncpg.Connection:
        """A connection of its own LISTENing on ``channels`` (a pooled one would be
        UNLISTENed on release); ``on_lost()`` when it drops."""
        # LISTEN reads no table, so no search path (which a pooler would refuse).
        settings = {"application_name": f"trioforge {role} {self.schema or ''}".strip()}
        try:
            conn = await asyncpg.connect(
                self.listen_url, timeout=self._connect_timeout, server_settings=settings
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailableError(
                f"cannot reach PostgreSQL at {redact(self.listen_url)} to listen: {exc}"
            ) from None
        conn.add_termination_listener(lambda _: on_lost())
        for channel in channels:
            await conn.add_listener(channel, on_notify)
        return conn
