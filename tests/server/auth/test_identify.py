"""``identify()``: the token carriers, their order, and the cookie's origin rule.

Each test asks a tiny ``/whoami`` route of the real test application who it
thinks the request is from.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import pytest

from .conftest import AuthServer, ServeAuth

PASSWORD = "s3cret-password"


async def token_for(server: AuthServer, email: str = "alice@example.com") -> tuple[str, str]:
    """Sign up and in; return the token and the record id."""
    record = await server.sign_up(email, PASSWORD)
    token: str = (await server.sign_in(email, PASSWORD))["token"]
    return token, record["id"]


def cookie(token: Any, record: Any = None) -> str:
    """A ``pb_auth`` cookie as the SDKs' ``exportToCookie`` writes it."""
    value = json.dumps({"token": token, "record": record or {}}, separators=(",", ":"))
    return "pb_auth=" + urllib.parse.quote(value, safe="")


async def whoami(server: AuthServer, path: str = "/whoami", **kwargs: Any) -> Any:
    status, body, _ = await server.call("GET", path, **kwargs)
    assert status == 200, body
    return body["identity"]


async def test_anonymous(auth_server: AuthServer) -> None:
    assert await whoami(auth_server) is None


@pytest.mark.parametrize("prefix", ["", "Bearer ", "bearer ", "BEARER "])
async def test_header(auth_server: AuthServer, prefix: str) -> None:
    token, record_id = await token_for(auth_server)
    identity = await whoami(auth_server, headers={"Authorization": prefix + token})
    assert identity["record_id"] == record_id
    assert identity["collection_id"] == "_pb_users_auth_"
    assert identity["collection_name"] == "users"
    assert identity["source"] == "header"
    assert identity["expires_at"] > time.time()


async def test_query(auth_server: AuthServer) -> None:
    token, record_id = await token_for(auth_server)
    identity = await whoami(auth_server, params={"token": token})
    assert identity["record_id"] == record_id
    assert identity["source"] == "query"


async def test_cookie(auth_server: AuthServer) -> None:
    token, record_id = await token_for(auth_server)
    identity = await whoami(auth_server, headers={"Cookie": cookie(token, {"id": record_id})})
    assert identity["record_id"] == record_id
    assert identity["source"] == "cookie"


async def test_cookie_among_others(auth_server: AuthServer) -> None:
    token, record_id = await token_for(auth_server)
    header = f"theme=dark; {cookie(token)}; other=1"
    identity = await whoami(auth_server, headers={"Cookie": header})
    assert identity["record_id"] == record_id


@pytest.mark.parametrize(
    "bad", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJpZCI6IngifQ.", "x" * 5000]
)
async def test_bad_tokens_are_anonymous_in_every_carrier(auth_server: AuthServer, bad: str) -> None:
    assert await whoami(auth_server, headers={"Authorization": bad}) is None
    assert await whoami(auth_server, params={"token": bad}) is None
    assert await whoami(auth_server, headers={"Cookie": cookie(bad)}) is None


async def test_expired_token_is_anonymous(auth_server: AuthServer) -> None:
    await token_for(auth_server)
    auth = auth_server.authenticator
    record = await auth.accounts.find_by_email("users", "alice@example.com")
    assert record is not None
    expired = auth.tokens.issue(record, now=time.time() - 8 * 86400)
    assert await whoami(auth_server, headers={"Authorization": expired}) is None
    assert await whoami(auth_server, params={"token": expired}) is None
    assert await whoami(auth_server, headers={"Cookie": cookie(expired)}) is None


@pytest.mark.parametrize(
    "value",
    [
        "pb_auth=not-json",
        "pb_auth=%7B%7D",  # {}
        "pb_auth=%5B%5D",  # []
        'pb_auth="%7B%22token%22%3A5%7D"',  # {"token": 5}
    ],
)
async def test_malformed_cookie_is_anonymous(auth_server: AuthServer, value: str) -> None:
    assert await whoami(auth_server, headers={"Cookie": value}) is None


