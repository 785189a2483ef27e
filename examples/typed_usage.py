"""Typed use of both clients, checked by ``mypy --strict`` (and runnable).

    python examples/typed_usage.py      # against BOSBASE_PUBSUB_URL, as ada@example.com

It shows the types an application works with: ``Message`` and ``PublishAck``
are ``TypedDict``s, handlers are plain or ``async`` functions, settings are
small dataclasses, and every error is a ``BosBaseError``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable

from bosbase_pubsub import (
    AsyncBosBase,
    AuthError,
    AuthResponse,
    BosBase,
    BosBaseError,
    Message,
    PublishAck,
    Reconnect,
    ReplayGap,
    RequestTimeout,
    ServerError,
    Timeouts,
)

URL = os.environ.get("BOSBASE_PUBSUB_URL", "http://127.0.0.1:8090")
EMAIL, PASSWORD = "ada@example.com", "secret-password"


def with_threads() -> list[Message]:
    """The sync client: handlers run on its dispatcher thread."""
    received: list[Message] = []
    done = threading.Event()

    def on_message(message: Message) -> None:
        received.append(message)
        done.set()

    timeouts = Timeouts(request=5.0, connect=5.0)
    with BosBase(URL, timeout=timeouts, reconnect=Reconnect(max_delay=2.0)) as client:
        auth: AuthResponse = client.collection("users").auth_with_password(EMAIL, PASSWORD)
        assert client.auth_store.is_valid
        assert auth["record"]["collectionName"] == "users"
        unsubscribe: Callable[[], None] = client.pubsub.subscribe("typed/sync", on_message)
        ack: PublishAck = client.pubsub.publish("typed/sync", {"n": 1}, timeout=2.0)
        done.wait(5.0)
        unsubscribe()
        assert received
        assert received[0]["id"] == ack["id"]

        # Replay from a known position (a message's or an ack's); be told if the
        # server could not replay everything (retention, or another database).
        def on_gap(gap: ReplayGap) -> None:
            print("messages may be missing on", gap["topic"], "after", gap["since"], gap["replay"])

        since = ack.get("position")  # absent from servers without the resume extension
        if since is not None:
            replayed: list[Message] = []
            client.pubsub.subscribe("typed/sync", replayed.append, since=since, on_gap=on_gap)
        # A key makes a retried publish store once (a fresh one is used by default).
        client.pubsub.publish("typed/sync", {"n": 2}, key="order-42/created")
        try:
            client.pubsub.publish("", None)
        except BosBaseError as error:  # InvalidRequest: "topic must be set"
            print("refused:", error)
    return received


async def with_asyncio() -> list[Message]:
    """The asyncio client: the same verbs awaited, plus ``stream()``."""
    received: list[Message] = []

    async def on_message(message: Message) -> None:  # an async handler
        received.append(message)

    async with AsyncBosBase(URL, timeout=5.0) as client:
        await client.collection("users").auth_with_password(EMAIL, PASSWORD)
        unsubscribe: Callable[[], Awaitable[None]] = await client.pubsub.subscribe(
            "typed/async", on_message
        )
        async with client.pubsub.stream("typed/async") as messages:
            ack: PublishAck = await client.pubsub.publish("typed/async", [1, "two", None])
            async for message in messages:
                assert message["id"] == ack["id"]
                break
        await unsubscribe()
        client.auth_store.clear()  # signed out: the socket reconnects anonymously
        try:
            await client.pubsub.publish("typed/async", "anonymous")
        except AuthError as error:
            print("refused:", error.message)
        except (ServerError, RequestTimeout) as error:
            print("failed:", error)
    return received


if __name__ == "__main__":
    print(len(with_threads()), "message(s) with threads")
    print(len(asyncio.run(with_asyncio())), "message(s) with asyncio")
