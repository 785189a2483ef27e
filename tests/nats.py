"""NATS JetStream for the tests: a fresh stream per test on a shared server, or a server of our own.

``BOSBASE_PUBSUB_TEST_NATS`` names the server (default ``nats://127.0.0.1:4222``).
Each test gets its own stream (``nats://...?stream=t_bbps_<random>``), whose
subjects and KV buckets are named after it, so parallel runs never collide;
``drop_stream`` deletes the stream and its buckets afterwards. The shared
server is never restarted or reconfigured: a test that restarts NATS starts a
``NatsProcess`` of its own (``nats-server -js`` on a free port, in a temporary
folder) and stops only that process, by its PID.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bosbase_pubsub.server.storage.jetstream_common import delete_store, parse_url

from .postgres import blocking, free_port

ENV_URL = "BOSBASE_PUBSUB_TEST_NATS"
DEFAULT_URL = "nats://127.0.0.1:4222"


def server_url() -> str:
    return os.environ.get(ENV_URL) or DEFAULT_URL


def unreachable_reason(url: str) -> str | None:
    """Why the tests cannot use the NATS server at ``url`` (``None`` when they can)."""
    settings = parse_url(url)
    host, _, port = settings.where.partition("://")[2].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3) as sock:
            sock.settimeout(3)
            line = sock.makefile("rb").readline()
    except OSError as error:
        return f"no NATS server at {url} ({error}): set {ENV_URL} or start nats-server -js"
    if not line.startswith(b"INFO "):
        return f"{url} does not speak the NATS protocol"
    info = json.loads(line[5:])
    if not info.get("jetstream"):
        return f"the NATS server at {url} has JetStream off (start it with -js)"
    return None


def stream_url(base: str) -> str:
    """A store URL on ``base`` with a stream (and buckets) nobody else uses."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}stream=t_bbps_{secrets.token_hex(5)}"


async def _drop(url: str) -> None:
    if unreachable_reason(url) is not None:
        return  # a server of a test's own, gone with its folder (and the stream in it)
    await delete_store(url)


def drop_stream(url: str) -> None:
    """Delete the stream of ``url`` (one of ours: ``t_bbps_``) and its KV buckets."""
    if not parse_url(url).stream.startswith("t_bbps_"):
        raise ValueError(f"not one of ours: {url}")
    blocking(lambda: _drop(url))


async def stored_messages(url: str) -> list[tuple[int, bytes]]:
    """Every message of the stream of ``url`` as ``(seq, stored bytes)``, by sequence."""
    from bosbase_pubsub.server.storage.jetstream import JetStreamStore

    store = JetStreamStore(url)
    await store.open()
    try:
        state = await store.stream_state()
        found = await store.browse(None, None, max(1, state.messages))
        return [(m.seq, m.data) for m in reversed(found)]
    finally:
        await store.close()


class NatsProcess:
    """A ``nats-server -js`` of our own on a free port: stopped and started by PID."""

    def __init__(self, binary: str, config: str = "") -> None:
        self.binary = binary
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="bosbase-nats-"))
        self.config = config
        """nats-server configuration (``tls {...}``, ``authorization {...}``) beside the flags."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsProcess:
        config = []
        if self.config:
            (self.folder / "nats.conf").write_text(self.config)
            config = ["-c", str(self.folder / "nats.conf")]
        self._process = subprocess.Popen(
            [
                self.binary,
                *config,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while unreachable_reason(self.url) is not None:
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.stop()
                raise RuntimeError(f"nats-server on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server (SIGKILL: as in a crash; its stored streams stay on disk)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            process.wait(timeout=20)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def find_nats_server() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
