"""Odd but possible input, from outside: each request gets its own clear error, with its
``requestId``, and costs nobody else anything.

NUL characters (which PostgreSQL's text cannot hold: one in a batch used to fail every
publish committed with it), valid JSON the server cannot keep exactly (lone surrogates,
numbers beyond a double), the contract's size limit measured on the raw ``data``, and
aiohttp's own errors in PocketBase's error body.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from bosbase_pubsub import protocol

from ..conftest import (
    STORE_BACKENDS,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    StartServer,
    http_sign_in,
)
from ..servers import ServerProcess, WsClient, query

ORDINARY = 300


async def _health(server: ServerProcess) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + "/api/health") as response,
    ):
        return response.status


async def _post(
    server: ServerProcess, path: str, body: Any, token: str = "", method: str = "POST"
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": token} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


@pytest.mark.parametrize("backend", STORE_BACKENDS, indirect=True)
async def test_a_nul_in_a_topic_or_key_is_refused_alone_and_the_others_are_stored(
    start_server: StartServer, backend: str
) -> None:
    server = start_server()
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    publisher = await WsClient.connect(server.ws_url, token=token)
    subscriber = await WsClient.connect(server.ws_url)
    try:
        assert (await subscriber.subscribe("odd"))["type"] == "subscribed"
        refused = await subscriber.subscribe("odd\x00topic")
        assert (refused["type"], refused["message"]) == ("error", protocol.ERR_TOPIC_NUL)
        # Ordinary publishes and NUL ones interleaved, all in flight at once: with a
        # shared commit, one bad row used to fail the whole batch.
        loop = asyncio.get_running_loop()
        replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        frames = []
        for n in range(ORDINARY):
            frames.append({"type": "publish", "topic": "odd", "data": n, "requestId": f"ok{n}"})
            if n % 15 == 0:
                frames.append({"type": "publish", "topic": "o\x00dd", "requestId": f"t{n}"})
                frames.append(
                    {"type": "publish", "topic": "odd", "key": "k\x00", "requestId": f"k{n}"}
                )
        for frame in frames:
            replies[frame["requestId"]] = publisher.replies[frame["requestId"]] = (
                loop.create_future()
            )
        for frame in frames:
            await publisher.send_raw(json.dumps(frame))
        answers = {rid: await asyncio.wait_for(future, 30) for rid, future in replies.items()}

        for rid, answer in answers.items():
            assert answer["requestId"] == rid
            if rid.startswith("ok"):
                assert answer["type"] == "published", answer
            else:
                expected = protocol.ERR_TOPIC_NUL if rid[0] == "t" else protocol.ERR_KEY_NUL
                assert (answer["type"], answer["message"]) == ("error", expected)
        delivered = [(await subscriber.next_message())["data"] for _ in range(ORDINARY)]
        assert delivered == list(range(ORDINARY))
        assert await _health(server) == 200
        if backend != "nats":
            rows = await query(server, "SELECT count(*) FROM _pubsub_messages")
            assert rows[0][0] == ORDINARY

        # The same over HTTP.
        status, body, _ = await _post(
            server, "/api/pubsub/publish", {"topic": "a\x00b", "data": 1}, token
        )
        assert (status, body["message"]) == (400, protocol.ERR_TOPIC_NUL)
        status, body, _ = await _post(
            server, "/api/pubsub/publish", {"topic": "ab", "key": "\x00", "data": 1}, token
        )
        assert (status, body["message"]) == (400, protocol.ERR_KEY_NUL)
    finally:
        await publisher.close()
        await subscriber.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_nul_in_a_sign_in_or_sign_up_is_an_ordinary_refusal(
    start_server: StartServer,
) -> None:
    server = start_server()
    sign_in = "/api/collections/users/auth-with-password"
    status, body, _ = await _post(server, sign_in, {"identity": "a\x00@b.c", "password": "x"})
    assert (status, body["message"]) == (400, "Failed to authenticate.")
    status, body, _ = await _post(
        server, sign_in, {"identity": SUPERUSER_EMAIL, "password": "pass\x00word"}
    )
    assert (status, body["message"]) == (400, "Failed to authenticate.")

    sign_up = {
        "email": "nul@example.com",
        "password": "a-long-pass\x00word",
        "passwordConfirm": "a-long-pass\x00word",
        "name": "N\x00L",
    }
    status, body, _ = await _post(server, "/api/collections/users/records", sign_up)
    assert status == 400
    for field in ("password", "name"):
        assert body["data"][field] == {
            "code": "validation_invalid_value",
            "message": "Must not contain the NUL character.",
        }
    assert await _health(server) == 200


async def test_valid_json_the_server_cannot_keep_exactly_gets_an_error_with_its_request_id(
    start_server: StartServer,
) -> None:
    server = start_server()
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    publisher = await WsClient.connect(server.ws_url, token=token)
    try:
        half_emoji = "abc\ud83d"  # JSON.stringify of a string cut inside a surrogate pair
        reply = await publisher.publish("odd", half_emoji)
        assert (reply["type"], reply["message"]) == ("error", protocol.ERR_PAYLOAD_INVALID)
        assert reply["requestId"]
        await publisher.send_raw(
            '{"type":"publish","topic":"odd","data":[1e400],"requestId":"huge"}'
        )
        await publisher.send_raw('{"type":"publish","topic":"o\\udc00","data":1,"requestId":"t"}')
        await publisher.send_raw('{"type":"ping","requestId":"after"}')
        answers = [await asyncio.wait_for(publisher.unmatched.get(), 10) for _ in range(3)]
        assert answers == [
            {"type": "error", "requestId": "huge", "message": protocol.ERR_PAYLOAD_INVALID},
            {"type": "error", "requestId": "t", "message": protocol.ERR_INVALID_FORMAT},
            {"type": "pong", "requestId": "after"},
        ]
        # Deep nesting that the standard library still reads is kept.
        deep: Any = 1
        for _ in range(600):
            deep = [deep]
        assert (await publisher.publish("odd", deep))["type"] == "published"
    finally:
        await publisher.close()


async def test_the_size_limit_is_on_the_raw_data_as_sent(start_server: StartServer) -> None:
    server = start_server()
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    publisher = await WsClient.connect(server.ws_url, token=token)
    subscriber = await WsClient.connect(server.ws_url)
    try:
        await subscriber.subscribe("raw")
        # 120 KB as sent; 1e9 compacts to 1000000000.0, over 256 KiB once compacted.
        short_numbers = "[" + ",".join(["1e9"] * 30_000) + "]"
        await publisher.send_raw(
            f'{{"type":"publish","topic":"raw","data":{short_numbers},"requestId":"short"}}'
        )
        # Under 256 KiB compacted, over it as sent: whitespace and escapes count.
        padded = "[1" + " " * protocol.MAX_PAYLOAD_BYTES + "]"
        escaped = '"' + "\\u0041" * (protocol.MAX_PAYLOAD_BYTES // 6 + 1) + '"'
        for name, data in (("padded", padded), ("escaped", escaped)):
            await publisher.send_raw(
                f'{{"type":"publish","topic":"raw","data":{data},"requestId":"{name}"}}'
            )
        answers = {}
        for _ in range(3):
            answer = await asyncio.wait_for(publisher.unmatched.get(), 10)
            answers[answer["requestId"]] = answer
        assert answers["short"]["type"] == "published"
        assert (await subscriber.next_message())["data"] == [1e9] * 30_000
        for name in ("padded", "escaped"):
            assert answers[name]["message"] == protocol.ERR_PAYLOAD_TOO_LARGE
        # HTTP publish measures the same way.
        async with aiohttp.ClientSession() as session:
            for data, status in ((short_numbers, 200), (padded, 413)):
                async with session.post(
                    server.url + "/api/pubsub/publish",
                    data=f'{{"topic":"raw","data":{data}}}',
                    headers={"Authorization": token, "Content-Type": "application/json"},
                ) as response:
                    assert response.status == status, await response.text()
    finally:
        await publisher.close()
        await subscriber.close()


async def test_unknown_api_routes_and_methods_get_the_pocketbase_error_body(
    start_server: StartServer,
) -> None:
    server = start_server()
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/api/no/such/route") as response:
            assert response.status == 404
            assert await response.json() == {
                "status": 404,
                "message": "The requested resource wasn't found.",
                "data": {},
            }
        async with session.get(
            server.url + "/api/collections/users/auth-with-password"
        ) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
            assert (await response.json())["message"] == "Method not allowed."
        async with session.get(server.url + "/api/pubsub") as response:  # no upgrade
            assert response.status == 400
            assert "WebSocket" in (await response.json())["message"]
