"""The auth store on its own (no server): tokens, callbacks, the pb_auth cookie."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any
from urllib.parse import unquote

from bosbase_pubsub import AuthRecord, AuthStore

RECORD: AuthRecord = {
    "id": "abc123def456ghi",
    "collectionId": "_pb_users_auth_",
    "collectionName": "users",
    "created": "2026-01-01 00:00:00.000Z",
    "updated": "2026-01-01 00:00:00.000Z",
    "verified": False,
    "emailVisibility": False,
    "email": "ada@example.com",
    "name": "Ada",
}


def jwt(**claims: Any) -> str:
    """An unsigned JWT-shaped token (the store reads claims, the server checks them)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.signature"


def test_a_new_store_is_signed_out() -> None:
    store = AuthStore()
    assert store.token == ""
    assert store.record is None
    assert not store.is_valid
    assert not store.is_superuser


def test_is_valid_reads_the_expiry_of_the_token() -> None:
    store = AuthStore(jwt(exp=time.time() + 60, type="auth"))
    assert store.is_valid
    store.save(jwt(exp=time.time() - 1))
    assert not store.is_valid
    store.save("not-a-jwt")
    assert not store.is_valid


def test_superusers_are_recognised_by_collection_id() -> None:
    store = AuthStore(jwt(type="auth", collectionId="pbc_3142635823", exp=time.time() + 60))
    assert store.is_superuser
    store.save(jwt(type="auth", collectionId="_pb_users_auth_"), RECORD)
    assert not store.is_superuser


def test_change_callbacks_run_in_order_and_can_be_removed() -> None:
    store = AuthStore()
    seen: list[tuple[str, Any]] = []
    remove = store.on_change(lambda token, record: seen.append((token, record)))
    store.on_change(lambda token, record: seen.append(("second", token)))
    store.save("t1", RECORD)
    remove()
    store.clear()
    assert seen == [("t1", RECORD), ("second", "t1"), ("second", "")]
    assert store.token == ""
    assert store.record is None


def test_a_failing_callback_does_not_stop_the_others(caplog: Any) -> None:
    store = AuthStore()
    seen: list[str] = []

    def broken(token: str, record: Any) -> None:
        raise RuntimeError("callback bug")

    store.on_change(broken)
    store.on_change(lambda token, record: seen.append(token))
    store.save("t")
    assert seen == ["t"]
    assert "callback failed" in caplog.text


def test_fire_immediately_calls_with_the_current_values() -> None:
    store = AuthStore("tok", RECORD)
    seen: list[str] = []
    store.on_change(lambda token, record: seen.append(token), fire_immediately=True)
    assert seen == ["tok"]


def test_the_store_is_safe_to_change_from_many_threads() -> None:
    store = AuthStore()
    count = 0
    lock = threading.Lock()

    def counted(token: str, record: Any) -> None:
        nonlocal count
        with lock:
            count += 1

    store.on_change(counted)
    threads = [
        threading.Thread(target=lambda n=n: [store.save(f"t{n}") for _ in range(100)])
        for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert count == 800


def test_the_cookie_round_trips_and_expires_with_the_token() -> None:
    expires = 2_000_000_000
    token = jwt(exp=expires, type="auth")
    cookie = AuthStore(token, RECORD).export_to_cookie()
    name, _, rest = cookie.partition("=")
    assert name == "pb_auth"
    value, *attributes = rest.split("; ")
    assert json.loads(unquote(value)) == {"token": token, "record": RECORD}
    assert "Path=/" in attributes
    assert "HttpOnly" in attributes
    assert "Secure" in attributes
    assert "SameSite=Strict" in attributes
    assert "Expires=Wed, 18 May 2033 03:33:20 GMT" in attributes
    loaded = AuthStore()
    loaded.load_from_cookie(f"theme=dark; {cookie.split(';')[0]}; lang=en")
    assert loaded.token == token
    assert loaded.record == RECORD


def test_a_large_record_is_cut_down_to_fit_a_cookie() -> None:
    big: Any = {**RECORD, "bio": "x" * 5000}
    cookie = AuthStore(jwt(exp=2_000_000_000), big).export_to_cookie(secure=False)
    assert len(cookie) <= 4096
    assert "Secure" not in cookie
    value = json.loads(unquote(cookie.split(";")[0].partition("=")[2]))
    assert set(value["record"]) == {"id", "email", "collectionId", "collectionName", "verified"}


def test_a_missing_or_broken_cookie_signs_out() -> None:
    store = AuthStore("tok", RECORD)
    store.load_from_cookie("pb_auth=%7Bnot-json")
    assert store.token == ""
    store.save("tok")
    store.load_from_cookie("other=1")
    assert store.token == ""
