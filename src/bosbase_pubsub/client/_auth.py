"""The auth store: the token and record a client signs its requests with.

One store per client (or shared by several). Sign-in and refresh save into
it; every HTTP request and every WebSocket handshake reads it; a change tells
the pub/sub connection to reconnect with the new identity. It is thread-safe,
and its change callbacks run in the thread that made the change.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, cast
from urllib.parse import quote, unquote

import orjson

from ._types import AuthRecord

__all__ = ["AuthStore"]

log = logging.getLogger("bosbase_pubsub.client")

SUPERUSERS_COLLECTION_ID = "pbc_3142635823"
COOKIE_KEY = "pb_auth"
MAX_COOKIE_BYTES = 4096

ChangeCallback = Callable[[str, "AuthRecord | None"], object]
"""Called with ``(token, record)`` after every ``save`` and ``clear``."""


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without checking its signature (the server does that)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    segment = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(segment))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


class AuthStore:
    """Holds the current ``token`` and ``record``.

    Args:
        token: an initial token (e.g. a service token from the environment).
        record: the record it belongs to, if known.
    """

    def __init__(self, token: str = "", record: AuthRecord | None = None) -> None:
        self._lock = threading.Lock()
        self._token = token
        self._record = record
        self._callbacks: list[ChangeCallback] = []

    @property
    def token(self) -> str:
        """The auth token, or ``""`` when signed out."""
        return self._token

    @property
    def record(self) -> AuthRecord | None:
        """The signed-in account, or ``None``."""
        return self._record

    @property
    def is_valid(self) -> bool:
        """A token is stored and has not expired (judged by its ``exp`` claim)."""
        if not self._token:
            return False
        expires = token_claims(self._token).get("exp")
        return isinstance(expires, int | float) and expires > time.time()

    @property
    def is_superuser(self) -> bool:
        """The token belongs to a ``_superusers`` account."""
        claims = token_claims(self._token)
        if claims.get("type") == "auth" and claims.get("collectionId") == SUPERUSERS_COLLECTION_ID:
            return True
        record = self._record
        return record is not None and record.get("collectionName") == "_superusers"

    def save(self, token: str, record: AuthRecord | None = None) -> None:
        """Store a new token (and record) and tell every ``on_change`` callback."""
        with self._lock:
            self._token = token
            self._record = record
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(token, record)
            except Exception:
                log.exception("an auth store change callback failed")

    def clear(self) -> None:
        """Sign out: forget the token and record."""
        self.save("", None)

    def on_change(
        self, callback: ChangeCallback, *, fire_immediately: bool = False
    ) -> Callable[[], None]:
        """Call ``callback(token, record)`` after every change; returns a remover.

        Args:
            callback: runs in the thread that changed the store; exceptions are logged.
            fire_immediately: also call it once now with the current values.
        """
        with self._lock:
            self._callbacks.append(callback)
        if fire_immediately:
            callback(self._token, self._record)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    # --- the pb_auth cookie ------------------------------------------------------------

    def export_to_cookie(
        self,
        *,
        key: str = COOKIE_KEY,
        path: str = "/",
        secure: bool = True,
        http_only: bool = True,
        same_site: Literal["Strict", "Lax", "None"] | None = "Strict",
    ) -> str:
        """A ``Set-Cookie`` header value carrying the token and record, as PocketBase's.

        The value is URL-encoded JSON ``{"token", "record"}``; it expires with
        the token. A record that would make the cookie longer than 4096 bytes
        is cut down to its id, email, collection and verified flag.
        """
        record: dict[str, Any] | None = cast("dict[str, Any] | None", self._record)
        value = quote(orjson.dumps({"token": self._token, "record": record}).decode(), safe="")
        attributes = [f"Path={path}"]
        expires = token_claims(self._token).get("exp")
        if isinstance(expires, int | float):
            attributes.append(f"Expires={email.utils.formatdate(expires, usegmt=True)}")
        else:
            attributes.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if http_only:
            attributes.append("HttpOnly")
        if secure:
            attributes.append("Secure")
        if same_site is not None:
            attributes.append(f"SameSite={same_site}")
        cookie = "; ".join([f"{key}={value}", *attributes])
        if len(cookie.encode()) > MAX_COOKIE_BYTES and record is not None:
            keep = ("id", "email", "collectionId", "collectionName", "verified")
            small = {name: record[name] for name in keep if name in record}
            value = quote(orjson.dumps({"token": self._token, "record": small}).decode(), safe="")
            cookie = "; ".join([f"{key}={value}", *attributes])
        return cookie

    def load_from_cookie(self, cookie: str, *, key: str = COOKIE_KEY) -> None:
        """Load the token and record from a ``Cookie`` header (or ``export_to_cookie``'s
        value); a missing or unreadable cookie signs out."""
        raw = ""
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == key:
                raw = value
                break
        data: Any = {}
        if raw:
            try:
                data = orjson.loads(unquote(raw))
            except orjson.JSONDecodeError:
                data = {}
        if not isinstance(data, dict):
            data = {}
        token = data.get("token")
        record = data.get("record") or data.get("model")
        self.save(
            token if isinstance(token, str) else "",
            cast(AuthRecord, record) if isinstance(record, dict) else None,
        )
