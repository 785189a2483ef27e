"""Real server processes and raw WebSocket clients for the tests.

A ``ServerProcess`` runs ``bosbase-pubsub serve`` on a free loopback port
(``--http 127.0.0.1:0``; the bound port is read from its log) with its own
data folder, and its store (SQLite in that folder, or the PostgreSQL
database ``db_url``), exactly as a user would start it. ``query`` reads a
server's store whichever backend it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

STARTUP_TIMEOUT = 20.0
_SERVING = re.compile(r"serving on (http://[^ ]+:\d+)")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``bosbase-pubsub`` command line to completion."""
    return subprocess.run(
        [sys.executable, "-m", "bosbase_pubsub.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


class ServerProcess:
    """One ``bosbase-pubsub serve`` process; stopped with SIGTERM like a user would."""

    def __init__(
        self,
        data_dir: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        *,
        db_url: str | None = None,
        port: int = 0,
    ):
        self.port = port
        """The port to listen on; 0 (the default) lets the system pick a free one."""
        self.data_dir = data_dir
        self.args = list(args)
        self.env = env
        self.db_url = db_url
        """The PostgreSQL database the server uses; ``None``: SQLite in ``data_dir``."""
        self.url = ""
        self.logs: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._serving = threading.Event()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/api/pubsub"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "data.db"

    def start(self) -> ServerProcess:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # One process per server unless a test asks for workers (``auto`` would
        # start one per CPU on PostgreSQL); ``--workers`` in args wins over this.
        env.setdefault("BOSBASE_PUBSUB_WORKERS", "1")
        self._serving.clear()
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bosbase_pubsub.cli",
                "serve",
                "--http",
                f"127.0.0.1:{self.port}",
                "--dir",
                str(self.data_dir),
                *(["--db", self.db_url] if self.db_url else []),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        if not self._serving.wait(STARTUP_TIMEOUT) or not self.url:
            self.kill()
            raise RuntimeError("server did not start:\n" + "\n".join(self.logs))
        return self

    def _read_logs(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self.logs.append(line.rstrip("\n"))
            match = _SERVING.search(line)
            if match and not self._serving.is_set():
                self.url = match.group(1)
                self._serving.set()
        self._serving.set()  # the process ended: stop waiting
        self._process.stderr.close()

    def log_text(self) -> str:
        return "\n".join(self.logs)

    def restart(self) -> ServerProcess:
        """Stop (SIGTERM), then start again on the same port with the same store."""
        self.stop()
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.start()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; returns the exit code (kills after ``timeout``)."""
        if self._process is None:
            return 0
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        if self._reader is not None:
            self._reader.join(5)
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._reader is not None:
            self._reader.join(5)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.logs):
                if regex.search(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n{self.log_text()}")


class WsClient:
    """A raw WebSocket client speaking the contract's envelopes (no SDK)."""

    _ids = itertools.count(1)

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws
        self.client_id = ""
        self.ready: dict[str, Any] = {}
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.unmatched: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        max_msg_size: int = 4 * 1024 * 1024,
        wait_ready: bool = True,
    ) -> WsClient:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = token
        session = aiohttp.ClientSession(cookies=cookies)
        try:
            ws = await session.ws_connect(
                url, headers=all_headers, params=params, max_msg_size=max_msg_size, autoping=True
            )
        except BaseException:
            await session.close()
            raise
        client = cls(session, ws)
        if wait_ready:
            ready = await asyncio.wait_for(ws.receive_json(), 10)
            assert ready["type"] == "ready", ready
            client.client_id = ready["clientId"]
            client.ready = ready
        client._reader = asyncio.get_running_loop().create_task(client._read())
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if frame.get("type") == "message":
                    self.messages.put_nowait(frame)
                    continue
                future = self.replies.pop(frame.get("requestId", ""), None)
                if future is not None and not future.done():
                    future.set_result(frame)
                else:
                    self.unmatched.put_nowait(frame)
        finally:
            self.closed.set()
            # Requests still waiting will get no reply: fail them now, not at their timeout.
            for future in self.replies.values():
                if not future.done():
                    future.set_exception(ConnectionError("the connection closed"))
            self.replies.clear()

    async def send_raw(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def request(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send ``{"type": kind, "requestId": ..., **fields}`` and return the reply."""
        request_id = f"r{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[request_id] = future
        # The standard library keeps integers beyond 64 bits exact, both ways.
        await self.ws.send_str(json.dumps({"type": kind, "requestId": request_id, **fields}))
        return await asyncio.wait_for(future, timeout)

    async def subscribe(self, topic: str) -> dict[str, Any]:
        return await self.request("subscribe", topic=topic)

    async def publish(self, topic: str, data: Any = None) -> dict[str, Any]:
        return await self.request("publish", topic=topic, data=data)

    async def next_message(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 10)
        await self.session.close()


async def sign_in(base_url: str, collection: str, email: str, password: str) -> dict[str, Any]:
    """``auth-with-password`` over HTTP; returns the JSON body (token and record)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base_url}/api/collections/{collection}/auth-with-password",
            json={"identity": email, "password": password},
        ) as response,
    ):
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        return body


async def scrape_metrics(base_url: str) -> dict[str, float]:
    """``GET /metrics``, parsed: each sample's name (with its labels) and value."""
    async with aiohttp.ClientSession() as session, session.get(base_url + "/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        values = {}
        for line in (await response.text()).splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


def _numbered(sql: str) -> str:
    """SQLite's ``?`` placeholders as PostgreSQL's ``$1, $2...``."""
    numbers = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(numbers)}", sql)


async def query(server: ServerProcess, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders, quoted camelCase columns) from the server's store."""
    if server.db_url is None:
        with contextlib.closing(sqlite3.connect(server.db_path)) as db:
            return db.execute(sql, params).fetchall()
    connection = await asyncpg.connect(server.db_url)
    try:
        return [tuple(row) for row in await connection.fetch(_numbered(sql), *params)]
    finally:
        await connection.close()


async def execute_many(server: ServerProcess, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``sql`` (``?`` placeholders) once per row in the server's store, in one transaction."""
    if server.db_url is None:
        with contextlib.closing(sqlite3.connect(server.db_path)) as db, db:
            db.executemany(sql, rows)
        return
    connection = await asyncpg.connect(server.db_url)
    try:
        await connection.executemany(_numbered(sql), rows)
    finally:
        await connection.close()
