"""Issuing and verifying auth tokens against a real store (each backend)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from bosbase_pubsub.server.auth import (
    SUPERUSERS,
    USERS,
    Authenticator,
    PasswordHasher,
    create_user,
    upsert_superuser,
)
from bosbase_pubsub.server.auth.accounts import change_password
from bosbase_pubsub.server.auth.tokens import secret_name
from bosbase_pubsub.server.config import AuthSettings
from bosbase_pubsub.server.storage import Store
from bosbase_pubsub.server.storage.base import AuthRecord
from bosbase_pubsub.server.storage.sqlite import SqliteStore

EMAIL = "alice@example.com"
PASSWORD = "alice-password"


@pytest.fixture
async def alice(store: Store, hasher: PasswordHasher) -> AuthRecord:
    return await create_user(store.accounts, EMAIL, PASSWORD, hasher=hasher)


async def signing_key(store: Store, record: AuthRecord) -> str:
    """The key a genuine token for ``record`` is signed with (to forge variants)."""
    collection = USERS if record.collection == USERS.name else SUPERUSERS
    secret = await store.accounts.secret(secret_name(collection), "never-used-candidate")
    return record.token_key + secret


def claims_for(record: AuthRecord, **overrides: Any) -> dict[str, Any]:
    collection = USERS if record.collection == USERS.name else SUPERUSERS
    claims: dict[str, Any] = {
        "collectionId": collection.id,
        "exp": int(time.time()) + 3600,
        "id": record.id,
        "refreshable": True,
        "type": "auth",
    }
    claims.update(overrides)
    return claims


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{b64(header)}.{b64(claims)}.{signature}"


async def test_issue_then_verify(authenticator: Authenticator, alice: AuthRecord) -> None:
    before = time.time()
    token = authenticator.issue_token(alice)
    identity = await authenticator.verify_token(token)
    assert identity is not None
    assert identity.record_id == alice.id
    assert identity.collection_id == "_pb_users_auth_"
    assert identity.collection_name == "users"
    assert identity.source == "header"
    assert identity.refreshable
    assert not identity.is_superuser
    ttl = AuthSettings().token_ttl.total_seconds()
    assert before + ttl - 2 <= identity.expires_at <= time.time() + ttl + 1


async def test_claims_are_pocketbase_like(authenticator: Authenticator, alice: AuthRecord) -> None:
    token = authenticator.issue_token(alice)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["id"] == alice.id
    assert claims["type"] == "auth"
    assert claims["collectionId"] == "_pb_users_auth_"
    assert claims["refreshable"] is True
    assert isinstance(claims["exp"], int)


async def test_source_is_reported(authenticator: Authenticator, alice: AuthRecord) -> None:
    token = authenticator.issue_token(alice)
    identity = await authenticator.verify_token(token, source="cookie")
    assert identity is not None
    assert identity.source == "cookie"


async def test_superuser_identity(
    authenticator: Authenticator, store: Store, hasher: PasswordHasher
) -> None:
    root = await upsert_superuser(
        store.accounts, "root@example.com", "root-password", hasher=hasher
    )
    identity = await authenticator.verify_token(authenticator.issue_token(root))
    assert identity is not None
    assert identity.is_superuser
    assert identity.collection_id == "pbc_3142635823"
    assert identity.collection_name == "_superusers"


async def test_expired_token(authenticator: Authenticator, alice: AuthRecord) -> None:
    ttl = AuthSettings().token_ttl.total_seconds()
    token = authenticator.tokens.issue(alice, now=time.time() - ttl - 5)
    assert await authenticator.verify_token(token) is None


async def test_token_lifetime_follows_settings(
    store: Store, hasher: PasswordHasher, alice: AuthRecord
) -> None:
    auth = Authenticator(
        store.accounts, AuthSettings(token_ttl=dt.timedelta(minutes=10)), hasher=hasher
    )
    await auth.start()
    identity = await auth.verify_token(auth.issue_token(alice))
    assert identity is not None
    assert identity.expires_at == pytest.approx(time.time() + 600, abs=2)


async def test_forged_hs256_with_the_real_key_verifies(
    authenticator: Authenticator, store: Store, alice: AuthRecord
) -> None:
    # Sanity check of the forging helpers used below: the right key and
    # algorithm make a valid token, so the refusals below are about what differs.
    token = jwt.encode(claims_for(alice), await signing_key(store, alice), algorithm="HS256")
    assert await authenticator.verify_token(token) is not None


async def test_wrong_key(authenticator: Authenticator, alice: AuthRecord) -> None:
    token = jwt.encode(claims_for(alice), "k" * 64, algorithm="HS256")
    assert await authenticator.verify_token(token) is None


async def test_tampered_claims(
    authenticator: Authenticator, store: Store, hasher: PasswordHasher, alice: AuthRecord
) -> None:
    bob = await create_user(store.accounts, "bob@example.com", "bob-password", hasher=hasher)
    header, _, signature = authenticator.issue_token(alice).split(".")
    # Alice's signature on claims naming Bob.
    forged = f"{header}.{b64(claims_for(bob))}.{signature}"
    assert await authenticator.verify_token(forged) is None
    # Alice's signature on her own claims with a later expiry.
    later = claims_for(alice, exp=int(time.time()) + 10 * 365 * 86400)
    assert await authenticator.verify_token(f"{header}.{b64(later)}.{signature}") is None


async def test_tampered_signature(authenticator: Authenticator, alice: AuthRecord) -> None:
    header, payload, signature = authenticator.issue_token(alice).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0x01
    flipped = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert await authenticator.verify_token(f"{header}.{payload}.{flipped}") is None
    assert await authenticator.verify_token(f"{header}.{payload}.") is None


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_other_hmac_algorithms_are_refused(
    authenticator: Authenticator, store: Store, alice: AuthRecord, algorithm: str
) -> None:
    token = jwt.encode(claims_for(alice), await signing_key(store, alice), algorithm=algorithm)
    assert await authenticator.verify_token(token) is None


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
async def test_unsigned_tokens_are_refused(
    authenticator: Authenticator, alice: AuthRecord, alg: str
) -> None:
    assert await authenticator.verify_token(unsigned({"alg": alg}, claims_for(alice))) is None


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "EdDSA"])
async def test_asymmetric_headers_are_refused(
    authenticator: Authenticator, alice: AuthRecord, alg: str
) -> None:
    signature = base64.urlsafe_b64encode(b"\x01" * 256).rstrip(b"=").decode()
    token = unsigned({"alg": alg, "typ": "JWT"}, claims_for(alice), signature)
    assert await authenticator.verify_token(token) is None


@pytest.mark.parametrize("kind", ["file", "passwordReset", "verification", "", None])
async def test_other_token_types_are_refused(
    authenticator: Authenticator, store: Store, alice: AuthRecord, kind: str | None
) -> None:
    token = jwt.encode(
        claims_for(alice, type=kind), await signing_key(store, alice), algorithm="HS256"
    )
    assert await authenticator.verify_token(token) is None


async def test_missing_expiry_is_refused(
    authenticator: Authenticator, store: Store, alice: AuthRecord
) -> None:
    claims = claims_for(alice)
    del claims["exp"]
    token = jwt.encode(claims, await signing_key(store, alice), algorithm="HS256")
    assert await authenticator.verify_token(token) is None


async def test_unknown_record(
    authenticator: Authenticator, store: Store, alice: AuthRecord
) -> None:
    key = await signing_key(store, alice)
    token = jwt.encode(claims_for(alice, id="zzzzzzzzzzzzzzz"), key, algorithm="HS256")
    assert await authenticator.verify_token(token) is None


async def test_wrong_collection(
    authenticator: Authenticator, store: Store, alice: AuthRecord
) -> None:
    key = await signing_key(store, alice)
    for collection_id in ("pbc_3142635823", "some_other_collection", ""):
        token = jwt.encode(claims_for(alice, collectionId=collection_id), key, algorithm="HS256")
        assert await authenticator.verify_token(token) is None


async def test_non_refreshable_token_is_reported(
    authenticator: Authenticator, store: Store, alice: AuthRecord
) -> None:
    key = await signing_key(store, alice)
    token = jwt.encode(claims_for(alice, refreshable=False), key, algorithm="HS256")
    identity = await authenticator.verify_token(token)
    assert identity is not None
    assert not identity.refreshable


@pytest.mark.parametrize(
    "token", ["", "garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJIUzI1NiJ9.e30.", "x" * 5000]
)
async def test_malformed_tokens(authenticator: Authenticator, token: str) -> None:
    assert await authenticator.verify_token(token) is None


async def test_password_change_invalidates_earlier_tokens(
    authenticator: Authenticator, store: Store, hasher: PasswordHasher, alice: AuthRecord
) -> None:
    before = authenticator.issue_token(alice)
    assert await authenticator.verify_token(before) is not None
    changed = await change_password(store.accounts, hasher, alice, "a-new-password")
    assert changed.token_key != alice.token_key
    assert await authenticator.verify_token(before) is None
    after = authenticator.issue_token(changed)
    assert await authenticator.verify_token(after) is not None


async def test_nodes_sharing_a_database_accept_each_others_tokens(
    authenticator: Authenticator, store: Store, hasher: PasswordHasher, alice: AuthRecord
) -> None:
    other_node = Authenticator(store.accounts, AuthSettings(), hasher=hasher)
    await other_node.start()
    identity = await other_node.verify_token(authenticator.issue_token(alice))
    assert identity is not None
    assert identity.record_id == alice.id


async def test_another_database_rejects_the_token(
    authenticator: Authenticator, alice: AuthRecord, hasher: PasswordHasher, tmp_path: Path
) -> None:
    other_store = SqliteStore(tmp_path / "other" / "data.db")
    await other_store.open()
    try:
        # Even an account with the same id there does not make the token valid.
        await other_store.accounts.insert(alice)
        other = Authenticator(other_store.accounts, AuthSettings(), hasher=hasher)
        await other.start()
        assert await other.verify_token(authenticator.issue_token(alice)) is None
    finally:
        await other_store.close()


async def test_secrets_survive_a_restart(
    authenticator: Authenticator, store: Store, hasher: PasswordHasher, alice: AuthRecord
) -> None:
    token = authenticator.issue_token(alice)
    restarted = Authenticator(store.accounts, AuthSettings(), hasher=hasher)
    await restarted.start()
    assert await restarted.verify_token(token) is not None


async def test_issue_needs_start(store: Store, alice: AuthRecord) -> None:
    auth = Authenticator(store.accounts, AuthSettings())
    with pytest.raises(RuntimeError, match="load_secrets"):
        auth.issue_token(alice)
    assert await auth.verify_token("a.b.c") is None
