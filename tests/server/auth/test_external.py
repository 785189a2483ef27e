"""Bring your own auth: tokens of the user's backend, by shared secret or JWKS.

The verifier is checked in process for every bad-token case, against a JWKS
served over real HTTP on loopback (with key rotation and failures); real
server processes show that such tokens publish over WebSocket and HTTP and
that a bad setup stops the server at start.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bosbase_pubsub.server.auth.external import ExternalTokens
from bosbase_pubsub.server.config import ExternalAuth

from ...conftest import StartServer
from ...servers import WsClient, cli

SECRET = "a-shared-secret-" * 4  # 64 characters: long enough even for HS512
ISSUER = "https://login.example.com"
AUDIENCE = "chat-app"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "user-42", "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET, **header: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=header or None)


def unsigned(payload: dict[str, Any]) -> str:
    return jwt.encode(payload, None, algorithm="none")


# --- shared secret ----------------------------------------------------------------------


async def test_a_token_signed_with_the_secret_is_an_identity_of_the_external_collection() -> None:
    tokens = ExternalTokens(ExternalAuth(secret=SECRET))
    identity = await tokens.verify(hs256(claims()))
    assert identity is not None
    assert identity.record_id == "user-42"
    assert identity.collection_name == "external"
    assert not identity.is_superuser
    assert identity.expires_at == pytest.approx(time.time() + 600, abs=5)


async def test_issuer_audience_and_user_claim_are_those_configured() -> None:
    settings = ExternalAuth(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, user_claim="uid")
    tokens = ExternalTokens(settings)
    good = claims(sub=None, uid=7, iss=ISSUER, aud=[AUDIENCE, "other"])
    identity = await tokens.verify(hs256(good))
    assert identity is not None
    assert identity.record_id == "7"
    assert await tokens.verify(hs256(claims(uid=7, iss=ISSUER))) is None  # no aud
    assert await tokens.verify(hs256(claims(uid=7, aud=AUDIENCE))) is None  # no iss


@pytest.mark.parametrize(
    ("case", "make_token"),
    [
        ("alg none", lambda: unsigned(claims())),
        ("another secret", lambda: hs256(claims(), secret="x" * 40)),
        ("wrong algorithm", lambda: jwt.encode(claims(), SECRET, algorithm="HS512")),
        ("expired", lambda: hs256(claims(exp=int(time.time()) - 5))),
        ("no expiry", lambda: hs256(claims(exp=None))),
        ("not yet valid", lambda: hs256(claims(nbf=int(time.time()) + 300))),
        ("issued in the future", lambda: hs256(claims(iat=int(time.time()) + 300))),
        ("wrong issuer", lambda: hs256(claims(iss="https://evil.example.com", aud=AUDIENCE))),
        ("wrong audience", lambda: hs256(claims(iss=ISSUER, aud="another-app"))),
        ("no user claim", lambda: hs256(claims(sub=None, iss=ISSUER, aud=AUDIENCE))),
        ("user id with a slash", lambda: hs256(claims(sub="a/b", iss=ISSUER, aud=AUDIENCE))),
        ("not a JWT", lambda: "not.a.token"),
        ("too long", lambda: hs256(claims(pad="x" * 5000, iss=ISSUER, aud=AUDIENCE))),
    ],
)
async def test_bad_tokens_prove_nothing(case: str, make_token: Callable[[], str]) -> None:
    tokens = ExternalTokens(ExternalAuth(secret=SECRET, issuer=ISSUER, audience=AUDIENCE))
    assert await tokens.verify(make_token()) is None, case


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (ExternalAuth(secret="short"), "at least 32 bytes for HS256"),
        (ExternalAuth(secret=SECRET, algorithms=("RS256",)), "RS256 needs --jwks-url"),
        (ExternalAuth(secret=SECRET, algorithms=("none",)), "unsupported JWT algorithm 'none'"),
        (ExternalAuth(jwks_url="ftp://keys"), "http(s)://"),
        (ExternalAuth(secret=SECRET, collection="_superusers"), "built-in"),
        (ExternalAuth(issuer=ISSUER), "need --jwt-secret or --jwks-url"),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(settings: ExternalAuth, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.check()


# --- JWKS ---------------------------------------------------------------------------------


class KeyServer:
    """A JWKS served over real HTTP on loopback; ``keys`` may be changed (rotation)."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        self.status = 200
        self.delay = 0.0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"keys": self.keys}, status=self.status)


