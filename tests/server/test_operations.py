"""Running the server as an operator does: flags, environment, logs, signals, liveness."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from ..conftest import BOTH_BACKENDS, StartServer, make_superuser
from ..servers import ServerProcess, WsClient, cli


def test_serve_help_lists_every_option_with_its_variable_and_default() -> None:
    result = cli("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag, env, default in [
        ("--http", "BOSBASE_PUBSUB_HTTP", "127.0.0.1:8090"),
        ("--dir", "BOSBASE_PUBSUB_DIR", "pb_data"),
        ("--retention", "BOSBASE_PUBSUB_RETENTION", "24h"),
        ("--token-ttl", "BOSBASE_PUBSUB_TOKEN_TTL", "7d"),
        ("--max-topic-length", "BOSBASE_PUBSUB_MAX_TOPIC_LENGTH", "256"),
        ("--publish-rate", "BOSBASE_PUBSUB_PUBLISH_RATE", "0"),
        ("--max-publishes-in-flight", "BOSBASE_PUBSUB_MAX_PUBLISHES_IN_FLIGHT", "256"),
        ("--max-frame-size", "BOSBASE_PUBSUB_MAX_FRAME_SIZE", "1MiB"),
        ("--outbound-buffer", "BOSBASE_PUBSUB_OUTBOUND_BUFFER", "4MiB"),
        ("--log-format", "BOSBASE_PUBSUB_LOG_FORMAT", "text"),
    ]:
        assert flag in text
        assert f"env {env}; default: {default}" in text


def test_a_bad_value_is_a_clear_usage_error() -> None:
    result = cli("serve", "--retention", "forever")
    assert result.returncode == 2
    assert "invalid duration 'forever'" in result.stderr
    env = dict(os.environ, BOSBASE_PUBSUB_PUBLISH_RATE="-3")
    result = cli("serve", env=env)
    assert result.returncode == 2
    assert "must be 0 or more" in result.stderr


async def test_options_come_from_the_environment(tmp_path: Path) -> None:
    folder = tmp_path / "pb_data"
    make_superuser(folder)
    env = dict(os.environ, BOSBASE_PUBSUB_MAX_TOPIC_LENGTH="5", BOSBASE_PUBSUB_LOG_FORMAT="json")
    server = ServerProcess(folder, env=env).start()
    try:
        client = await WsClient.connect(server.ws_url)
        reply = await client.subscribe("longer-than-five")
        assert reply["message"] == "topic is too long (at most 5 characters)"
        await client.close()
    finally:
        server.stop()
    # --log-format json (from the environment): one JSON object per line.
    entries = [json.loads(line) for line in server.logs if line.strip()]
    assert any(entry["message"].startswith("serving on") for entry in entries)
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)


async def test_sigint_stops_gracefully_too(start_server: StartServer) -> None:
    server = start_server()
    client = await WsClient.connect(server.ws_url)
    os.kill(server.pid, signal.SIGINT)
    await asyncio.wait_for(client.closed.wait(), 15)
    assert client.ws.close_code == 1001
    await client.session.close()
    assert server.stop() == 0


async def test_a_peer_that_stops_answering_pings_is_dropped(start_server: StartServer) -> None:
    server = start_server("--heartbeat", "1s")
    alive = await WsClient.connect(server.ws_url)  # reads (and so answers pings) all along
    async with (
        aiohttp.ClientSession() as session,
        # autoping=False: this client never answers the server's pings.
        session.ws_connect(server.ws_url, autoping=False) as dead,
    ):
        assert (await dead.receive_json())["type"] == "ready"
        saw_ping = False
        while True:
            message = await asyncio.wait_for(dead.receive(), 10)
            if message.type is aiohttp.WSMsgType.PING:
                saw_ping = True
                continue
            break
        assert saw_ping
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    # The live peer answered its pings and is still served.
    assert (await alive.request("ping"))["type"] == "pong"
    await alive.close()


async def test_a_peer_that_only_answers_pings_stays_and_its_own_pings_are_answered(
    start_server: StartServer,
) -> None:
    server = start_server("--heartbeat", "1s")
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(server.ws_url, autoping=False) as quiet,
    ):
        assert (await quiet.receive_json())["type"] == "ready"
        pings = 0
        deadline = asyncio.get_running_loop().time() + 4  # several heartbeats
        while asyncio.get_running_loop().time() < deadline:
            message = await asyncio.wait_for(quiet.receive(), 5)
            assert message.type is aiohttp.WSMsgType.PING, message
            pings += 1
            await quiet.pong(message.data)
        assert pings >= 2
        # The server answers a client's WebSocket ping with a pong of the same payload.
        await quiet.ping(b"are you there")
        message = await asyncio.wait_for(quiet.receive(), 5)
        while message.type is aiohttp.WSMsgType.PING:  # one of the server's, crossing ours
            await quiet.pong(message.data)
            message = await asyncio.wait_for(quiet.receive(), 5)
        assert message.type is aiohttp.WSMsgType.PONG
        assert message.data == b"are you there"
        # Still served.
        await quiet.send_json({"type": "ping", "requestId": "p"})
        reply = await asyncio.wait_for(quiet.receive(), 5)
        while reply.type is aiohttp.WSMsgType.PING:
            await quiet.pong(reply.data)
            reply = await asyncio.wait_for(quiet.receive(), 5)
        assert json.loads(reply.data) == {"type": "pong", "requestId": "p"}


@BOTH_BACKENDS
def test_account_commands(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    where = ["--dir", str(tmp_path / "pb_data")]
    if backend == "postgres":
        where += ["--db", request.getfixturevalue("pg_database")]
    result = cli("user", "create", "ada@example.com", "secret-password", *where)
    assert result.returncode == 0, result.stderr
    assert "ada@example.com" in result.stdout
    again = cli("user", "create", "ada@example.com", "secret-password", *where)
    assert again.returncode == 1
    assert "error:" in again.stderr
    first = cli("superuser", "upsert", "root@example.com", "first-password", *where)
    second = cli("superuser", "upsert", "root@example.com", "second-password", *where)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr


@BOTH_BACKENDS
def test_the_database_comes_from_the_environment_too(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        env = dict(os.environ, BOSBASE_PUBSUB_DB=f"sqlite:///{tmp_path / 'elsewhere.db'}")
    else:
        env = dict(os.environ, BOSBASE_PUBSUB_DB=request.getfixturevalue("pg_database"))
    folder = str(tmp_path / "pb_data")
    result = cli("user", "create", "env@example.com", "secret-password", "--dir", folder, env=env)
    assert result.returncode == 0, result.stderr
    again = cli("user", "create", "env@example.com", "secret-password", "--dir", folder, env=env)
    assert again.returncode == 1  # the same store: the email is taken
    assert not (tmp_path / "pb_data" / "data.db").exists()


def test_the_configuration_reference_lists_every_serve_option() -> None:
    reference = (Path(__file__).parents[2] / "docs/reference/configuration.md").read_text()
    flags = set(re.findall(r"(--[a-z][a-z-]+)", cli("serve", "--help").stdout)) - {"--help"}
    missing = {flag for flag in flags if f"`{flag}" not in reference}
    assert not missing


def test_a_store_that_cannot_be_opened_is_one_clear_line(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    result = cli("serve", "--db", "postgres://root@127.0.0.1:1/none", "--http", "127.0.0.1:0")
    assert result.returncode == 1
    assert "error: cannot start:" in result.stderr
    assert "Traceback" not in result.stderr
