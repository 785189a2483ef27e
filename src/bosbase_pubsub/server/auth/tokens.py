"""Auth tokens: PocketBase-style JWTs, HS256 only.

Claims (PocketBase's)::

    {"collectionId": "_pb_users_auth_", "exp": 1735725600, "id": "<record id>",
     "refreshable": true, "type": "auth"}

Invariants:

- The signing key is the record's ``token_key`` followed by its collection's
  secret. The secret is stored once in the database (``AccountStore.secret``),
  so every node sharing the database signs and verifies alike; the token key
  is replaced on a password change, which revokes every token issued before.
- Verification accepts only ``alg: HS256`` signed with that key, an ``exp``
  in the future and ``type: "auth"``, for a record that still exists.
  Anything else (other algorithms, ``none``, a bad signature, a deleted
  record) yields ``None``, never an exception: a bad token means anonymous.
- Every verification reads the record, so revocation is immediate on every
  node.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from ..storage.base import AccountStore, AuthRecord
from .collections import COLLECTIONS, SUPERUSERS, AuthCollection, find_collection

TokenSource = Literal["header", "query", "cookie", "message"]
"""Where a request carried its token (``message``: an ``auth`` frame on an open socket)."""

ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 4096
"""Longer strings are not our tokens; they are refused before any parsing."""


def secret_name(collection: AuthCollection) -> str:
    """The ``AccountStore.secret`` name holding ``collection``'s signing secret."""
    return f"auth.{collection.name}.tokenSecret"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token says the requester is."""

    record_id: str
    collection_id: str
    collection_name: str
    expires_at: float
    """Unix time (seconds) after which the token, and what it opened, is no longer valid."""
    source: TokenSource
    """Where the token came from: ``header``, ``query``, ``cookie`` or ``message``."""
    refreshable: bool = True
    token_key: str | None = None
    """The record's token key when the token was verified: a password change replaces it,
    and connections signed in before are signed out (``None``: an external token)."""

    @property
    def is_superuser(self) -> bool:
        """Whether the identity is an account of ``_superusers``."""
        return self.collection_id == SUPERUSERS.id


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified token: the identity and the record it belongs to, as read just now."""

    identity: Identity
    record: AuthRecord


class TokenSigner:
    """Issues and verifies auth tokens for the auth collections.

    Call ``load_secrets`` once before ``issue``; ``verify`` needs it too.

    Args:
        accounts: where records and the shared secrets live.
        ttl: how long an issued token stays valid.
    """

    def __init__(self, accounts: AccountStore, *, ttl: dt.timedelta) -> None:
        if ttl <= dt.timedelta(0):
            raise ValueError("the token lifetime must be positive")
        self._accounts = accounts
        self._ttl = ttl
        self._secrets: dict[str, str] = {}

    async def load_secrets(self) -> None:
        """Read each collection's secret, creating it if no node has yet."""
        for collection in COLLECTIONS:
            candidate = secrets.token_urlsafe(48)
            self._secrets[collection.id] = await self._accounts.secret(
                secret_name(collection), candidate
            )

    def _key(self, record: AuthRecord, collection: AuthCollection) -> str:
        try:
            return record.token_key + self._secrets[collection.id]
        except KeyError:
            raise RuntimeError("TokenSigner.load_secrets() was not awaited") from None

    def issue(self, record: AuthRecord, *, now: float | None = None) -> str:
        """A new token for ``record``, valid for the configured lifetime from ``now``."""
        collection = find_collection(record.collection)
        if collection is None:
            raise ValueError(f"not an auth collection: {record.collection!r}")
        issued = time.time() if now is None else now
        claims = {
            "collectionId": collection.id,
            "exp": int(issued + self._ttl.total_seconds()),
            "id": record.id,
            "refreshable": True,
            "type": "auth",
        }
        return jwt.encode(claims, self._key(record, collection), algorithm=ALGORITHM)

    async def verify(self, token: str, *, source: TokenSource = "header") -> Verified | None:
        """The identity ``token`` proves, with its record; ``None`` if it proves nothing.

        Raises ``StoreError`` only when the account store fails.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        unverified = _unverified_claims(token)
        if unverified is None:
            return None
        collection = find_collection(str(unverified.get("collectionId", "")))
        record_id = unverified.get("id")
        if collection is None or collection.id not in self._secrets:
            return None
        if not isinstance(record_id, str) or not record_id:
            return None
        record = await self._accounts.find_by_id(collection.name, record_id)
        if record is None:
            return None
        try:
            claims = jwt.decode(
                token,
                self._key(record, collection),
                algorithms=[ALGORITHM],
                options={"require": ["exp"]},
            )
        except jwt.PyJWTError:
            return None
        # The signed claims must say the same as the ones we looked the record up by.
        if (
            claims.get("type") != "auth"
            or claims.get("id") != record.id
            or claims.get("collectionId") != collection.id
        ):
            return None
        identity = Identity(
            record_id=record.id,
            collection_id=collection.id,
            collection_name=collection.name,
            expires_at=float(claims["exp"]),
            source=source,
            refreshable=claims.get("refreshable") is True,
            token_key=record.token_key,
        )
        return Verified(identity=identity, record=record)


def _unverified_claims(token: str) -> Mapping[str, Any] | None:
    """The claims of an HS256 JWT, before its signature is checked (to find the key)."""
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM:
            return None
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None
