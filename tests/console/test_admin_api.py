"""The admin REST API (``/api/admin/...``) against real server processes, on both backends."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp

from ..conftest import (
    BOTH_BACKENDS,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    StartServer,
    make_superuser,
)
from ..servers import ServerProcess, WsClient, sign_in

ROUTES = [
    ("GET", "/api/admin/overview"),
    ("GET", "/api/admin/stream"),
    ("GET", "/api/admin/messages"),
    ("GET", "/api/admin/messages/1"),
    ("POST", "/api/admin/publish"),
    ("GET", "/api/admin/users"),
    ("POST", "/api/admin/users"),
    ("DELETE", "/api/admin/users/abc"),
    ("POST", "/api/admin/users/abc/password"),
]


async def call(
    server: ServerProcess, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": token} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, json=body, headers=headers) as response,
    ):
        if response.status == 204:
            return 204, None
        return response.status, await response.json()


async def new_user(server: ServerProcess, superuser_token: str) -> tuple[str, str, str]:
    """A fresh account of ``users``, made through the admin API: (id, email, token)."""
    email = f"user-{uuid.uuid4().hex[:8]}@example.com"
    status, record = await call(
        server,
        "POST",
        "/api/admin/users",
        superuser_token,
        {"email": email, "password": "pw-12345678"},
    )
    assert status == 200, record
    token = (await sign_in(server.url, "users", email, "pw-12345678"))["token"]
    return record["id"], email, token


@BOTH_BACKENDS
async def test_only_superusers_reach_the_admin_api(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    _, _, user_token = await new_user(shared_server, superuser_token)
    for method, path in ROUTES:
        status, body = await call(shared_server, method, path)
        assert (status, body["message"]) == (
            401,
            "The request requires valid record authorization token.",
        ), path
        status, body = await call(shared_server, method, path, user_token)
        assert (status, body["message"]) == (403, "Only superusers can perform this action."), path
        # A cookie or the query string is not enough: the header only.
        status, _ = await call(shared_server, method, f"{path}?token={superuser_token}")
        assert status == 401, path


@BOTH_BACKENDS
async def test_messages_page_newest_first_by_topic_and_time(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    topic = f"browse/{uuid.uuid4().hex[:8]}"
    acks = []
    for n in range(5):
        status, ack = await call(
            shared_server,
            "POST",
            "/api/admin/publish",
            superuser_token,
            {"topic": topic, "data": {"n": n}},
        )
        assert status == 200, ack
        acks.append(ack)
    _, other = await call(
        shared_server,
        "POST",
        "/api/admin/publish",
        superuser_token,
        {"topic": "elsewhere", "data": 0},
    )

    path = f"/api/admin/messages?topic={topic}&limit=2"
    _, first = await call(shared_server, "GET", path, superuser_token)
    assert [m["data"] for m in first["items"]] == [{"n": 4}, {"n": 3}]
    _, second = await call(shared_server, "GET", f"{path}&before={first['next']}", superuser_token)
    assert [m["data"] for m in second["items"]] == [{"n": 2}, {"n": 1}]
    _, last = await call(shared_server, "GET", f"{path}&before={second['next']}", superuser_token)
    assert [m["data"] for m in last["items"]] == [{"n": 0}]
    assert last["next"] is None
    assert last["items"][0]["id"] == acks[0]["id"]
    assert last["items"][0]["position"] == acks[0]["position"]

    # All topics: the newest first is the other topic's message.
    _, everything = await call(shared_server, "GET", "/api/admin/messages?limit=1", superuser_token)
    assert everything["items"][0]["id"] == other["id"]
    # Until a time: what was created at or before the third message.
    _, until = await call(
        shared_server,
        "GET",
        f"/api/admin/messages?topic={topic}&until={acks[2]['created']}",
        superuser_token,
    )
    assert [m["data"] for m in until["items"]][:1] == [{"n": 2}]
    # One message, by its seq.
    seq = first["items"][0]["seq"]
    status, one = await call(shared_server, "GET", f"/api/admin/messages/{seq}", superuser_token)
    assert status == 200
    assert one["data"] == {"n": 4}
    status, _ = await call(shared_server, "GET", "/api/admin/messages/999999999", superuser_token)
    assert status == 404


@BOTH_BACKENDS
async def test_a_console_publish_is_stored_then_delivered(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    topic = f"console/{uuid.uuid4().hex[:8]}"
    subscriber = await WsClient.connect(shared_server.ws_url)
    try:
        await subscriber.subscribe(topic)
        status, ack = await call(
            shared_server,
            "POST",
            "/api/admin/publish",
            superuser_token,
            {"topic": topic, "data": [1]},
        )
        assert status == 200, ack
        assert (await subscriber.next_message())["id"] == ack["id"]
        status, _body = await call(
            shared_server, "POST", "/api/admin/publish", superuser_token, {"data": 1}
        )
        assert status == 400
    finally:
        await subscriber.close()


@BOTH_BACKENDS
async def test_users_are_listed_created_reset_and_deleted(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    user_id, email, token = await new_user(shared_server, superuser_token)
    status, body = await call(
        shared_server,
        "POST",
        "/api/admin/users",
        superuser_token,
        {"email": email, "password": "pw-12345678"},
    )
    assert status == 400
    assert body["data"]["email"]["code"] == "validation_not_unique"
    _, page = await call(shared_server, "GET", "/api/admin/users?perPage=500", superuser_token)
    assert email in [record["email"] for record in page["items"]]
    assert page["totalItems"] >= 1

    status, _ = await call(
        shared_server,
        "POST",
        f"/api/admin/users/{user_id}/password",
        superuser_token,
        {"password": "new-password-1"},
    )
    assert status == 200
    # The old token is revoked, the new password works.
    status, _ = await call(shared_server, "POST", "/api/collections/users/auth-refresh", token)
    assert status == 401
    token = (await sign_in(shared_server.url, "users", email, "new-password-1"))["token"]

    status, _ = await call(shared_server, "DELETE", f"/api/admin/users/{user_id}", superuser_token)
    assert status == 204
    status, _ = await call(shared_server, "DELETE", f"/api/admin/users/{user_id}", superuser_token)
    assert status == 404
    status, _ = await call(shared_server, "POST", "/api/collections/users/auth-refresh", token)
    assert status == 401


@BOTH_BACKENDS
async def test_the_overview_counts_connections_by_kind(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    _, _, user_token = await new_user(shared_server, superuser_token)
    _, before = await call(shared_server, "GET", "/api/admin/overview", superuser_token)
    clients = [
        await WsClient.connect(shared_server.ws_url),
        await WsClient.connect(shared_server.ws_url, token=user_token),
    ]
    try:
        _, after = await call(shared_server, "GET", "/api/admin/overview", superuser_token)
    finally:
        for client in clients:
            await client.close()
    assert after["connections"]["anonymous"] == before["connections"]["anonymous"] + 1
    assert after["connections"]["authenticated"] == before["connections"]["authenticated"] + 1
    assert [node["id"] for node in after["nodes"]] == [after["node"]]
    assert len(after["rates"]["published"]) == 60


async def test_the_console_is_served_with_caching_and_a_strict_policy(
    shared_server: ServerProcess,
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(shared_server.url + "/_/") as response:
            assert response.status == 200
            html = await response.text()
            policy = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in policy
            assert "script-src 'self'" in policy
            assert "'unsafe-inline'" not in policy
            assert response.headers["Cache-Control"] == "no-cache"
            etag = response.headers["ETag"]
        async with session.get(shared_server.url + "/_/", headers={"If-None-Match": etag}) as again:
            assert again.status == 304
        script = html.split('src="', 1)[1].split('"', 1)[0]
        assert script.startswith("console.js?v=")
        async with session.get(f"{shared_server.url}/_/{script}") as response:
            assert response.status == 200
            assert "immutable" in response.headers["Cache-Control"]
            assert response.content_type == "text/javascript"
        async with session.get(shared_server.url + "/_/nothing.js") as response:
            assert response.status == 404


async def test_every_node_of_a_cluster_is_listed_with_its_connections(
    start_server: StartServer, pg_database: str
) -> None:
    first = start_server(db_url=pg_database)
    make_superuser(first.data_dir, pg_database)
    second = start_server(db_url=pg_database)
    token = (await sign_in(first.url, "_superusers", SUPERUSER_EMAIL, SUPERUSER_PASSWORD))["token"]
    client = await WsClient.connect(second.ws_url)
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # each node reports itself every 2 seconds
            _, overview = await call(first, "GET", "/api/admin/overview", token)
            nodes = {node["address"]: node for node in overview["nodes"]}
            other = nodes.get(second.url.removeprefix("http://"), {})
            if other.get("connections") == 1 and other.get("feedLag") is not None:
                break
            assert asyncio.get_running_loop().time() < deadline, overview["nodes"]
            await asyncio.sleep(0.2)
    finally:
        await client.close()
    assert len(nodes) == 2
    assert nodes[first.url.removeprefix("http://")]["id"] == overview["node"]
    assert other["feedLag"] == 0  # it has read every stored message
    assert overview["connections"]["anonymous"] >= 1
