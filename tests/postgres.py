"""PostgreSQL for the tests: a fresh database per test, on a named server or a throw-away one.

``BOSBASE_PUBSUB_TEST_PG`` names an admin URL (CI: ``postgres://root@127.0.0.1:5432/test``)
from which each test's database is created (``CREATE DATABASE t_bbps_<session>_<n>``)
and dropped after. Without it, the session starts a throw-away cluster of its own
(``initdb`` + ``pg_ctl`` from the installed server binaries, on a free loopback port,
in a temporary folder) and removes it at the end. A test that restarts PostgreSQL
always starts a ``ThrowawayCluster`` of its own: the named server is shared with
others and is never restarted or reconfigured.

The server binaries are looked up in ``BOSBASE_PUBSUB_TEST_PG_BIN``, then
``/usr/lib/postgresql/*/bin`` (newest first), then ``PATH``. PostgreSQL refuses to
run as root, so when the tests run as root the throw-away cluster runs as the
``postgres`` user (``nobody`` if there is none).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ENV_ADMIN_URL = "BOSBASE_PUBSUB_TEST_PG"
ENV_BIN = "BOSBASE_PUBSUB_TEST_PG_BIN"

T = TypeVar("T")


def blocking(work: Callable[[], Awaitable[T]]) -> T:
    """Run an async ``work()`` to completion from sync code, even inside a running loop."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(lambda: asyncio.run(_call(work))).result()


async def _call(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def with_database(url: str, database: str) -> str:
    """``url`` with its database (the path) replaced."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, if PostgreSQL is installed."""
    named = os.environ.get(ENV_BIN)
    if named:
        return Path(named)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
        reverse=True,
    )
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThrowawayCluster:
    """A PostgreSQL server of our own: a temporary folder, a free port, trust auth.

    ``start()`` runs ``initdb`` the first time; ``stop()``/``start()`` restart it on the
    same port (as a database outage would); ``destroy()`` stops it and removes the folder.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="bosbase-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._user: tuple[int, int] | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    entry = pwd.getpwnam(name)
                    self._user = (entry.pw_uid, entry.pw_gid)
                    break
            if self._user is None:
                raise RuntimeError("running as root, and no postgres or nobody user to run as")
            os.chown(self.folder, *self._user)
        self._initialized = False

    @property
    def admin_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        user, group = self._user if self._user is not None else (None, None)
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.folder,
            check=False,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            user=user,
            group=group,
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}{log}")

    def start(self) -> ThrowawayCluster:
        if not self._initialized:
            self._run(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            )
            self._initialized = True
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: connections are cut, as in an outage)."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self._initialized and self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


class PgServer:
    """A PostgreSQL server the tests may create databases on (and must drop them)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        # Our own random prefix: we create, and drop, only databases named with it.
        self.prefix = f"t_bbps_{secrets.token_hex(3)}_"
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._live: set[str] = set()

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        with self._lock:
            name = f"{self.prefix}{next(self._numbers)}"
            self._live.add(name)

        async def create() -> None:
            admin = await asyncpg.connect(self.admin_url)
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()

        blocking(create)
        return with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        """Drop a database ``create_database`` made (its connections are cut)."""
        name = urlsplit(url).path.lstrip("/")
        if not name.startswith(self.prefix):
            raise ValueError(f"not one of ours: {name}")

        async def drop() -> None:
            admin = await asyncpg.connect(self.admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

        blocking(drop)
        with self._lock:
            self._live.discard(name)

    def drop_all(self) -> None:
        for name in list(self._live):
            with contextlib.suppress(Exception):
                self.drop_database(with_database(self.admin_url, name))
