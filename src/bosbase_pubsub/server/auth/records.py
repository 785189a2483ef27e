"""Account records: their JSON shape in responses, and fresh ids and keys.

A record renders as PocketBase renders it::

    {"collectionId": "_pb_users_auth_", "collectionName": "users",
     "created": "2025-01-01 10:00:00.000Z", "email": "a@example.com",
     "emailVisibility": false, "id": "3k1m0zq8x5w2c7v", "name": "",
     "updated": "2025-01-01 10:00:00.000Z", "verified": false}

``email`` is left out unless the record shows it (``emailVisibility``) or the
reader may see it (the owner, a superuser). ``name`` exists on ``users``
only. The password hash and the token key never leave the server.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from ...protocol import format_created
from ..storage.base import AuthRecord
from .collections import AuthCollection, find_collection

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
ID_LENGTH = 15
"""PocketBase's record id length."""


def new_record_id() -> str:
    """A random record id like PocketBase's (15 characters of ``[a-z0-9]``)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))


def new_token_key() -> str:
    """A fresh per-record token key; replacing it revokes the record's tokens."""
    return secrets.token_urlsafe(36)


def timestamp(moment: dt.datetime | None = None) -> str:
    """``created``/``updated`` text for ``moment`` (default: now), in the contract's layout."""
    return format_created(moment or dt.datetime.now(dt.timezone.utc))


def record_json(record: AuthRecord, *, show_email: bool = False) -> dict[str, Any]:
    """The record as the API shows it.

    Args:
        record: the account.
        show_email: show the email even when ``emailVisibility`` is off (the
            reader is the owner or a superuser).
    """
    collection = find_collection(record.collection)
    if collection is None:
        raise ValueError(f"not an auth collection: {record.collection!r}")
    return _render(record, collection, show_email=show_email)


def _render(record: AuthRecord, collection: AuthCollection, *, show_email: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "collectionId": collection.id,
        "collectionName": collection.name,
        "created": record.created,
    }
    if show_email or record.email_visibility:
        data["email"] = record.email
    data["emailVisibility"] = record.email_visibility
    data["id"] = record.id
    if collection.has_name:
        data["name"] = record.name
    data["updated"] = record.updated
    data["verified"] = record.verified
    return data


def auth_json(token: str, record: AuthRecord) -> dict[str, Any]:
    """The body of a successful sign-in or refresh: ``{"token", "record"}``.

    The record is shown to its owner, so its email is included.
    """
    return {"record": record_json(record, show_email=True), "token": token}
