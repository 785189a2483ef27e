"""`bosbase-pubsub migrate`: accounts and signing secrets move to another store, so that
passwords and the tokens already issued keep working there."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bosbase_pubsub.server.auth.collections import COLLECTIONS
from bosbase_pubsub.server.auth.commands import copy_accounts, create_user
from bosbase_pubsub.server.auth.tokens import secret_name
from bosbase_pubsub.server.storage import open_store

from ...conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer, http_sign_in
from ...servers import WsClient, cli

USER_EMAIL = "ada@example.com"
USER_PASSWORD = "ada-password-1"


def auth_refresh(base_url: str, token: str, collection: str = "users") -> int:
    request = urllib.request.Request(
        f"{base_url}/api/collections/{collection}/auth-refresh",
        headers={"Authorization": token},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            json.load(response)
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("target", ["pg_database", "nats_stream"])
async def test_accounts_and_tokens_move_from_sqlite_to_postgresql_or_nats(
    start_server: StartServer, tmp_path: Path, target: str, request: pytest.FixtureRequest
) -> None:
    store_url: str = request.getfixturevalue(target)
    old = start_server()  # SQLite, with the superuser
    created = cli("user", "create", USER_EMAIL, USER_PASSWORD, "--dir", str(old.data_dir))
    assert created.returncode == 0, created.stderr
    user_token = http_sign_in(old.url, USER_EMAIL, USER_PASSWORD, "users")
    admin_token = http_sign_in(old.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    old.stop()

    moved = cli("migrate", "--from", str(old.data_dir), "--to", store_url)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines() == [
        "users: 1 copied, 0 already there",
        "_superusers: 1 copied, 0 already there",
    ]

    new = start_server(data_dir=tmp_path / "new_node", db_url=store_url)
    # Tokens issued by the old store verify on the new one, and passwords still work.
    assert auth_refresh(new.url, user_token) == 200
    assert auth_refresh(new.url, admin_token, "_superusers") == 200
    http_sign_in(new.url, USER_EMAIL, USER_PASSWORD, "users")
    publisher = await WsClient.connect(new.ws_url, token=user_token)
    try:
        assert (await publisher.publish("moved", {"ok": True}))["type"] == "published"
    finally:
        await publisher.close()

    # Again: nothing is copied twice.
    again = cli("migrate", "--from", str(old.data_dir), "--to", store_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "users: 0 copied, 1 already there",
        "_superusers: 0 copied, 1 already there",
    ]


async def test_an_email_taken_and_a_secret_already_there_are_reported(tmp_path: Path) -> None:
    source = open_store(None, tmp_path / "source")
    target = open_store(None, tmp_path / "target")
    await source.open()
    await target.open()
    try:
        await create_user(source.accounts, USER_EMAIL, USER_PASSWORD)
        await create_user(source.accounts, "bob@example.com", "bob-password-1")
        # The target already runs: its own secrets, and its own ada (another id).
        theirs = await create_user(target.accounts, USER_EMAIL, "other-password-1")
        for collection in COLLECTIONS:
            await target.accounts.secret(secret_name(collection), "the target's own secret")
        report = await copy_accounts(source.accounts, target.accounts)
        assert report.copied == {"users": 1, "_superusers": 0}
        assert report.conflicts == [f"users/{USER_EMAIL}"]
        assert report.secrets_kept == ["users", "_superusers"]
        # The target's own record is untouched.
        kept = await target.accounts.find_by_email("users", USER_EMAIL)
        assert kept is not None
        assert kept.id == theirs.id
        assert await target.accounts.find_by_email("users", "bob@example.com") is not None
    finally:
        await source.close()
        await target.close()


def test_bad_places_are_refused(tmp_path: Path) -> None:
    same = cli("migrate", "--from", str(tmp_path), "--to", str(tmp_path))
    assert same.returncode == 2
    assert "--from and --to name the same store" in same.stderr
    missing = cli("migrate", "--from", str(tmp_path / "nothing"), "--to", str(tmp_path / "new"))
    assert missing.returncode == 1
    assert f"no data.db in {tmp_path / 'nothing'}" in missing.stderr
    assert not (tmp_path / "new").exists()
    scheme = cli("migrate", "--from", "redis://127.0.0.1:6379", "--to", str(tmp_path / "new"))
    assert scheme.returncode == 1
    assert "unsupported database URL scheme 'redis'" in scheme.stderr
