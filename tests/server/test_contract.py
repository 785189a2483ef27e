"""Every row of the wire contract, against a real server process over real sockets."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest

from bosbase_pubsub import protocol

from ..conftest import BOTH_BACKENDS
from ..servers import ServerProcess, WsClient, query

pytestmark = BOTH_BACKENDS

CREATED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
async def anon(shared_server: ServerProcess) -> Any:
    client = await WsClient.connect(shared_server.ws_url)
    yield client
    await client.close()


@pytest.fixture
async def publisher(shared_server: ServerProcess, superuser_token: str) -> Any:
    client = await WsClient.connect(shared_server.ws_url, token=superuser_token)
    yield client
    await client.close()


async def test_ready_is_the_first_frame_and_carries_a_client_id(
    shared_server: ServerProcess,
) -> None:
    first = await WsClient.connect(shared_server.ws_url)
    second = await WsClient.connect(shared_server.ws_url)
    try:
        assert first.client_id
        assert first.client_id != second.client_id
        # Ours: ready also names the node's position (the resume extension).
        assert first.ready.get("position")
    finally:
        await first.close()
        await second.close()


async def test_ping_gets_pong_with_its_request_id(anon: WsClient) -> None:
    await anon.send_raw('{"type":"ping","requestId":"p-1"}')
    reply = await asyncio.wait_for(anon.unmatched.get(), 10)
    assert reply == {"type": "pong", "requestId": "p-1"}


async def test_ping_without_request_id_leaves_the_field_out(anon: WsClient) -> None:
    await anon.send_raw('{"type":"ping"}')
    reply = await asyncio.wait_for(anon.unmatched.get(), 10)
    assert reply == {"type": "pong"}


async def test_type_is_trimmed_and_lower_cased(anon: WsClient) -> None:
    await anon.send_raw('{"type":"  PiNg ","requestId":"abc"}')
    reply = await asyncio.wait_for(anon.unmatched.get(), 10)
    assert reply == {"type": "pong", "requestId": "abc"}


async def test_subscribe_is_acknowledged(anon: WsClient) -> None:
    reply = await anon.subscribe("news")
    assert reply["type"] == "subscribed"
    # Plus ``position``, ours (resume.md): official SDKs ignore it.
    assert set(reply) == {"type", "requestId", "position"}


@pytest.mark.parametrize("topic", ["", "   ", None])
async def test_subscribe_needs_a_topic(anon: WsClient, topic: str | None) -> None:
    reply = await anon.request("subscribe", topic=topic)
    assert reply["type"] == "error"
    assert reply["message"] == protocol.ERR_TOPIC_REQUIRED


async def test_subscribe_without_topic_field(anon: WsClient) -> None:
    reply = await anon.request("subscribe")
    assert reply["message"] == "topic must be set"


async def test_publish_needs_authentication(anon: WsClient) -> None:
    reply = await anon.publish("news", {"x": 1})
    assert reply["type"] == "error"
    assert reply["message"] == "authentication required to publish"


async def test_publish_needs_a_topic(publisher: WsClient) -> None:
    reply = await publisher.publish("  ", 1)
    assert reply["message"] == "topic must be set"


async def test_publish_is_acked_then_delivered_to_every_subscriber(
    shared_server: ServerProcess, publisher: WsClient
) -> None:
    subscribers = [await WsClient.connect(shared_server.ws_url) for _ in range(3)]
    try:
        for subscriber in subscribers:
            await subscriber.subscribe("room/1")
        ack = await publisher.publish(" room/1 ", {"text": "hello", "n": [1, 2.5, None]})
        assert ack["type"] == "published"
        assert ack["topic"] == "room/1"
        assert CREATED.match(ack["created"])
        assert ack["id"]
        for subscriber in subscribers:
            message = await subscriber.next_message()
            assert message == {
                "type": "message",
                "id": ack["id"],
                "topic": "room/1",
                "data": {"text": "hello", "n": [1, 2.5, None]},
                "created": ack["created"],
                "position": ack["position"],  # ours (resume.md)
            }
    finally:
        for subscriber in subscribers:
            await subscriber.close()


async def test_the_publisher_receives_its_own_message_when_subscribed(
    publisher: WsClient,
) -> None:
    await publisher.subscribe("echo")
    ack = await publisher.publish("echo", "me")
    message = await publisher.next_message()
    assert message["id"] == ack["id"]
    assert message["data"] == "me"


async def test_a_message_goes_only_to_its_topic(
    shared_server: ServerProcess, publisher: WsClient
) -> None:
    other = await WsClient.connect(shared_server.ws_url)
    mine = await WsClient.connect(shared_server.ws_url)
    try:
        await other.subscribe("topic-b")
        await mine.subscribe("topic-a")
        await publisher.publish("topic-a", 1)
        assert (await mine.next_message())["data"] == 1
        await publisher.publish("topic-b", 2)
        assert (await other.next_message())["data"] == 2
        assert mine.messages.empty()
    finally:
        await other.close()
        await mine.close()


@pytest.mark.parametrize(
    "data",
    [
        None,
        True,
        False,
        0,
        -17,
        3.25,
        123456789012345678901234567890,
        "",
        "ünïcødé ✓ \u2028",
        [],
        {},
        {"nested": {"list": [1, "two", {"three": None}]}},
    ],
)
async def test_every_json_type_arrives_equal(
    shared_server: ServerProcess, publisher: WsClient, data: Any
) -> None:
    subscriber = await WsClient.connect(shared_server.ws_url)
    try:
        await subscriber.subscribe("types")
        await publisher.publish("types", data)
        assert (await subscriber.next_message())["data"] == data
    finally:
        await subscriber.close()


async def test_publish_without_data_delivers_null(
    shared_server: ServerProcess, publisher: WsClient
) -> None:
    subscriber = await WsClient.connect(shared_server.ws_url)
    try:
        await subscriber.subscribe("nulls")
        ack = await publisher.request("publish", topic="nulls")
        assert ack["type"] == "published"
        message = await subscriber.next_message()
        assert "data" in message
        assert message["data"] is None
    finally:
        await subscriber.close()


async def test_data_is_delivered_compacted(
    shared_server: ServerProcess, publisher: WsClient
) -> None:
    subscriber = await WsClient.connect(shared_server.ws_url)
    try:
        await subscriber.subscribe("compact")
        await publisher.send_raw(
            '{"type":"publish","topic":"compact","requestId":"c1","data": { "a" : [ 1 , 2 ] } }'
        )
        message = await subscriber.next_message()
        assert message["data"] == {"a": [1, 2]}
    finally:
        await subscriber.close()


async def test_payload_at_the_limit_is_accepted_and_above_it_refused(publisher: WsClient) -> None:
    # A JSON string of n characters is n + 2 bytes of raw data.
    at_limit = "x" * (protocol.MAX_PAYLOAD_BYTES - 2)
    reply = await publisher.publish("big", at_limit)
    assert reply["type"] == "published"
    reply = await publisher.publish("big", at_limit + "x")
    assert reply == {
        "type": "error",
        "requestId": reply["requestId"],
        "message": "payload too large",
    }


async def test_unsubscribe_one_topic(shared_server: ServerProcess, publisher: WsClient) -> None:
    subscriber = await WsClient.connect(shared_server.ws_url)
    try:
        await subscriber.subscribe("u1")
        await subscriber.subscribe("u2")
        reply = await subscriber.request("unsubscribe", topic="u1")
        assert reply["type"] == "unsubscribed"
        await publisher.publish("u1", "gone")
        await publisher.publish("u2", "kept")
        assert (await subscriber.next_message())["data"] == "kept"
        assert subscriber.messages.empty()
    finally:
        await subscriber.close()


async def test_unsubscribe_without_topic_leaves_every_topic(
    shared_server: ServerProcess, publisher: WsClient
) -> None:
    subscriber = await WsClient.connect(shared_server.ws_url)
    try:
        await subscriber.subscribe("all1")
        await subscriber.subscribe("all2")
        assert (await subscriber.request("unsubscribe"))["type"] == "unsubscribed"
        await publisher.publish("all1", 1)
        await publisher.publish("all2", 2)
        # A ping round trip after the publishes: anything delivered would be here by now.
        await subscriber.request("ping")
        await publisher.request("ping")
        await asyncio.sleep(0.2)
        assert subscriber.messages.empty()
    finally:
        await subscriber.close()


async def test_subscribing_twice_delivers_once(
    shared_server: ServerProcess, publisher: WsClient
) -> None:
    subscriber = await WsClient.connect(shared_server.ws_url)
    try:
        assert (await subscriber.subscribe("twice"))["type"] == "subscribed"
        assert (await subscriber.subscribe("twice"))["type"] == "subscribed"
        await publisher.publish("twice", 1)
        await publisher.publish("twice", 2)
        assert (await subscriber.next_message())["data"] == 1
        assert (await subscriber.next_message())["data"] == 2
        await asyncio.sleep(0.2)
        assert subscriber.messages.empty()
    finally:
        await subscriber.close()


async def test_unknown_type_is_an_error_with_its_request_id(anon: WsClient) -> None:
    reply = await anon.request("shout", topic="x")
    assert reply["type"] == "error"
    assert reply["message"] == "unsupported pubsub message type"


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1,2]",
        '"string"',
        "42",
        "null",
        '{"type": 5}',
        '{"type":"ping","topic":[]}',
        "",
    ],
)
async def test_a_frame_that_is_not_an_envelope_is_invalid(anon: WsClient, frame: str) -> None:
    await anon.send_raw(frame)
    reply = await asyncio.wait_for(anon.unmatched.get(), 10)
    assert reply == {"type": "error", "message": "invalid message format"}
    # The connection survives and keeps working.
    assert (await anon.request("ping"))["type"] == "pong"


async def test_binary_frames_are_read_like_text(anon: WsClient) -> None:
    await anon.send_raw(b'{"type":"ping","requestId":"bin"}')
    assert await asyncio.wait_for(anon.unmatched.get(), 10) == {"type": "pong", "requestId": "bin"}


async def test_ack_comes_after_the_row_is_stored(
    shared_server: ServerProcess, publisher: WsClient
) -> None:
    ack = await publisher.publish("stored", {"k": "v"})
    rows = await query(
        shared_server,
        'SELECT topic, payload, origin, "createdBy", created FROM _pubsub_messages WHERE id = ?',
        ack["id"],
    )
    assert len(rows) == 1
    topic, payload, origin, created_by, created = rows[0]
    assert topic == "stored"
    assert orjson.loads(payload) == {"k": "v"}
    assert origin
    assert created_by
    assert created == ack["created"]


async def test_messages_from_one_publisher_arrive_in_ack_order(
    shared_server: ServerProcess, publisher: WsClient
) -> None:
    subscriber = await WsClient.connect(shared_server.ws_url)
    try:
        await subscriber.subscribe("ordered")
        # Pipelined: many publishes in flight at once, as group commit batches them.
        acks = await asyncio.gather(*(publisher.publish("ordered", n) for n in range(200)))
        assert all(ack["type"] == "published" for ack in acks)
        received = [(await subscriber.next_message())["data"] for _ in range(200)]
        assert received == list(range(200))
    finally:
        await subscriber.close()
