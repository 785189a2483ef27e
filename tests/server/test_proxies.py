"""``--trusted-proxies``: X-Forwarded-For names the client only behind a trusted proxy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bosbase_pubsub.server.proxies import TrustedProxies, parse_networks

from ..conftest import StartServer
from ..servers import WsClient, cli

PROXIES = TrustedProxies(parse_networks("10.0.0.0/8, 127.0.0.1, ::1"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # A trusted peer: the right-most hop that is not trusted is the client.
        ("127.0.0.1", ["203.0.113.5"], "203.0.113.5"),
        ("127.0.0.1", ["198.51.100.1, 203.0.113.5"], "203.0.113.5"),
        ("127.0.0.1", ["203.0.113.5, 10.1.2.3"], "203.0.113.5"),
        ("127.0.0.1", ["203.0.113.5", "10.1.2.3"], "203.0.113.5"),  # two header lines
        ("::1", ["2001:db8::7"], "2001:db8::7"),
        # Every hop trusted: the left-most.
        ("127.0.0.1", ["10.0.0.9, 10.1.2.3"], "10.0.0.9"),
        # Garbled: the last address known good, never a guess.
        ("127.0.0.1", ["203.0.113.5, not-an-address"], "127.0.0.1"),
        ("127.0.0.1", ["not-an-address, 10.1.2.3"], "10.1.2.3"),
        ("127.0.0.1", [""], "127.0.0.1"),
        # An untrusted peer: the header is ignored, whatever it says.
        ("192.0.2.44", ["203.0.113.5"], "192.0.2.44"),
        (None, ["203.0.113.5"], None),
    ],
)
def test_the_client_address_behind_trusted_proxies(
    peer: str | None, forwarded: list[str], client: str | None
) -> None:
    assert PROXIES.client_address(peer, forwarded) == client


def test_a_bad_network_is_a_usage_error_naming_it() -> None:
    result = cli("serve", "--trusted-proxies", "10.0.0.0/8,10.0.0.300/8")
    assert result.returncode == 2
    assert "invalid network '10.0.0.300/8'" in result.stderr


@contextlib.asynccontextmanager
async def socket_from(url: str, client: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A raw WebSocket whose proxy says it carries ``client``."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"X-Forwarded-For": client}) as ws,
    ):
        yield ws


async def first_frame(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    return await asyncio.wait_for(ws.receive(), 10)


async def test_connections_are_counted_per_forwarded_client_behind_a_trusted_proxy(
    start_server: StartServer,
) -> None:
    server = start_server("--max-connections-per-address", "2", "--trusted-proxies", "127.0.0.0/8")
    async with (
        socket_from(server.ws_url, "203.0.113.5") as first,
        socket_from(server.ws_url, "203.0.113.5") as second,
        socket_from(server.ws_url, "203.0.113.5") as third,
        socket_from(server.ws_url, "203.0.113.6") as other_client,
    ):
        assert (await first_frame(first)).json()["type"] == "ready"
        assert (await first_frame(second)).json()["type"] == "ready"
        refused = await first_frame(third)
        assert refused.type is aiohttp.WSMsgType.CLOSE
        assert third.close_code == 1008
        # Another client behind the same proxy has slots of its own.
        assert (await first_frame(other_client)).json()["type"] == "ready"


async def test_the_header_is_ignored_from_a_peer_that_is_not_trusted(
    start_server: StartServer,
) -> None:
    # The peer is 127.0.0.1, which is not in the trusted network.
    server = start_server("--max-connections-per-address", "2", "--trusted-proxies", "10.0.0.0/8")
    first = await WsClient.connect(server.ws_url, headers={"X-Forwarded-For": "203.0.113.1"})
    second = await WsClient.connect(server.ws_url, headers={"X-Forwarded-For": "203.0.113.2"})
    try:
        # Different forged addresses, one real one: the third is refused.
        async with socket_from(server.ws_url, "203.0.113.3") as third:
            refused = await first_frame(third)
            assert refused.type is aiohttp.WSMsgType.CLOSE
            assert third.close_code == 1008
    finally:
        await first.close()
        await second.close()


async def sign_in_status(url: str, client: str, password: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/api/collections/users/auth-with-password",
            json={"identity": f"nobody-{password}@example.com", "password": password},
            headers={"X-Forwarded-For": client},
        ) as response,
    ):
        return response.status


async def test_failed_sign_ins_are_counted_per_forwarded_client(start_server: StartServer) -> None:
    server = start_server("--failed-signins-per-address", "2", "--trusted-proxies", "127.0.0.1")
    # Each attempt names another identity, so that only the per-address limit applies.
    assert [await sign_in_status(server.url, "203.0.113.5", f"p{n}") for n in range(3)] == [
        400,
        400,
        429,
    ]
    # Another client behind the same proxy is not locked out by the first one's failures.
    assert await sign_in_status(server.url, "203.0.113.6", "q0") == 400
