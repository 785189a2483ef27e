"""Tokens minted by the user's own backend ("bring your own auth").

Configured by ``ExternalAuth``: a shared HMAC secret, a JWKS URL with the
backend's public keys, or both. A token is accepted when, and only when:

- its header's ``alg`` is one of the accepted algorithms (never ``none``; an
  HMAC ``alg`` is checked with the secret, a public-key ``alg`` with a JWKS key,
  so a public key can never be used as an HMAC secret);
- for a JWKS key: the key has the token's ``kid`` (a set with one key may omit
  it), is not a symmetric (``oct``) key, and its published ``alg``, if any, is
  the token's;
- the signature is valid, ``exp`` is present and in the future, ``nbf`` and
  ``iat`` (when present) are not in the future, ``iss`` is the configured
  issuer (when configured), ``aud`` holds the configured audience (and a token
  with an ``aud`` is refused when none is configured);
- the user claim is a non-empty string (or integer) of at most 256 characters
  without ``/``, ``*`` or whitespace, so that it can stand for a topic segment.

Anything else gives ``None``: a bad token means anonymous, as for the built-in
tokens. The JWKS is fetched at the first token that needs it, refetched when a
token names an unknown ``kid`` (at most once a second, so a flood of made-up
``kid`` values cannot hammer the backend) and when it is older than
``MAX_KEY_AGE``. A fetch that fails or times out never lets a token through:
an unknown ``kid`` stays unknown, and keys from the last good fetch are used
at most ``MAX_STALE_AGE`` after it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import jwt
import orjson

from ..config import HMAC_ALGORITHMS, KEY_ALGORITHMS, ExternalAuth
from .tokens import MAX_TOKEN_LENGTH, Identity, TokenSource

log = logging.getLogger(__name__)

MIN_REFETCH_INTERVAL = 1.0
"""Seconds between two JWKS fetches caused by unknown ``kid`` values."""
MAX_KEY_AGE = 300.0
"""Seconds after which the JWKS is fetched again before its keys are used."""
MAX_STALE_AGE = 3600.0
"""Seconds after the last good fetch during which its keys still serve while fetches fail."""
MAX_JWKS_BYTES = 512 * 1024
_USER_ID = re.compile(r"[^/*\s]{1,256}")


def external_collection_id(collection: str) -> str:
    """The ``Identity.collection_id`` of external identities (never a built-in collection's)."""
    return f"external:{collection}"


class JwksKeys:
    """The public keys of one JWKS URL, fetched with aiohttp and cached by ``kid``."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.fetches = 0
        """JWKS requests made (successful or not), for tests and logs."""
        self._keys: dict[str, Mapping[str, Any]] = {}
        """The last good set's keys by ``kid`` (``""`` for a key without one)."""
        self._fetched_at = float("-inf")
        """``time.monotonic()`` of the last good fetch."""
        self._tried_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str, alg: str) -> jwt.PyJWK | None:
        """The key to check a token with ``kid`` and ``alg``; ``None`` if there is none."""
        now = time.monotonic()
        if now - self._fetched_at > MAX_KEY_AGE or kid not in self._keys:
            await self._refresh(unknown_kid=kid not in self._keys)
        if time.monotonic() - self._fetched_at > MAX_STALE_AGE:
            return None
        jwk = self._keys.get(kid)
        if jwk is None and not kid and len(self._keys) == 1:
            jwk = next(iter(self._keys.values()))  # a set of one key may leave out the kid
        if jwk is None or jwk.get("kty") == "oct" or jwk.get("alg", alg) != alg:
            return None
        try:
            return jwt.PyJWK(dict(jwk), algorithm=alg)  # fails when the key type does not fit alg
        except jwt.PyJWTError:
            return None

    async def _refresh(self, *, unknown_kid: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            if now - self._tried_at < MIN_REFETCH_INTERVAL:
                return  # someone just fetched (or failed to): use what that gave
            if not unknown_kid and now - self._fetched_at <= MAX_KEY_AGE:
                return
            self._tried_at = now
            self.fetches += 1
            try:
                keys = await self._fetch()
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                log.warning("cannot fetch the JWKS %s: %s", self.url, error)
                return
            self._keys, self._fetched_at = keys, time.monotonic()

    async def _fetch(self) -> dict[str, Mapping[str, Any]]:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await response.content.read(MAX_JWKS_BYTES + 1)
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError("the key set is too large")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise ValueError("the key set is not JSON") from error
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError('the key set has no "keys" list')
        keys: dict[str, Mapping[str, Any]] = {}
        for entry in entries:
            if isinstance(entry, dict) and entry.get("use", "sig") == "sig":
                keys[str(entry.get("kid", ""))] = entry
        return keys


class ExternalTokens:
    """Verifies the tokens of the user's backend as configured by ``settings``."""

    def __init__(self, settings: ExternalAuth) -> None:
        settings.check()
        self.settings = settings
        self.algorithms = frozenset(settings.accepted_algorithms)
        self.jwks = (
            JwksKeys(settings.jwks_url, timeout=settings.jwks_timeout)
            if settings.jwks_url
            else None
        )

    async def verify(self, token: str, *, source: TokenSource = "header") -> Identity | None:
        """The identity ``token`` proves, or ``None`` (see the module for the rules)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            return None
        key: Any
        if alg in HMAC_ALGORITHMS:
            key = self.settings.secret
        elif alg in KEY_ALGORITHMS and self.jwks is not None:
            kid = header.get("kid", "")
            found = await self.jwks.key(kid if isinstance(kid, str) else "", alg)
            if found is None:
                return None
            key = found.key
        else:
            return None
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=settings.audience or None,
                issuer=settings.issuer or None,
                options={"require": ["exp", *(["iss"] if settings.issuer else [])]},
            )
        except jwt.PyJWTError:
            return None
        user = claims.get(settings.user_claim)
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)
        if not isinstance(user, str) or not _USER_ID.fullmatch(user):
            return None
        return Identity(
            record_id=user,
            collection_id=external_collection_id(settings.collection),
            collection_name=settings.collection,
            expires_at=float(claims["exp"]),
            source=source,
            refreshable=False,
        )


def mint(settings: ExternalAuth, user: str, *, ttl: float, now: float | None = None) -> str:
    """A token for ``user`` signed with ``settings.secret`` (``gentoken``: for tests and demos).

    Raises ``ValueError`` when no secret is configured.
    """
    if not settings.secret:
        raise ValueError("gentoken needs --jwt-secret (a JWKS backend mints its own tokens)")
    alg = next((a for a in settings.accepted_algorithms if a in HMAC_ALGORITHMS), None)
    if alg is None:
        raise ValueError("--jwt-algorithms has no HMAC algorithm to sign with")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {settings.user_claim: user, "iat": issued, "exp": issued + int(ttl)}
    if settings.issuer:
        claims["iss"] = settings.issuer
    if settings.audience:
        claims["aud"] = settings.audience
    return jwt.encode(claims, settings.secret, algorithm=alg)
