"""The auth REST routes over real HTTP on loopback: shapes, errors and flows."""

from __future__ import annotations

import io
import json

import aiohttp
import pytest

from bosbase_pubsub.server.auth import upsert_superuser

from .conftest import AuthServer, ServeAuth

PASSWORD = "s3cret-password"
RECORD_KEYS = {
    "collectionId",
    "collectionName",
    "created",
    "emailVisibility",
    "id",
    "name",
    "updated",
    "verified",
}
FAILED_TO_AUTHENTICATE = {"status": 400, "message": "Failed to authenticate.", "data": {}}
REQUIRES_AUTH = {
    "status": 401,
    "message": "The request requires valid record authorization token.",
    "data": {},
}
SUPERUSERS_ONLY = {"status": 403, "message": "Only superusers can perform this action.", "data": {}}
NOT_FOUND = {"status": 404, "message": "The requested resource wasn't found.", "data": {}}


async def superuser_token(server: AuthServer) -> str:
    auth = server.authenticator
    await upsert_superuser(auth.accounts, "root@example.com", PASSWORD, hasher=auth.hasher)
    body = await server.sign_in("root@example.com", PASSWORD, collection="_superusers")
    token: str = body["token"]
    return token


# --- sign-up -------------------------------------------------------------------------


async def test_sign_up_returns_the_record(auth_server: AuthServer) -> None:
    record = await auth_server.sign_up("alice@example.com", PASSWORD, name="Alice")
    assert set(record) == RECORD_KEYS  # the email is hidden from others by default
    assert record["collectionId"] == "_pb_users_auth_"
    assert record["collectionName"] == "users"
    assert record["name"] == "Alice"
    assert record["verified"] is False
    assert record["emailVisibility"] is False
    assert len(record["id"]) == 15
    assert record["created"] == record["updated"]
    assert record["created"].endswith("Z")


async def test_sign_up_with_visible_email(auth_server: AuthServer) -> None:
    record = await auth_server.sign_up("bob@example.com", PASSWORD, emailVisibility=True)
    assert record["email"] == "bob@example.com"
    assert record["emailVisibility"] is True


async def test_sign_up_by_collection_id(auth_server: AuthServer) -> None:
    status, record, _ = await auth_server.call(
        "POST",
        "/api/collections/_pb_users_auth_/records",
        json={"email": "c@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD},
    )
    assert status == 200, record
    assert record["collectionName"] == "users"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {},
            {
                "email": "validation_required",
                "password": "validation_required",
                "passwordConfirm": "validation_required",
            },
        ),
        (
            {"email": "not-an-email", "password": PASSWORD, "passwordConfirm": PASSWORD},
            {"email": "validation_is_email"},
        ),
        (
            {"email": "d@example.com", "password": "short", "passwordConfirm": "short"},
            {"password": "validation_min_text_constraint"},
        ),
        (
            {"email": "d@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD + "x"},
            {"passwordConfirm": "validation_values_mismatch"},
        ),
        (
            {
                "email": "d@example.com",
                "password": PASSWORD,
                "passwordConfirm": PASSWORD,
                "verified": True,
            },
            {"verified": "validation_values_mismatch"},
        ),
        (
            {"email": ["d@example.com"], "password": PASSWORD, "passwordConfirm": PASSWORD},
            {"email": "validation_invalid_value"},
        ),
    ],
)
async def test_sign_up_validation(
    auth_server: AuthServer, body: dict[str, object], errors: dict[str, str]
) -> None:
    status, reply, _ = await auth_server.call("POST", "/api/collections/users/records", json=body)
    assert status == 400
    assert reply["status"] == 400
    assert reply["message"] == "Failed to create record."
    assert {field: item["code"] for field, item in reply["data"].items()} == errors
    for item in reply["data"].values():
        assert item["message"].endswith(".")


