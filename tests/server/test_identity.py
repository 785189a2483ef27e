"""Who may publish: the three token carriers, every kind of bad token, the cookie's origin rule."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from ..conftest import BOTH_BACKENDS, SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer, http_sign_in
from ..servers import ServerProcess, WsClient, query

pytestmark = BOTH_BACKENDS

SUPERUSERS_ID = "pbc_3142635823"


def cookie(token: str) -> str:
    """A ``pb_auth`` cookie value as the SDKs' ``exportToCookie`` writes it."""
    return urllib.parse.quote(orjson.dumps({"token": token, "record": None}).decode())


async def can_publish(server: ServerProcess, **connect: Any) -> bool:
    client = await WsClient.connect(server.ws_url, **connect)
    try:
        reply = await client.publish("who", 1)
        if reply["type"] == "error":
            assert reply["message"] == "authentication required to publish"
        return bool(reply["type"] == "published")
    finally:
        await client.close()


async def signing_key(server: ServerProcess) -> tuple[str, str]:
    """The superuser's id and the real HS256 key its tokens are signed with."""
    [(record_id, token_key)] = await query(server, 'SELECT id, "tokenKey" FROM _superusers')
    [(secret,)] = await query(
        server, "SELECT value FROM _params WHERE id = 'auth._superusers.tokenSecret'"
    )
    return record_id, token_key + secret


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    return start_server("--origins", "https://app.example.com")


@pytest.fixture
def token(server: ServerProcess) -> str:
    return http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)


async def test_the_three_carriers(server: ServerProcess, token: str) -> None:
    assert await can_publish(server, token=token)
    assert await can_publish(server, token="Bearer " + token)
    assert await can_publish(server, params={"token": token})
    assert await can_publish(server, headers={"Cookie": f"pb_auth={cookie(token)}"})
    assert not await can_publish(server)


def claims(record_id: str, **overrides: Any) -> dict[str, Any]:
    base = {
        "id": record_id,
        "type": "auth",
        "collectionId": SUPERUSERS_ID,
        "exp": int(time.time()) + 3600,
        "refreshable": True,
    }
    return {**base, **overrides}


async def test_a_forged_token_with_the_real_key_is_accepted_so_the_bad_ones_below_mean_something(
    server: ServerProcess,
) -> None:
    record_id, key = await signing_key(server)
    assert await can_publish(server, token=jwt.encode(claims(record_id), key, algorithm="HS256"))


@pytest.mark.parametrize(
    "kind",
    ["expired", "tampered", "hs512", "alg-none", "wrong-type", "wrong-key", "unknown-record"],
)
async def test_bad_tokens_leave_the_connection_anonymous(
    server: ServerProcess, token: str, kind: str
) -> None:
    record_id, key = await signing_key(server)
    if kind == "expired":
        bad = jwt.encode(claims(record_id, exp=int(time.time()) - 5), key, algorithm="HS256")
    elif kind == "tampered":
        header, payload, signature = token.split(".")
        other = "A" if signature[0] != "A" else "B"
        bad = f"{header}.{payload}.{other}{signature[1:]}"
    elif kind == "hs512":
        bad = jwt.encode(claims(record_id), key, algorithm="HS512")
    elif kind == "alg-none":
        bad = jwt.encode(claims(record_id), None, algorithm="none")
    elif kind == "wrong-type":
        bad = jwt.encode(claims(record_id, type="file"), key, algorithm="HS256")
    elif kind == "wrong-key":
        bad = jwt.encode(claims(record_id), "not-the-key" * 4, algorithm="HS256")
    else:
        bad = jwt.encode(claims("nosuchrecord123"), key, algorithm="HS256")
    for carrier in ({"token": bad}, {"params": {"token": bad}}):
        assert not await can_publish(server, **carrier)
    assert not await can_publish(server, headers={"Cookie": f"pb_auth={cookie(bad)}"})


async def test_an_expired_token_from_the_server_itself(start_server: StartServer) -> None:
    server = start_server("--token-ttl", "1s")
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    await asyncio.sleep(2.1)
    assert not await can_publish(server, token=token)


async def test_a_password_change_revokes_earlier_tokens(server: ServerProcess, token: str) -> None:
    record_id, _ = await signing_key(server)
    async with (
        aiohttp.ClientSession() as session,
        session.patch(
            f"{server.url}/api/collections/_superusers/records/{record_id}",
            json={
                "oldPassword": SUPERUSER_PASSWORD,
                "password": "a-new-password-2",
                "passwordConfirm": "a-new-password-2",
            },
            headers={"Authorization": token},
        ) as response,
    ):
        assert response.status == 200, await response.text()
    assert not await can_publish(server, token=token)
    fresh = http_sign_in(server.url, SUPERUSER_EMAIL, "a-new-password-2")
    assert await can_publish(server, token=fresh)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("SELF", True),  # the server's own page
        ("https://app.example.com", True),  # listed with --origins
        ("https://evil.example.net", False),
        ("null", False),
    ],
)
async def test_the_cookie_counts_only_for_trusted_origins(
    server: ServerProcess, token: str, origin: str | None, allowed: bool
) -> None:
    headers = {"Cookie": f"pb_auth={cookie(token)}"}
    if origin is not None:
        headers["Origin"] = server.url if origin == "SELF" else origin
    assert await can_publish(server, headers=headers) is allowed


async def test_a_cross_site_origin_does_not_matter_for_header_tokens(
    server: ServerProcess, token: str
) -> None:
    assert await can_publish(server, token=token, headers={"Origin": "https://evil.example.net"})


async def test_cors_for_the_rest_api(server: ServerProcess, shared_server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as session:
        preflight_headers = {
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        async with session.options(
            server.url + "/api/collections/users/auth-with-password", headers=preflight_headers
        ) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
            assert response.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        async with session.options(
            server.url + "/api/health",
            headers={**preflight_headers, "Origin": "https://evil.example.net"},
        ) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
        # Without --origins, any origin may call the API (as PocketBase allows).
        async with session.get(
            shared_server.url + "/api/health", headers={"Origin": "https://anywhere.example"}
        ) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "*"
