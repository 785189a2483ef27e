"""The record API over HTTP (sign-in, refresh, sign-up), with both clients."""

from __future__ import annotations

import uuid

import pytest

from bosbase_pubsub import AsyncBosBase, AuthError, BosBase, ServerError, TransportError

from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD
from ..servers import ServerProcess
from .conftest import closed_port


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def test_sign_up_sign_in_and_refresh(shared_server: ServerProcess) -> None:
    email = new_email()
    with BosBase(shared_server.url) as client:
        changes: list[str] = []
        client.auth_store.on_change(lambda token, record: changes.append(token))
        record = client.collection("users").create(
            {"email": email, "password": "password-123", "passwordConfirm": "password-123"}
        )
        assert record["collectionName"] == "users"
        assert client.auth_store.token == ""  # signing up does not sign in
        auth = client.collection("users").auth_with_password(email, "password-123")
        assert auth["record"]["email"] == email
        assert client.auth_store.token == auth["token"]
        assert client.auth_store.record == auth["record"]
        assert client.auth_store.is_valid
        assert not client.auth_store.is_superuser
        refreshed = client.collection("users").auth_refresh()
        assert refreshed["record"]["id"] == record["id"]
        assert client.auth_store.token == refreshed["token"]
        assert changes == [auth["token"], refreshed["token"]]


def test_refusals_are_typed_with_the_servers_message(shared_server: ServerProcess) -> None:
    with BosBase(shared_server.url) as client:
        with pytest.raises(AuthError, match=r"^Failed to authenticate\.$") as wrong:
            client.collection("_superusers").auth_with_password(SUPERUSER_EMAIL, "wrong-password")
        assert wrong.value.status == 400
        with pytest.raises(AuthError) as no_token:
            client.collection("users").auth_refresh()
        assert no_token.value.status == 401
        with pytest.raises(ServerError) as invalid:
            client.collection("users").create({"email": "not an email", "password": "short"})
        assert invalid.value.status == 400
        assert invalid.value.message == "Failed to create record."
        assert invalid.value.data["email"]["code"] == "validation_is_email"
        assert not isinstance(invalid.value, AuthError)
        with pytest.raises(ServerError) as missing:
            client.collection("nope").auth_with_password("a@example.com", "password-123")
        assert missing.value.status == 404
        auth = client.collection("_superusers").auth_with_password(
            SUPERUSER_EMAIL, SUPERUSER_PASSWORD
        )
        assert client.auth_store.is_superuser
        assert auth["record"]["collectionName"] == "_superusers"


def test_an_unreachable_server_is_a_transport_error() -> None:
    with (
        BosBase(f"http://127.0.0.1:{closed_port()}") as client,
        pytest.raises(TransportError, match="could not reach"),
    ):
        client.collection("users").auth_with_password("a@example.com", "password-123")


async def test_the_async_client_has_the_same_verbs(shared_server: ServerProcess) -> None:
    email = new_email()
    async with AsyncBosBase(shared_server.url) as client:
        users = client.collection("users")
        await users.create(
            {"email": email, "password": "password-123", "passwordConfirm": "password-123"}
        )
        auth = await users.auth_with_password(email, "password-123")
        assert client.auth_store.token == auth["token"]
        refreshed = await users.auth_refresh()
        assert refreshed["record"]["email"] == email
        with pytest.raises(AuthError, match=r"^Failed to authenticate\.$"):
            await users.auth_with_password(email, "wrong-password")