async def test_sign_up_messages(auth_server: AuthServer) -> None:
    status, reply, _ = await auth_server.call(
        "POST",
        "/api/collections/users/records",
        json={"email": "bad", "password": "short", "passwordConfirm": "other"},
    )
    assert status == 400
    assert reply["data"] == {
        "email": {"code": "validation_is_email", "message": "Must be a valid email address."},
        "password": {
            "code": "validation_min_text_constraint",
            "message": "Must be at least 8 character(s).",
            "params": {"min": 8},
        },
        "passwordConfirm": {"code": "validation_values_mismatch", "message": "Values don't match."},
    }


async def test_sign_up_duplicate_email(auth_server: AuthServer) -> None:
    await auth_server.sign_up("dup@example.com", PASSWORD)
    status, reply, _ = await auth_server.call(
        "POST",
        "/api/collections/users/records",
        json={"email": "DUP@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD},
    )
    assert status == 400
    assert reply == {
        "status": 400,
        "message": "Failed to create record.",
        "data": {"email": {"code": "validation_not_unique", "message": "Value must be unique."}},
    }


async def test_sign_up_bad_bodies(auth_server: AuthServer) -> None:
    for data in (b"{not json", b"[1, 2]", b'"text"'):
        status, reply, _ = await auth_server.call(
            "POST",
            "/api/collections/users/records",
            data=data,
            headers={"Content-Type": "application/json"},
        )
        assert status == 400
        assert reply == {"status": 400, "message": "Failed to read the submitted data.", "data": {}}


async def test_sign_up_unknown_collection(auth_server: AuthServer) -> None:
    status, reply, _ = await auth_server.call("POST", "/api/collections/posts/records", json={})
    assert status == 404
    assert reply == {"status": 404, "message": "Missing collection context.", "data": {}}


async def test_sign_up_disabled(serve_auth: ServeAuth) -> None:
    server = await serve_auth(signup=False)
    status, reply, _ = await server.call(
        "POST",
        "/api/collections/users/records",
        json={"email": "e@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD},
    )
    assert status == 403
    assert reply == SUPERUSERS_ONLY
    # A superuser still creates accounts, and sees their email.
    token = await superuser_token(server)
    status, record, _ = await server.call(
        "POST",
        "/api/collections/users/records",
        token=token,
        json={
            "email": "e@example.com",
            "password": PASSWORD,
            "passwordConfirm": PASSWORD,
            "verified": True,
        },
    )
    assert status == 200, record
    assert record["email"] == "e@example.com"
    assert record["verified"] is True


async def test_superusers_cannot_be_signed_up(auth_server: AuthServer) -> None:
    body = {"email": "f@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD}
    status, reply, _ = await auth_server.call(
        "POST", "/api/collections/_superusers/records", json=body
    )
    assert status == 403
    assert reply == SUPERUSERS_ONLY
    status, record, _ = await auth_server.call(
        "POST",
        "/api/collections/_superusers/records",
        json=body,
        token=await superuser_token(auth_server),
    )
    assert status == 200, record
    assert record["collectionId"] == "pbc_3142635823"
    assert "name" not in record


# --- auth-with-password ---------------------------------------------------------------


async def test_sign_in(auth_server: AuthServer) -> None:
    created = await auth_server.sign_up("alice@example.com", PASSWORD, name="Alice")
    body = await auth_server.sign_in("alice@example.com", PASSWORD)
    assert set(body) == {"token", "record"}
    record = body["record"]
    assert record["email"] == "alice@example.com"  # the owner sees their email
    assert record["id"] == created["id"]
    assert set(record) == RECORD_KEYS | {"email"}
    identity = await auth_server.authenticator.verify_token(body["token"])
    assert identity is not None
    assert identity.record_id == created["id"]


async def test_sign_in_is_case_insensitive_on_the_email(auth_server: AuthServer) -> None:
    await auth_server.sign_up("Mixed.Case@Example.com", PASSWORD)
    body = await auth_server.sign_in("mixed.case@example.COM", PASSWORD)
    assert body["record"]["email"] == "Mixed.Case@Example.com"


async def test_sign_in_by_collection_id(auth_server: AuthServer) -> None:
    await auth_server.sign_up("g@example.com", PASSWORD)
    body = await auth_server.sign_in("g@example.com", PASSWORD, collection="_pb_users_auth_")
    assert body["record"]["collectionName"] == "users"


async def test_sign_in_with_a_form(auth_server: AuthServer) -> None:
    await auth_server.sign_up("h@example.com", PASSWORD)
    status, body, _ = await auth_server.call(
        "POST",
        "/api/collections/users/auth-with-password",
        data={"identity": "h@example.com", "password": PASSWORD},
    )
    assert status == 200, body
    assert body["token"]


async def test_wrong_credentials(auth_server: AuthServer) -> None:
    await auth_server.sign_up("i@example.com", PASSWORD)
    for identity, password in [
        ("i@example.com", "wrong-password"),
        ("nobody@example.com", PASSWORD),
        ("not an email", PASSWORD),
    ]:
        status, reply, _ = await auth_server.call(
            "POST",
            "/api/collections/users/auth-with-password",
            json={"identity": identity, "password": password},
        )
        assert status == 400
        assert reply == FAILED_TO_AUTHENTICATE


async def test_users_are_not_superusers(auth_server: AuthServer) -> None:
    await auth_server.sign_up("j@example.com", PASSWORD)
    status, reply, _ = await auth_server.call(
        "POST",
        "/api/collections/_superusers/auth-with-password",
        json={"identity": "j@example.com", "password": PASSWORD},
    )
    assert status == 400
    assert reply == FAILED_TO_AUTHENTICATE


async def test_superuser_sign_in(auth_server: AuthServer) -> None:
    token = await superuser_token(auth_server)
    identity = await auth_server.authenticator.verify_token(token)
    assert identity is not None
    assert identity.is_superuser


async def test_sign_in_validation(auth_server: AuthServer) -> None:
    status, reply, _ = await auth_server.call(
        "POST", "/api/collections/users/auth-with-password", json={}
    )
    assert status == 400
    assert reply == {
        "status": 400,
        "message": "An error occurred while validating the submitted data.",
        "data": {
            "identity": {"code": "validation_required", "message": "Cannot be blank."},
            "password": {"code": "validation_required", "message": "Cannot be blank."},
        },
    }
    status, reply, _ = await auth_server.call(
        "POST",
        "/api/collections/users/auth-with-password",
        json={"identity": "a@example.com", "password": "x" * 256},
    )
    assert status == 400
    assert reply["data"]["password"]["code"] == "validation_length_out_of_range"


@pytest.mark.parametrize(
    "data", [b"{oops", b"[]", b"null", b'{"identity": 5, "password": "x"}', b"\xff\xfe"]
)
async def test_sign_in_unreadable_body(auth_server: AuthServer, data: bytes) -> None:
    status, reply, _ = await auth_server.call(
        "POST",
        "/api/collections/users/auth-with-password",
        data=data,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert reply == {
        "status": 400,
        "message": "An error occurred while loading the submitted data.",
        "data": {},
    }


async def test_sign_in_unknown_collection(auth_server: AuthServer) -> None:
    status, reply, _ = await auth_server.call(
        "POST",
        "/api/collections/posts/auth-with-password",
        json={"identity": "a@example.com", "password": PASSWORD},
    )
    assert status == 404
    assert reply == {
        "status": 404,
        "message": "Missing or invalid auth collection context.",
        "data": {},
    }


# --- auth-refresh ---------------------------------------------------------------------


async def test_refresh(auth_server: AuthServer) -> None:
    await auth_server.sign_up("k@example.com", PASSWORD)
    first = await auth_server.sign_in("k@example.com", PASSWORD)
    for token in (first["token"], "Bearer " + first["token"], "bearer " + first["token"]):
        status, body, _ = await auth_server.call(
            "POST", "/api/collections/users/auth-refresh", token=token
        )
        assert status == 200, body
        assert set(body) == {"token", "record"}
        assert body["record"] == first["record"]
        assert await auth_server.authenticator.verify_token(body["token"]) is not None


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b.c", "Bearer "])
async def test_refresh_without_a_valid_token(auth_server: AuthServer, token: str | None) -> None:
    status, reply, _ = await auth_server.call(
        "POST", "/api/collections/users/auth-refresh", token=token
    )
    assert status == 401
    assert reply == REQUIRES_AUTH


async def test_refresh_reads_the_header_only(auth_server: AuthServer) -> None:
    await auth_server.sign_up("l@example.com", PASSWORD)
    token = (await auth_server.sign_in("l@example.com", PASSWORD))["token"]
    status, reply, _ = await auth_server.call(
        "POST", "/api/collections/users/auth-refresh", params={"token": token}
    )
    assert status == 401
    assert reply == REQUIRES_AUTH


async def test_refresh_in_another_collection(auth_server: AuthServer) -> None:
    await auth_server.sign_up("m@example.com", PASSWORD)
    token = (await auth_server.sign_in("m@example.com", PASSWORD))["token"]
    for collection in ("_superusers", "posts"):
        status, reply, _ = await auth_server.call(
            "POST", f"/api/collections/{collection}/auth-refresh", token=token
        )
        assert status == 403
        assert reply == {
            "status": 403,
            "message": "The request requires auth record from users collection.",
            "data": {},
        }


# --- password change --------------------------------------------------------------------


async def change(
    server: AuthServer, record_id: str, token: str | None, body: dict[str, object]
) -> tuple[int, dict[str, object]]:
    status, reply, _ = await server.call(
        "PATCH", f"/api/collections/users/records/{record_id}", token=token, json=body
    )
    return status, reply


async def test_password_change_invalidates_earlier_tokens(auth_server: AuthServer) -> None:
    created = await auth_server.sign_up("n@example.com", PASSWORD)
    old_token = (await auth_server.sign_in("n@example.com", PASSWORD))["token"]
    second_old_token = (await auth_server.sign_in("n@example.com", PASSWORD))["token"]
    new_password = "a-brand-new-password"
    status, record = await change(
        auth_server,
        created["id"],
        old_token,
        {"oldPassword": PASSWORD, "password": new_password, "passwordConfirm": new_password},
    )
    assert status == 200, record
    assert record["email"] == "n@example.com"
    assert record["id"] == created["id"]
    # Every token issued before the change is refused now...
    for token in (old_token, second_old_token):
        status, reply, _ = await auth_server.call(
            "POST", "/api/collections/users/auth-refresh", token=token
        )
        assert status == 401
        assert reply == REQUIRES_AUTH
        assert await auth_server.authenticator.verify_token(token) is None
    # ...the old password no longer works, the new one does.
    status, reply, _ = await auth_server.call(
        "POST",
        "/api/collections/users/auth-with-password",
        json={"identity": "n@example.com", "password": PASSWORD},
    )
    assert status == 400
    assert reply == FAILED_TO_AUTHENTICATE
    fresh = await auth_server.sign_in("n@example.com", new_password)
    assert await auth_server.authenticator.verify_token(fresh["token"]) is not None


async def test_password_change_validation(auth_server: AuthServer) -> None:
    created = await auth_server.sign_up("o@example.com", PASSWORD)
    token = (await auth_server.sign_in("o@example.com", PASSWORD))["token"]
    cases: list[tuple[dict[str, object], dict[str, str]]] = [
        (
            {"password": "new-password-1", "passwordConfirm": "new-password-1"},
            {"oldPassword": "validation_required"},
        ),
        (
            {"oldPassword": PASSWORD, "password": "short", "passwordConfirm": "short"},
            {"password": "validation_min_text_constraint"},
        ),
        (
            {"oldPassword": PASSWORD, "password": "new-password-1", "passwordConfirm": "nope"},
            {"passwordConfirm": "validation_values_mismatch"},
        ),
        (
            {"oldPassword": PASSWORD, "password": "new-password-1"},
            {"passwordConfirm": "validation_required"},
        ),
        (
            {
                "oldPassword": "wrong-password",
                "password": "new-password-1",
                "passwordConfirm": "new-password-1",
            },
            {"oldPassword": "validation_invalid_old_password"},
        ),
        ({"name": "Renamed"}, {"name": "validation_not_supported"}),
        ({"email": "other@example.com"}, {"email": "validation_values_mismatch"}),
        ({"verified": True}, {"verified": "validation_values_mismatch"}),
    ]
    for body, errors in cases:
        status, reply = await change(auth_server, created["id"], token, body)
        assert status == 400, body
        assert reply["message"] == "Failed to update record."
        data = reply["data"]
        assert isinstance(data, dict)
        assert {field: item["code"] for field, item in data.items()} == errors, body
    # Nothing changed: the token still works.
    assert await auth_server.authenticator.verify_token(token) is not None


async def test_update_without_changes_returns_the_record(auth_server: AuthServer) -> None:
    created = await auth_server.sign_up("p@example.com", PASSWORD, name="P")
    token = (await auth_server.sign_in("p@example.com", PASSWORD))["token"]
    status, record = await change(
        auth_server, created["id"], token, {"name": "P", "email": "p@example.com"}
    )
    assert status == 200, record
    assert record["email"] == "p@example.com"
    assert await auth_server.authenticator.verify_token(token) is not None


async def test_only_the_owner_may_change_a_password(auth_server: AuthServer) -> None:
    victim = await auth_server.sign_up("q@example.com", PASSWORD)
    await auth_server.sign_up("r@example.com", PASSWORD)
    other_token = (await auth_server.sign_in("r@example.com", PASSWORD))["token"]
    body = {
        "oldPassword": PASSWORD,
        "password": "hijacked-pass",
        "passwordConfirm": "hijacked-pass",
    }
    for token in (other_token, None, "garbage"):
        status, reply = await change(auth_server, victim["id"], token, body)
        assert status == 404
        assert reply == NOT_FOUND
    status, reply = await change(auth_server, "doesnotexist123", other_token, body)
    assert status == 404
    await auth_server.sign_in("q@example.com", PASSWORD)


async def test_a_superuser_changes_passwords_without_the_old_one(auth_server: AuthServer) -> None:
    created = await auth_server.sign_up("s@example.com", PASSWORD)
    user_token = (await auth_server.sign_in("s@example.com", PASSWORD))["token"]
    root = await superuser_token(auth_server)
    status, record = await change(
        auth_server,
        created["id"],
        root,
        {"password": "set-by-the-admin", "passwordConfirm": "set-by-the-admin"},
    )
    assert status == 200, record
    assert await auth_server.authenticator.verify_token(user_token) is None
    await auth_server.sign_in("s@example.com", "set-by-the-admin")


async def test_superuser_records_are_for_superusers(auth_server: AuthServer) -> None:
    root = await superuser_token(auth_server)
    root_identity = await auth_server.authenticator.verify_token(root)
    assert root_identity is not None
    root_id = root_identity.record_id
    created = await auth_server.sign_up("t@example.com", PASSWORD)
    user_token = (await auth_server.sign_in("t@example.com", PASSWORD))["token"]
    status, reply, _ = await auth_server.call(
        "PATCH",
        f"/api/collections/_superusers/records/{root_id}",
        token=user_token,
        json={"password": "x-password-1", "passwordConfirm": "x-password-1"},
    )
    assert status == 403
    assert reply == SUPERUSERS_ONLY
    assert created["id"] != root_id


# --- failed sign-in limits ----------------------------------------------------------------


async def attempt(server: AuthServer, identity: str, password: str) -> tuple[int, object, str]:
    status, reply, response = await server.call(
        "POST",
        "/api/collections/users/auth-with-password",
        json={"identity": identity, "password": password},
    )
    return status, reply, response.headers.get("Retry-After", "")


async def test_too_many_failures_for_one_identity(serve_auth: ServeAuth) -> None:
    server = await serve_auth(failed_signins_per_identity=3, failed_signins_per_address=100)
    await server.sign_up("u@example.com", PASSWORD)
    for _ in range(3):
        status, reply, _ = await attempt(server, "u@example.com", "wrong-password")
        assert (status, reply) == (400, FAILED_TO_AUTHENTICATE)
    # Over the limit: refused even with the right password, whatever the case.
    for identity, password in [("u@example.com", PASSWORD), ("U@Example.com", "wrong-password")]:
        status, reply, retry_after = await attempt(server, identity, password)
        assert status == 429
        assert reply == {
            "status": 429,
            "message": "Too many failed sign-in attempts, try again later.",
            "data": {},
        }
        assert 1 <= int(retry_after) <= 300
    # Another identity from the same address is still fine.
    await server.sign_up("v@example.com", PASSWORD)
    await server.sign_in("v@example.com", PASSWORD)


async def test_too_many_failures_from_one_address(serve_auth: ServeAuth) -> None:
    server = await serve_auth(failed_signins_per_identity=100, failed_signins_per_address=4)
    await server.sign_up("w@example.com", PASSWORD)
    for number in range(4):
        status, _, _ = await attempt(server, f"nobody{number}@example.com", "wrong-password")
        assert status == 400
    status, _, retry_after = await attempt(server, "w@example.com", PASSWORD)
    assert status == 429
    assert int(retry_after) >= 1


async def test_successes_are_not_counted(serve_auth: ServeAuth) -> None:
    server = await serve_auth(failed_signins_per_identity=2, failed_signins_per_address=2)
    await server.sign_up("x@example.com", PASSWORD)
    for _ in range(6):
        await server.sign_in("x@example.com", PASSWORD)


async def test_validation_errors_are_not_counted(serve_auth: ServeAuth) -> None:
    server = await serve_auth(failed_signins_per_identity=2, failed_signins_per_address=2)
    await server.sign_up("y@example.com", PASSWORD)
    for _ in range(5):
        status, _, _ = await attempt(server, "y@example.com", "")
        assert status == 400
    await server.sign_in("y@example.com", PASSWORD)


async def test_wrong_old_passwords_are_counted(serve_auth: ServeAuth) -> None:
    server = await serve_auth(failed_signins_per_identity=2, failed_signins_per_address=100)
    created = await server.sign_up("z@example.com", PASSWORD)
    token = (await server.sign_in("z@example.com", PASSWORD))["token"]
    body = {
        "oldPassword": "guess-guess",
        "password": "new-password-1",
        "passwordConfirm": "new-password-1",
    }
    for _ in range(2):
        status, _ = await change(server, created["id"], token, body)
        assert status == 400
    status, reply = await change(server, created["id"], token, body)
    assert status == 429
    assert reply["message"] == "Too many failed sign-in attempts, try again later."


# --- bodies ---------------------------------------------------------------------------------


async def test_multipart_sign_up_with_json_payload(auth_server: AuthServer) -> None:
    # What the SDKs send when a body holds files: fields in "@jsonPayload".
    form = aiohttp.FormData()
    form.add_field(
        "@jsonPayload",
        json.dumps({"email": "mp@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD}),
    )
    form.add_field("name", "Multi Part")
    status, record, _ = await auth_server.call("POST", "/api/collections/users/records", data=form)
    assert status == 200, record
    assert record["name"] == "Multi Part"


async def test_oversized_body(auth_server: AuthServer) -> None:
    status, reply, _ = await auth_server.call(
        "POST",
        "/api/collections/users/auth-with-password",
        data=io.BytesIO(b'{"identity": "' + b"a" * (2 * 1024 * 1024) + b'"}'),
        headers={"Content-Type": "application/json"},
    )
    assert status == 413
    assert reply == {"status": 413, "message": "Request entity too large.", "data": {}}