@pytest.fixture
async def key_server() -> AsyncIterator[KeyServer]:
    server = KeyServer()
    app = web.Application()
    app.router.add_get("/jwks.json", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/jwks.json"
    yield server
    await runner.cleanup()


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private: Any, kid: str, alg: str | None) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else None
    if algorithm is None:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    else:
        jwk = json.loads(algorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "use": "sig"})
    if alg:
        jwk["alg"] = alg
    return dict(jwk)


async def test_rs256_and_es256_tokens_are_checked_with_the_jwks_and_rotation_is_picked_up(
    key_server: KeyServer,
) -> None:
    first, ec_key = rsa_key(), ec.generate_private_key(ec.SECP256R1())
    key_server.keys = [public_jwk(first, "k1", "RS256"), public_jwk(ec_key, "e1", "ES256")]
    tokens = ExternalTokens(ExternalAuth(jwks_url=key_server.url))
    rs = jwt.encode(claims(), first, algorithm="RS256", headers={"kid": "k1"})
    es = jwt.encode(claims(sub="ec-user"), ec_key, algorithm="ES256", headers={"kid": "e1"})
    assert (await tokens.verify(rs)) is not None
    identity = await tokens.verify(es)
    assert identity is not None
    assert identity.record_id == "ec-user"
    assert key_server.requests == 1  # cached

    # The backend rotates to a new key: a token naming it makes the set be fetched again.
    second = rsa_key()
    key_server.keys = [public_jwk(second, "k2", "RS256")]
    await asyncio.sleep(1.05)  # past the minimum interval between fetches
    rotated = jwt.encode(claims(sub="after"), second, algorithm="RS256", headers={"kid": "k2"})
    identity = await tokens.verify(rotated)
    assert identity is not None
    assert identity.record_id == "after"
    assert key_server.requests == 2
    # The old key left the set: its tokens no longer pass.
    assert await tokens.verify(rs) is None


async def test_key_tokens_that_must_not_pass(key_server: KeyServer) -> None:
    private = rsa_key()
    key_server.keys = [public_jwk(private, "k1", "RS256")]
    settings = ExternalAuth(
        secret=SECRET, jwks_url=key_server.url, algorithms=("HS256", "RS256", "RS512", "ES256")
    )
    tokens = ExternalTokens(settings)
    good = claims()
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    other_ec = ec.generate_private_key(ec.SECP256R1())
    cases = {
        # The classic confusion: the public key used as the HMAC secret.
        "HS256 over the public key": _hs256_with_raw_key(good, pem, kid="k1"),
        "signed by another key": jwt.encode(
            good, rsa_key(), algorithm="RS256", headers={"kid": "k1"}
        ),
        "unknown kid": jwt.encode(good, private, algorithm="RS256", headers={"kid": "nope"}),
        "alg other than the key's": jwt.encode(
            good, private, algorithm="RS512", headers={"kid": "k1"}
        ),
        "EC alg on an RSA key": jwt.encode(
            good, other_ec, algorithm="ES256", headers={"kid": "k1"}
        ),
        "alg none": unsigned(good),
    }
    for case, token in cases.items():
        assert await tokens.verify(token) is None, case
    assert (
        await tokens.verify(jwt.encode(good, private, algorithm="RS256", headers={"kid": "k1"}))
        is not None
    )


