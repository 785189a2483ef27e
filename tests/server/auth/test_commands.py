"""The account helpers the command line uses, against a real store (each backend)."""

from __future__ import annotations

import pytest

from bosbase_pubsub.server.auth import (
    AccountError,
    Authenticator,
    EmailTakenError,
    PasswordHasher,
    create_user,
    upsert_superuser,
)
from bosbase_pubsub.server.storage import Store


async def test_upsert_superuser_creates_then_updates(
    store: Store, hasher: PasswordHasher, authenticator: Authenticator
) -> None:
    created = await upsert_superuser(
        store.accounts, " Root@Example.com ", "first-password", hasher=hasher
    )
    assert created.collection == "_superusers"
    assert created.email == "Root@Example.com"
    assert created.verified
    assert await hasher.verify("first-password", created.password_hash)
    token = authenticator.issue_token(created)

    updated = await upsert_superuser(
        store.accounts, "root@example.com", "second-password", hasher=hasher
    )
    assert updated.id == created.id
    assert updated.token_key != created.token_key
    stored = await store.accounts.find_by_id("_superusers", created.id)
    assert stored == updated
    assert await hasher.verify("second-password", stored.password_hash)
    assert not await hasher.verify("first-password", stored.password_hash)
    # The earlier token is revoked.
    assert await authenticator.verify_token(token) is None


async def test_create_user(store: Store, hasher: PasswordHasher) -> None:
    user = await create_user(store.accounts, "alice@example.com", "alice-password", hasher=hasher)
    assert user.collection == "users"
    assert not user.verified
    assert len(user.id) == 15
    assert await store.accounts.find_by_email("users", "ALICE@example.com") == user


async def test_create_user_refuses_a_taken_email(store: Store, hasher: PasswordHasher) -> None:
    await create_user(store.accounts, "bob@example.com", "bob-password", hasher=hasher)
    with pytest.raises(EmailTakenError) as caught:
        await create_user(store.accounts, "BOB@example.com", "other-password", hasher=hasher)
    assert isinstance(caught.value, AccountError)
    assert (
        str(caught.value) == "an account with the email 'BOB@example.com' already exists in 'users'"
    )


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("not-an-email", "long-enough", "email: Must be a valid email address."),
        ("", "long-enough", "email: Cannot be blank."),
        ("a@example.com", "short", "password: Must be at least 8 character(s)."),
        ("a@example.com", "x" * 80, "password: Must be less than 71 character(s)."),
    ],
)
async def test_invalid_input_is_explained(
    store: Store, hasher: PasswordHasher, email: str, password: str, message: str
) -> None:
    for helper in (create_user, upsert_superuser):
        with pytest.raises(AccountError) as caught:
            await helper(store.accounts, email, password, hasher=hasher)
        assert str(caught.value) == message
        assert isinstance(caught.value, ValueError)


async def test_users_and_superusers_are_separate(store: Store, hasher: PasswordHasher) -> None:
    user = await create_user(store.accounts, "same@example.com", "user-password", hasher=hasher)
    root = await upsert_superuser(
        store.accounts, "same@example.com", "root-password", hasher=hasher
    )
    assert user.id != root.id
    assert (await store.accounts.find_by_email("users", "same@example.com")) == user
