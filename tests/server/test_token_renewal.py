"""The ``auth`` frame (ours): a fresh token on an open socket, no reconnect.

A connection keeps its subscriptions through it; frames sent right after it
act with the identity it gives; a token that proves nothing is refused and
changes nothing; an empty token signs the connection out.
"""

from __future__ import annotations

import asyncio
import time

import jwt

from ..conftest import StartServer
from ..servers import ServerProcess, WsClient, scrape_metrics

SECRET = "a-shared-secret-" * 4


async def test_an_anonymous_subscriber_signs_in_on_its_socket_and_keeps_its_subscription(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    client = await WsClient.connect(shared_server.ws_url)
    try:
        await client.subscribe("renewal/one")
        refused = await client.publish("renewal/one", {"n": 0})
        assert refused["message"] == "authentication required to publish"

        answer = await client.request("auth", token=superuser_token)
        assert answer["type"] == "authenticated"
        assert answer["collectionName"] == "_superusers"
        assert answer["recordId"]
        assert answer["expires"] > time.time()
        ack = await client.publish("renewal/one", {"n": 1})
        assert ack["type"] == "published"
        message = await client.next_message()
        assert (message["id"], message["data"]) == (ack["id"], {"n": 1})
    finally:
        await client.close()


async def test_frames_right_after_auth_act_with_its_identity(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    client = await WsClient.connect(shared_server.ws_url)
    try:
        # Sent back to back, without waiting for the answer to ``auth``.
        await client.send_raw(f'{{"type":"auth","token":"{superuser_token}","requestId":"a"}}')
        await client.send_raw('{"type":"publish","topic":"renewal/two","requestId":"p"}')
        await client.send_raw('{"type":"auth","token":"","requestId":"out"}')
        await client.send_raw('{"type":"publish","topic":"renewal/two","requestId":"q"}')
        # (A publish is answered after its commit, so the replies may come in another order.)
        replies = {}
        for _ in range(4):
            reply = await asyncio.wait_for(client.unmatched.get(), 10)
            replies[reply["requestId"]] = reply
        assert {name: reply["type"] for name, reply in replies.items()} == {
            "a": "authenticated",
            "p": "published",
            "out": "authenticated",
            "q": "error",
        }
        assert replies["out"]["recordId"] is None
        assert replies["q"]["message"] == "authentication required to publish"
    finally:
        await client.close()


async def test_a_bad_token_is_refused_and_the_identity_stays(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    client = await WsClient.connect(shared_server.ws_url, token=superuser_token)
    before = (await scrape_metrics(shared_server.url)).get("pubsub_token_renewals_total", 0)
    try:
        for bad in ("not-a-token", superuser_token[:-4] + "AAAA"):
            answer = await client.request("auth", token=bad)
            assert answer["type"] == "error"
            assert answer["message"] == "invalid or expired auth token"
        wrong_type = await client.request("auth", token=42)
        assert wrong_type["message"] == "invalid message format"
        assert (await client.publish("renewal/three", {"still": "signed in"}))["type"] == (
            "published"
        )
        await client.request("auth", token=superuser_token)
        after = (await scrape_metrics(shared_server.url))["pubsub_token_renewals_total"]
        assert after == before + 1
    finally:
        await client.close()


def token(exp: float, user: str = "carol") -> str:
    return jwt.encode({"sub": user, "exp": int(exp)}, SECRET, algorithm="HS256")


async def test_a_renewed_token_outlives_the_first_and_an_expired_one_is_refused(
    start_server: StartServer,
) -> None:
    server = start_server("--jwt-secret", SECRET)
    first_expiry = time.time() + 2
    publisher = await WsClient.connect(server.ws_url, token=token(first_expiry))
    try:
        assert (await publisher.publish("renewal/four", 1))["type"] == "published"
        refused = await publisher.request("auth", token=token(time.time() - 1))
        assert refused["message"] == "invalid or expired auth token"
        answer = await publisher.request("auth", token=token(time.time() + 600, user="dave"))
        assert answer["recordId"] == "dave"
        await asyncio.sleep(max(0.0, first_expiry - time.time()) + 1.0)
        # Past the first token's expiry the socket still publishes, as its new identity.
        assert (await publisher.publish("renewal/four", 2))["type"] == "published"
    finally:
        await publisher.close()