async def test_the_first_carrier_present_decides(auth_server: AuthServer) -> None:
    token, record_id = await token_for(auth_server)
    # An invalid header is not rescued by a valid query or cookie.
    assert (
        await whoami(
            auth_server,
            headers={"Authorization": "garbage", "Cookie": cookie(token)},
            params={"token": token},
        )
        is None
    )
    # An invalid query is not rescued by a valid cookie.
    assert (
        await whoami(auth_server, headers={"Cookie": cookie(token)}, params={"token": "garbage"})
        is None
    )
    # A valid header wins over invalid others.
    identity = await whoami(
        auth_server,
        headers={"Authorization": token, "Cookie": cookie("garbage")},
        params={"token": "garbage"},
    )
    assert identity["source"] == "header"
    assert identity["record_id"] == record_id


async def test_empty_carriers_count_as_absent(auth_server: AuthServer) -> None:
    token, _ = await token_for(auth_server)
    identity = await whoami(
        auth_server, headers={"Authorization": "Bearer "}, params={"token": token}
    )
    assert identity["source"] == "query"
    identity = await whoami(auth_server, params={"token": ""}, headers={"Cookie": cookie(token)})
    assert identity["source"] == "cookie"


@pytest.mark.parametrize("path", ["/whoami/header-only", "/whoami/identify-header"])
async def test_header_only(auth_server: AuthServer, path: str) -> None:
    token, record_id = await token_for(auth_server)
    assert await whoami(auth_server, path, params={"token": token}) is None
    assert await whoami(auth_server, path, headers={"Cookie": cookie(token)}) is None
    identity = await whoami(auth_server, path, headers={"Authorization": token})
    assert identity["record_id"] == record_id


async def test_password_change_makes_the_old_token_anonymous(auth_server: AuthServer) -> None:
    token, record_id = await token_for(auth_server)
    status, _, _ = await auth_server.call(
        "PATCH",
        f"/api/collections/users/records/{record_id}",
        token=token,
        json={
            "oldPassword": PASSWORD,
            "password": "new-password-1",
            "passwordConfirm": "new-password-1",
        },
    )
    assert status == 200
    assert await whoami(auth_server, headers={"Authorization": token}) is None
    assert await whoami(auth_server, headers={"Cookie": cookie(token)}) is None


# --- the cookie and cross-site requests ------------------------------------------------------


async def test_cross_site_origin_ignores_the_cookie(auth_server: AuthServer) -> None:
    token, _ = await token_for(auth_server)
    for origin in ("https://evil.example", "http://localhost:1", "null", "not a url"):
        headers = {"Cookie": cookie(token), "Origin": origin}
        assert await whoami(auth_server, headers=headers) is None, origin


async def test_same_origin_keeps_the_cookie(auth_server: AuthServer) -> None:
    token, record_id = await token_for(auth_server)
    headers = {"Cookie": cookie(token), "Origin": auth_server.url}
    identity = await whoami(auth_server, headers=headers)
    assert identity["record_id"] == record_id
    # Origins compare case-insensitively on scheme and host.
    headers["Origin"] = auth_server.url.upper().replace("HTTP://", "http://")
    assert (await whoami(auth_server, headers=headers))["record_id"] == record_id


async def test_no_origin_keeps_the_cookie(auth_server: AuthServer) -> None:
    token, record_id = await token_for(auth_server)
    identity = await whoami(auth_server, headers={"Cookie": cookie(token)})
    assert identity["record_id"] == record_id


async def test_listed_origins_keep_the_cookie(serve_auth: ServeAuth) -> None:
    server = await serve_auth(origins=("https://app.example.com", "http://dev.example.com:3000"))
    token, record_id = await token_for(server)
    for origin in (
        "https://app.example.com",
        "https://app.example.com:443",
        "http://dev.example.com:3000",
    ):
        headers = {"Cookie": cookie(token), "Origin": origin}
        identity = await whoami(server, headers=headers)
        assert identity is not None, origin
        assert identity["record_id"] == record_id
    for origin in (
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://evil.example",
    ):
        headers = {"Cookie": cookie(token), "Origin": origin}
        assert await whoami(server, headers=headers) is None, origin


async def test_cross_site_origin_does_not_affect_header_or_query(auth_server: AuthServer) -> None:
    token, record_id = await token_for(auth_server)
    origin = {"Origin": "https://evil.example"}
    identity = await whoami(auth_server, headers={"Authorization": token, **origin})
    assert identity["record_id"] == record_id
    identity = await whoami(auth_server, headers=origin, params={"token": token})
    assert identity["record_id"] == record_id
