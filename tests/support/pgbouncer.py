"""A PgBouncer of the test's own in transaction pooling mode, in front of the test server.

Debian's ``pgbouncer`` runs from a generated config in the test's directory on a free port,
trusting every user (the test server trusts them too). Without the program the tests skip,
and with ``TRIOFORGE_REQUIRE_POSTGRES=1`` (CI) they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from tests.support.postgres import URL, drop_schema, require_postgres
from trioforge.storage.postgres import PostgresBackend

#: Server connections PgBouncer keeps per database and user: fewer than the clients'
#: connections, so transactions really do move between server connections.
POOL_SIZE = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require_pgbouncer() -> str:
    """The pgbouncer program (skip, or in CI fail, without it)."""
    require_postgres()
    program = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if program is not None:
        return program
    message = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
    if os.environ.get("TRIOFORGE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{message}, and TRIOFORGE_REQUIRE_POSTGRES=1 says it must be")
    pytest.skip(message)


@contextmanager
def running_pgbouncer(directory: Path) -> Iterator[str]:
    """PgBouncer (pool_mode = transaction) until the block ends; yields its URL, with
    ``pooler=transaction`` so trioforge keeps no session state on it."""
    program = require_pgbouncer()
    server = urllib.parse.urlsplit(URL)
    port = _free_port()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "userlist.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={server.hostname or '127.0.0.1'} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'userlist.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\n"
        "max_client_conn = 200\n"
    )
    command = [program, str(config)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root; it reads its files first
        command = [program, "-u", "postgres", str(config)]
    log = (directory / "pgbouncer.log").open("wb")  # its log goes to stderr
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, directory)
        yield (
            urllib.parse.urlunsplit(
                server._replace(netloc=server.netloc.replace(f":{server.port}", f":{port}"))
                if server.port
                else server._replace(netloc=f"{server.netloc}:{port}")
            )
            + ("&" if server.query else "?")
            + "pooler=transaction"
        )
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], directory: Path) -> None:
    """Until PgBouncer accepts connections (it reports nothing else when ready)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            logged = (directory / "pgbouncer.log").read_text()
            pytest.fail(f"pgbouncer exited ({proc.returncode}): {logged}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet: nothing to wait on
    proc.terminate()
    pytest.fail("pgbouncer did not open its port within 10 s")


@asynccontextmanager
async def pooled_backend(directory: Path) -> AsyncIterator[PostgresBackend]:
    """An unopened backend whose pool goes through a PgBouncer of its own (LISTEN direct),
    on a schema dropped afterwards."""
    with running_pgbouncer(directory / "pgbouncer") as url:
        schema = f"tf_test_{uuid.uuid4().hex[:12]}"
        try:
            yield PostgresBackend(url, schema=schema, listen_url=URL)
        finally:
            await drop_schema(schema)
