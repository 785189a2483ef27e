"""The REST side: HTTP publish, health and metrics."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import pytest

from bosbase_pubsub import protocol

from ..conftest import BOTH_BACKENDS
from ..servers import ServerProcess, WsClient, scrape_metrics

pytestmark = BOTH_BACKENDS


async def post_publish(
    server: ServerProcess, body: bytes | None, token: str | None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = token
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.url + "/api/pubsub/publish",
            data=None if body is None else io.BytesIO(body),
            headers=headers,
        ) as response,
    ):
        return response.status, await response.json()


async def test_http_publish_stores_and_fans_out(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    subscriber = await WsClient.connect(shared_server.ws_url)
    try:
        await subscriber.subscribe("http")
        status, body = await post_publish(
            shared_server, b'{"topic":" http ","data":{"via":"rest"}}', "Bearer " + superuser_token
        )
        assert status == 200
        assert set(body) == {"id", "topic", "created", "position"}  # position: ours
        assert body["topic"] == "http"
        message = await subscriber.next_message()
        assert message == {"type": "message", "data": {"via": "rest"}, **body}
    finally:
        await subscriber.close()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"data":1}', 400, protocol.ERR_TOPIC_REQUIRED),
        (b'{"topic":"  ","data":1}', 400, protocol.ERR_TOPIC_REQUIRED),
        (b'{"topic":"t","data":', 400, protocol.ERR_PAYLOAD_INVALID),
        (b"[1]", 400, protocol.ERR_PAYLOAD_INVALID),
        (
            b'{"topic":"t","data":"' + b"x" * protocol.MAX_PAYLOAD_BYTES + b'"}',
            413,
            "payload too large",
        ),
        (b'{"topic":"t","data":"' + b"x" * 3_000_000 + b'"}', 413, "payload too large"),
    ],
)
async def test_http_publish_errors_use_the_pocketbase_body(
    shared_server: ServerProcess, superuser_token: str, body: bytes, status: int, message: str
) -> None:
    got_status, got = await post_publish(shared_server, body, superuser_token)
    assert (got_status, got) == (status, {"status": status, "message": message, "data": {}})


@pytest.mark.parametrize("token", [None, "garbage", "Bearer a.b.c"])
async def test_http_publish_needs_an_identity(
    shared_server: ServerProcess, token: str | None
) -> None:
    status, body = await post_publish(shared_server, b'{"topic":"t","data":1}', token)
    assert status == 401
    assert body["message"] == "authentication required to publish"


async def test_health(shared_server: ServerProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(shared_server.url + "/api/health") as response,
    ):
        assert response.status == 200
        assert (await response.json())["message"] == "API is healthy."


async def test_metrics_count_connections_messages_and_deliveries(
    shared_server: ServerProcess, superuser_token: str, backend: str
) -> None:
    async def scrape() -> dict[str, float]:
        return await scrape_metrics(shared_server.url)

    before = await scrape()
    subscriber = await WsClient.connect(shared_server.ws_url)
    publisher = await WsClient.connect(shared_server.ws_url, token=superuser_token)
    try:
        await subscriber.subscribe("metered")
        await publisher.subscribe("metered")
        ack = await publisher.publish("metered", 1)
        await subscriber.next_message()
        await publisher.next_message()
        during = await scrape()
        # The position of the message just delivered, or a later one's.
        assert during["pubsub_position"] >= int(ack["position"].rsplit(":", 1)[1])
        if backend == "postgres":  # a store nodes may share: the feed's figures too
            assert during["pubsub_cluster_feed_degraded"] == 0
            assert during["pubsub_cluster_messages_received_total"] == 0  # no other node
        else:
            assert "pubsub_cluster_feed_position" not in during
        assert during["pubsub_connections"] >= before["pubsub_connections"] + 2
        assert during["pubsub_subscriptions"] >= before["pubsub_subscriptions"] + 2
        assert during["pubsub_topics"] >= 1
        assert (
            during["pubsub_messages_published_total"]
            >= before["pubsub_messages_published_total"] + 1
        )
        assert (
            during["pubsub_messages_delivered_total"]
            >= before["pubsub_messages_delivered_total"] + 2
        )
        assert during["pubsub_store_commit_seconds_count"] >= 1
        assert during["pubsub_store_degraded"] == 0
    finally:
        await subscriber.close()
        await publisher.close()