def _hs256_with_raw_key(payload: dict[str, Any], key: str, *, kid: str) -> str:
    """An HS256 token whose secret is ``key`` (PyJWT refuses PEM secrets, an attacker would not)."""
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(key.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


async def test_a_flood_of_unknown_kids_does_not_hammer_the_jwks(key_server: KeyServer) -> None:
    private = rsa_key()
    key_server.keys = [public_jwk(private, "k1", "RS256")]
    tokens = ExternalTokens(ExternalAuth(jwks_url=key_server.url))
    made_up = [
        jwt.encode(claims(), private, algorithm="RS256", headers={"kid": f"fake-{n}"})
        for n in range(200)
    ]
    results = await asyncio.gather(*(tokens.verify(t) for t in made_up))
    assert results == [None] * 200
    assert key_server.requests <= 2


async def test_an_unreachable_or_failing_jwks_lets_no_token_through(
    key_server: KeyServer,
) -> None:
    private = rsa_key()
    key_server.keys = [public_jwk(private, "k1", "RS256")]
    token = jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "k1"})
    # Nothing listens on port 9 of loopback: connection refused.
    unreachable = ExternalTokens(ExternalAuth(jwks_url="http://127.0.0.1:9/jwks.json"))
    assert await unreachable.verify(token) is None
    # An HTTP error, then a set too slow to come within the timeout.
    key_server.status = 500
    failing = ExternalTokens(ExternalAuth(jwks_url=key_server.url))
    assert await failing.verify(token) is None
    key_server.status, key_server.delay = 200, 2.0
    slow = ExternalTokens(ExternalAuth(jwks_url=key_server.url, jwks_timeout=0.3))
    assert await slow.verify(token) is None


# --- real servers ----------------------------------------------------------------------


async def test_a_gentoken_token_publishes_over_websocket_and_http(
    start_server: StartServer,
) -> None:
    options = ("--jwt-secret", SECRET, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE)
    server = start_server(*options)
    minted = cli("gentoken", "--user", "alice", "--ttl", "10m", *options)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE)["sub"] == "alice"

    subscriber = await WsClient.connect(server.ws_url)
    publisher = await WsClient.connect(server.ws_url, token=token)
    anonymous = await WsClient.connect(server.ws_url, token=hs256(claims(), secret="y" * 40))
    try:
        await subscriber.subscribe("chat/byo")
        ack = await publisher.publish("chat/byo", {"text": "over ws"})
        assert ack["type"] == "published"
        refused = await anonymous.publish("chat/byo", {"text": "forged"})
        assert refused == {
            "type": "error",
            "requestId": refused["requestId"],
            "message": "authentication required to publish",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{server.url}/api/pubsub/publish",
                json={"topic": "chat/byo", "data": {"text": "over http"}},
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            assert response.status == 200, await response.text()
        texts = [(await subscriber.next_message())["data"]["text"] for _ in range(2)]
        assert texts == ["over ws", "over http"]
        # The account routes do not act for an external identity.
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{server.url}/api/collections/users/auth-refresh",
                headers={"Authorization": token},
            ) as response,
        ):
            assert response.status == 401
    finally:
        for client in (subscriber, publisher, anonymous):
            await client.close()


async def test_a_jwks_backed_server_accepts_the_backends_tokens(
    start_server: StartServer, key_server: KeyServer
) -> None:
    private = rsa_key()
    key_server.keys = [public_jwk(private, "k1", None)]
    server = start_server("--jwks-url", key_server.url, "--jwt-collection", "members")
    token = jwt.encode(claims(sub="bob"), private, algorithm="RS256", headers={"kid": "k1"})
    publisher = await WsClient.connect(server.ws_url, token=token)
    try:
        assert (await publisher.publish("news", {"n": 1}))["type"] == "published"
    finally:
        await publisher.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--jwt-secret", "too-short"), "at least 32 bytes for HS256"),
        (("--jwt-secret", SECRET, "--jwt-algorithms", "none"), "unsupported JWT algorithm"),
        (("--jwt-audience", AUDIENCE), "need --jwt-secret or --jwks-url"),
    ],
)
def test_a_bad_setup_stops_the_server_at_start(args: tuple[str, ...], message: str) -> None:
    result = cli("serve", "--http", "127.0.0.1:0", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_gentoken_needs_a_secret() -> None:
    result = cli("gentoken", "--user", "alice", "--jwks-url", "http://127.0.0.1:9/jwks")
    assert result.returncode == 1
    assert "gentoken needs --jwt-secret" in result.stderr
