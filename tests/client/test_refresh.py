"""Token refresh before expiry: the plan on its own, then both clients against a
server whose tokens live 3 seconds, so that a subscriber outlives several tokens
on one socket."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson
import pytest

from bosbase_pubsub import AsyncBosBase, AuthStore, BosBase, ServerError, TransportError
from bosbase_pubsub.client._refresh import REFRESH_AHEAD, RefreshSchedule, plan_refresh

from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer
from ..servers import ServerProcess
from .conftest import FAST_RECONNECT, TIMEOUTS, Inbox, wait_until

TOKEN_TTL = 3.0


def unsigned_token(**claims: Any) -> str:
    """A JWT-shaped token with ``claims`` (the client never checks signatures)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2ln"


def builtin(exp: float, collection_id: str = "_pb_users_auth_", **extra: Any) -> str:
    claims = {"type": "auth", "refreshable": True, "collectionId": collection_id, "id": "r1"}
    return unsigned_token(**{**claims, "exp": exp, **extra})


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        # Long-lived: REFRESH_AHEAD before expiry.
        (builtin(1000 + 7 * 86400), ("users", 7 * 86400 - REFRESH_AHEAD)),
        # Short-lived: halfway.
        (builtin(1000 + 60, "pbc_3142635823"), ("_superusers", 30.0)),
        # Nothing this server can refresh.
        (builtin(999), None),  # expired
        (builtin(5000, refreshable=False), None),
        (unsigned_token(sub="alice", exp=5000), None),  # the application's own backend
        (builtin(5000, collection_id="somewhere-else"), None),
        ("not a token", None),
        ("", None),
    ],
)
def test_the_plan(token: str, expected: tuple[str, float] | None) -> None:
    plan = plan_refresh(token, None, 1000.0)
    got = None if plan is None else (plan.collection, plan.delay)
    assert got == expected


def test_a_refusal_ends_refreshing_that_token_and_a_failure_is_retried() -> None:
    token = builtin(time.time() + 100)
    schedule = RefreshSchedule()
    plan, wait = schedule.next(token)
    assert plan is not None
    assert wait == pytest.approx(50, abs=1)
    schedule.outcome(token, plan, TransportError("connection refused"))
    assert schedule.next(token)[1] == pytest.approx(30, abs=1)  # RETRY_AFTER
    schedule.outcome(token, plan, ServerError("The request requires valid record authorization"
                                              " token.", status=401))  # fmt: skip
    assert schedule.next(token) == (None, None)
    # A new token is planned again.
    assert schedule.next(builtin(time.time() + 100))[0] is not None


@pytest.fixture
def short_token_server(start_server: StartServer) -> ServerProcess:
    return start_server("--token-ttl", f"{TOKEN_TTL:g}s")


def test_a_subscriber_outlives_its_tokens_on_one_socket(
    short_token_server: ServerProcess,
) -> None:
    url = short_token_server.url
    with (
        BosBase(url, auth_store=AuthStore(), timeout=TIMEOUTS, reconnect=FAST_RECONNECT) as client,
        BosBase(url, timeout=TIMEOUTS, reconnect=FAST_RECONNECT, auto_refresh=False) as other,
    ):
        first = client.collection("_superusers").auth_with_password(
            SUPERUSER_EMAIL, SUPERUSER_PASSWORD
        )["token"]
        second = other.collection("_superusers").auth_with_password(
            SUPERUSER_EMAIL, SUPERUSER_PASSWORD
        )["token"]
        inbox = Inbox()
        client.pubsub.subscribe("refresh/sync", inbox)
        connection = client.pubsub._core.client_id
        # Both tokens expired (the second, signed a moment later, may expire a second later).
        expires = max(
            orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
            for token in (first, second)
        )
        wait_until(lambda: time.time() > expires + 0.5, timeout=TOKEN_TTL + 4, what="expiry")
        assert client.auth_store.token != first  # refreshed (saved in the store)
        assert client.auth_store.is_valid
        client.pubsub.publish("refresh/sync", "after the first token expired")
        # The client without refresh: its token has expired, the server says so.
        with pytest.raises(ServerError, match="authentication required to publish"):
            other.pubsub.publish("refresh/sync", "expired")
        assert inbox.wait_for(1)[0]["data"] == "after the first token expired"
        assert client.pubsub._core.client_id == connection  # never reconnected


async def test_the_async_client_refreshes_too(short_token_server: ServerProcess) -> None:
    url = short_token_server.url
    async with AsyncBosBase(url, timeout=TIMEOUTS, reconnect=FAST_RECONNECT) as client:
        first = (
            await client.collection("_superusers").auth_with_password(
                SUPERUSER_EMAIL, SUPERUSER_PASSWORD
            )
        )["token"]
        received: asyncio.Queue[Any] = asyncio.Queue()
        await client.pubsub.subscribe("refresh/async", lambda message: received.put_nowait(message))
        connection = client.pubsub._core.client_id
        await asyncio.sleep(TOKEN_TTL + 0.5)
        assert client.auth_store.token != first
        await client.pubsub.publish("refresh/async", "still signed in")
        message = await asyncio.wait_for(received.get(), 10)
        assert message["data"] == "still signed in"
        assert client.pubsub._core.client_id == connection
