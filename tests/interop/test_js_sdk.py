"""The official JavaScript SDK (npm ``bosbase@0.26.3``) against our auth routes.

``sdk_auth.mjs`` signs up, signs in and refreshes with the SDK and prints
what it got as JSON; this test checks the tokens verify on the server and
that the SDK read our records and errors as it reads PocketBase's.

Needs Node.js (the test is skipped without ``node``); the SDK is installed
with ``npm ci`` from ``package-lock.json`` when ``node_modules`` is missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..conftest import StartServer
from ..servers import WsClient, query

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "sdk_auth.mjs"
PUBSUB_SCRIPT = HERE / "sdk_pubsub.mjs"
NPM_TIMEOUT = 300.0
SCRIPT_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with the SDK installed next to this file."""
    executable = shutil.which("node")
    if executable is None:
        pytest.skip("node is not installed: the official JavaScript SDK cannot run")
    if not (HERE / "node_modules" / "bosbase" / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("node is installed but npm is not: cannot install the SDK (npm ci)")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return executable


async def run_script(node: str, *args: str, script: Path = SCRIPT) -> dict[str, Any]:
    """Run ``script`` to completion (bounded in time); return its JSON output."""
    process = await asyncio.create_subprocess_exec(
        node,
        str(script),
        *args,
        cwd=HERE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), SCRIPT_TIMEOUT)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"{script.name} failed:\n{stderr.decode()}"
    output: dict[str, Any] = json.loads(stdout)
    return output


async def test_sign_up_sign_in_and_refresh_with_the_js_sdk(
    node: str, start_server: StartServer
) -> None:
    server = start_server()
    email, password = "interop@example.com", "interop-password"
    out = await run_script(node, server.url, email, password)

    signup = out["signup"]
    assert signup["collectionId"] == "_pb_users_auth_"
    assert signup["collectionName"] == "users"
    assert signup["name"] == "Interop"
    assert "email" not in signup  # hidden from others until emailVisibility

    auth, refresh = out["auth"], out["refresh"]
    assert auth["record"]["id"] == signup["id"]
    assert auth["record"]["email"] == email
    assert refresh["record"]["id"] == signup["id"]
    # Both tokens are accepted for publishing by a raw WebSocket client.
    subscriber = await WsClient.connect(server.ws_url)
    try:
        await subscriber.subscribe("interop")
        for token in (auth["token"], refresh["token"]):
            publisher = await WsClient.connect(server.ws_url, token=token)
            ack = await publisher.publish("interop", {"token": "ok"})
            await publisher.close()
            assert ack["type"] == "published"
            message = await subscriber.next_message()
            assert message["id"] == ack["id"]
        # And the Node session (the `ws` package, the SDK's token) published too.
        kinds = [frame["type"] for frame in out["pubsub"]]
        assert kinds == ["ready", "subscribed", "published", "message"]
        published, delivered = out["pubsub"][2], out["pubsub"][3]
        assert published["requestId"] == "p1"
        assert delivered["id"] == published["id"]
        assert delivered["data"] == {"from": "node"}
    finally:
        await subscriber.close()
    with sqlite3.connect(server.db_path) as db:
        publishers = {row[0] for row in db.execute("SELECT createdBy FROM _pubsub_messages")}
    assert publishers == {signup["id"]}

    # The SDK's auth store took the tokens and understood them.
    store = out["authStore"]
    assert store["afterSignIn"] == auth["token"]
    assert store["token"] == refresh["token"]
    assert store["isValid"] is True
    assert store["isSuperuser"] is False
    assert store["recordId"] == signup["id"]

    # ClientResponseError carries PocketBase's error bodies.
    wrong = out["errors"]["wrongPassword"]
    assert wrong["status"] == 400
    assert wrong["message"] == "Failed to authenticate."
    assert wrong["data"] == {"status": 400, "message": "Failed to authenticate.", "data": {}}
    duplicate = out["errors"]["duplicate"]
    assert duplicate["status"] == 400
    assert duplicate["message"] == "Failed to create record."
    assert duplicate["data"]["data"]["email"]["code"] == "validation_not_unique"


async def test_the_sdks_request_pattern_gets_an_error_for_oversized_data_and_no_error_in_bursts(
    node: str, start_server: StartServer
) -> None:
    """``sdk_pubsub.mjs`` drives the socket as the official SDKs' PubSubService does."""
    server = start_server()
    email, password = "burst@example.com", "burst-password"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}/api/collections/users/records",
            json={"email": email, "password": password, "passwordConfirm": password},
        ) as response,
    ):
        assert response.status == 200, await response.text()
    burst = 5000
    out = await run_script(node, server.url, email, password, str(burst), script=PUBSUB_SCRIPT)

    # The one oversized publish is rejected with the contract's message...
    assert out["oversized"] == {"rejected": True, "message": "payload too large"}
    # ... and the connection goes on: the next publish and the whole burst are acked, in order.
    assert out["after"]["topic"] == "js-burst"
    assert out["burst"] == {"acked": burst, "errors": 0, "inOrder": True, "firstError": None}
    assert out["received"] == [{"after": "oversized"}, *range(burst)]
    (stored,) = (await query(server, "SELECT count(*) FROM _pubsub_messages"))[0]
    assert stored == burst + 1
