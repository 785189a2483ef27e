"""A password change (or a deleted account) signs out the sockets opened with the
account's earlier tokens, on every node, within half a heartbeat.

The token key changes with the password; each node's heartbeat round looks up
the token keys of the accounts signed in on it and signs out a connection whose
key changed or whose account is gone: it stays open, anonymous, and publishing
needs a token again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from ..conftest import (
    STORE_BACKENDS,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    StartServer,
    http_sign_in,
)
from ..servers import ServerProcess, WsClient

EMAIL, PASSWORD, NEW_PASSWORD = "ada@example.com", "ada-password-1", "ada-password-2"


async def _call(
    server: ServerProcess, method: str, path: str, body: Any = None, token: str = ""
) -> tuple[int, Any]:
    headers = {"Authorization": token} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def _sign_up(server: ServerProcess) -> tuple[str, str]:
    """A ``users`` account made by sign-up: its id, and a token of its password."""
    status, user = await _call(
        server,
        "POST",
        "/api/collections/users/records",
        {"email": EMAIL, "password": PASSWORD, "passwordConfirm": PASSWORD},
    )
    assert status == 200, user
    return user["id"], http_sign_in(server.url, EMAIL, PASSWORD, collection="users")


async def _signed_out_within(client: WsClient, seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        reply = await client.publish("revocation", "still me?")
        if reply.get("message") == "authentication required to publish":
            return True
        assert reply["type"] == "published"
        await asyncio.sleep(0.2)
    return False


@pytest.mark.parametrize("backend", STORE_BACKENDS, indirect=True)
async def test_a_password_change_on_one_node_signs_out_the_old_sockets_on_every_node(
    start_server: StartServer, backend: str
) -> None:
    first = start_server("--heartbeat", "1s")
    nodes = [first]
    if backend != "sqlite":  # a second node on the same store
        nodes.append(start_server("--heartbeat", "1s", db_url=first.db_url))
    user_id, token = await _sign_up(first)
    superuser = http_sign_in(first.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    old_sockets = [await WsClient.connect(node.ws_url, token=token) for node in nodes]
    others = [await WsClient.connect(node.ws_url, token=superuser) for node in nodes]
    try:
        for client in old_sockets:
            assert (await client.subscribe("revocation"))["type"] == "subscribed"
            assert (await client.publish("revocation", "me"))["type"] == "published"

        status, body = await _call(
            first,
            "PATCH",
            f"/api/collections/users/records/{user_id}",
            {"oldPassword": PASSWORD, "password": NEW_PASSWORD, "passwordConfirm": NEW_PASSWORD},
            token=token,
        )
        assert status == 200, body

        for client in old_sockets:
            assert await _signed_out_within(client, 10)
            assert not client.closed.is_set()  # open, anonymous: subscriptions still work
        for client in others:  # other accounts are untouched
            assert (await client.publish("revocation", "admin"))["type"] == "published"
        # A token of the new password works on a new socket.
        fresh = http_sign_in(first.url, EMAIL, NEW_PASSWORD, collection="users")
        again = await WsClient.connect(nodes[-1].ws_url, token=fresh)
        try:
            await asyncio.sleep(1.5)  # a heartbeat round or more: it stays signed in
            assert (await again.publish("revocation", "new me"))["type"] == "published"
        finally:
            await again.close()
    finally:
        for client in old_sockets + others:
            await client.close()


async def test_a_deleted_account_signs_out_its_sockets(start_server: StartServer) -> None:
    server = start_server("--heartbeat", "1s")
    superuser = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    user_id, token = await _sign_up(server)
    client = await WsClient.connect(server.ws_url, token=token)
    try:
        assert (await client.publish("revocation", "me"))["type"] == "published"
        status, _ = await _call(server, "DELETE", f"/api/admin/users/{user_id}", token=superuser)
        assert status == 204
        assert await _signed_out_within(client, 10)
    finally:
        await client.close()
