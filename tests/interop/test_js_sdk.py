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
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bosbase_pubsub.server.auth import Authenticator
from bosbase_pubsub.server.config import AuthSettings
from bosbase_pubsub.server.storage.sqlite import SqliteStore

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "sdk_auth.mjs"
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


@dataclass
class Server:
    url: str
    authenticator: Authenticator


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A minimal application with the auth routes, on a loopback port."""
    store = SqliteStore(tmp_path / "data.db")
    await store.open()
    authenticator = Authenticator(store.accounts, AuthSettings())
    await authenticator.start()
    app = web.Application()
    authenticator.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield Server(url=f"http://{host}:{port}", authenticator=authenticator)
    finally:
        await runner.cleanup()
        await store.close()


async def run_script(node: str, *args: str) -> dict[str, Any]:
    """Run ``sdk_auth.mjs`` to completion (bounded in time); return its JSON output."""
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
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
    assert process.returncode == 0, f"sdk_auth.mjs failed:\n{stderr.decode()}"
    output: dict[str, Any] = json.loads(stdout)
    return output


async def test_sign_up_sign_in_and_refresh_with_the_js_sdk(node: str, server: Server) -> None:
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
    for token in (auth["token"], refresh["token"]):
        identity = await server.authenticator.verify_token(token)
        assert identity is not None
        assert identity.record_id == signup["id"]
        assert identity.collection_name == "users"

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
