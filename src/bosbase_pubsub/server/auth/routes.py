"""The PocketBase-style auth REST routes, answering in PocketBase's shapes.

=====================================================  ================================
``POST /api/collections/{c}/auth-with-password``       ``{"token", "record"}``
``POST /api/collections/{c}/auth-refresh``             ``{"token", "record"}``
``POST /api/collections/{c}/records``                  the new record (sign-up)
``PATCH /api/collections/{c}/records/{id}``            the record (password change)
=====================================================  ================================

Errors are ``{"status", "message", "data"}`` with PocketBase's messages:

- 400 ``Failed to authenticate.`` (wrong email or password; the two are not told apart),
- 400 ``An error occurred while validating the submitted data.`` / ``Failed to create
  record.`` / ``Failed to update record.`` with field errors in ``data``,
- 401 ``The request requires valid record authorization token.`` (refresh without one),
- 403 ``Only superusers can perform this action.`` (sign-up disabled, ``_superusers``),
- 404 ``Missing or invalid auth collection context.`` / ``Missing collection context.``,
- 429 ``Too many failed sign-in attempts, try again later.`` with ``Retry-After``.

The REST routes read the token from the ``Authorization`` header only, as
PocketBase does: a cookie must not be enough to change a password.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..errors import api_error, json_response
from ..storage.base import StoreError
from .accounts import change_password, create_from_form
from .authenticator import AUTHENTICATOR_KEY, Authenticator
from .collections import AuthCollection, find_collection
from .errors import InvalidInputError, UnreadableBodyError
from .forms import (
    INVALID_OLD_PASSWORD,
    parse_password_change,
    parse_sign_in,
)
from .ratelimit import retry_after_header
from .records import auth_json, record_json

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, authenticator: Authenticator) -> None:
    """Register the auth routes on ``app`` and make ``identify(request)`` work in it.

    Routes (PocketBase's; ``{collection}`` is ``users`` or ``_superusers``, by
    name or id):

    - ``POST /api/collections/{collection}/auth-with-password``
    - ``POST /api/collections/{collection}/auth-refresh``
    - ``POST /api/collections/{collection}/records`` (sign-up)
    - ``PATCH /api/collections/{collection}/records/{id}`` (password change)
    """
    app[AUTHENTICATOR_KEY] = authenticator
    AuthRoutes(authenticator).register(app.router)


FAILED_TO_AUTHENTICATE = "Failed to authenticate."
REQUIRES_AUTH = "The request requires valid record authorization token."
TOO_MANY_FAILURES = "Too many failed sign-in attempts, try again later."
SUPERUSERS_ONLY = "Only superusers can perform this action."
NOT_FOUND = "The requested resource wasn't found."


def too_many_failures(wait: float) -> web.Response:
    """The 429 answer to an address or identity over its failed sign-in limit."""
    response = api_error(429, TOO_MANY_FAILURES)
    response.headers["Retry-After"] = retry_after_header(wait)
    return response


async def read_body(request: web.Request) -> dict[str, Any]:
    """The body as a mapping: a JSON object, or a form (``@jsonPayload`` merged in).

    An empty body is an empty mapping. Raises ``UnreadableBodyError`` for anything
    else, and aiohttp's ``HTTPRequestEntityTooLarge`` past ``client_max_size``.
    """
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.post()
        except ValueError:  # a malformed form (aiohttp's "too large" error is not one)
            raise UnreadableBodyError("the form cannot be parsed") from None
        body: dict[str, Any] = {}
        for key, value in form.items():
            if key == "@jsonPayload" and isinstance(value, str):
                try:
                    payload = orjson.loads(value)
                except orjson.JSONDecodeError:
                    raise UnreadableBodyError("@jsonPayload is not valid JSON") from None
                if not isinstance(payload, dict):
                    raise UnreadableBodyError("@jsonPayload is not a JSON object")
                body.update(payload)
            elif isinstance(value, str):
                body[key] = value
        return body
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UnreadableBodyError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise UnreadableBodyError("the body is not a JSON object")
    return data


def _guarded(handler: Handler) -> Handler:
    """Turn store failures and oversized bodies into PocketBase-shaped errors."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return api_error(413, "Request entity too large.")
        except StoreError:
            logger.exception(
                "auth: the account store failed on %s %s", request.method, request.path
            )
            return api_error(500, "Something went wrong while processing your request.")

    return guarded


class AuthRoutes:
    """The route handlers, bound to one ``Authenticator``."""

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    def register(self, router: web.UrlDispatcher) -> None:
        """Add the four routes to ``router``."""
        base = "/api/collections/{collection}"
        router.add_post(f"{base}/auth-with-password", _guarded(self.auth_with_password))
        router.add_post(f"{base}/auth-refresh", _guarded(self.auth_refresh))
        router.add_post(f"{base}/records", _guarded(self.create_record))
        router.add_patch(f"{base}/records/{{id}}", _guarded(self.update_record))

    @staticmethod
    def _collection(request: web.Request) -> AuthCollection | None:
        return find_collection(request.match_info["collection"])

    async def auth_with_password(self, request: web.Request) -> web.Response:
        """Sign in with ``{"identity", "password"}`` (the identity is the email)."""
        collection = self._collection(request)
        if collection is None:
            return api_error(404, "Missing or invalid auth collection context.")
        try:
            form = parse_sign_in(await read_body(request))
        except UnreadableBodyError:
            return api_error(400, "An error occurred while loading the submitted data.")
        except InvalidInputError as error:
            return api_error(
                400, "An error occurred while validating the submitted data.", error.to_json()
            )

        auth = self._auth
        address, identity = request.remote or "", form.identity_key
        wait = auth.limiter.begin(address, identity)
        if wait is not None:
            logger.info("auth: sign-in refused for %s (too many failures)", address)
            return too_many_failures(wait)
        matched: bool | None = None
        try:
            # No account holds a NUL (emails are validated), and PostgreSQL text cannot.
            record = (
                None
                if "\x00" in form.identity
                else await auth.accounts.find_by_email(collection.name, form.identity)
            )
            matched = await auth.check_password(record, form.password)
        finally:
            auth.limiter.end(address, identity, failed=matched is False)
        if record is None or not matched:
            return api_error(400, FAILED_TO_AUTHENTICATE)
        return json_response(auth_json(auth.issue_token(record), record))

    async def auth_refresh(self, request: web.Request) -> web.Response:
        """A new token for the record the ``Authorization`` token belongs to."""
        verified = await self._auth.resolve(request, allow_query_and_cookie=False)
        if verified is None:
            return api_error(401, REQUIRES_AUTH)
        collection = self._collection(request)
        identity = verified.identity
        if collection is None or collection.id != identity.collection_id:
            return api_error(
                403, f"The request requires auth record from {identity.collection_name} collection."
            )
        if not identity.refreshable:
            return api_error(403, "The current auth token is not refreshable.")
        return json_response(auth_json(self._auth.issue_token(verified.record), verified.record))

    async def create_record(self, request: web.Request) -> web.Response:
        """Sign up: create an account (superusers may create in either collection)."""
        collection = find_collection(request.match_info["collection"])
        if collection is None:
            return api_error(404, "Missing collection context.")
        verified = await self._auth.resolve(request, allow_query_and_cookie=False)
        manager = verified is not None and verified.identity.is_superuser
        if not manager and (collection.is_superusers or not self._auth.settings.signup):
            return api_error(403, SUPERUSERS_ONLY)
        try:
            body = await read_body(request)
            record = await create_from_form(
                self._auth.accounts, self._auth.hasher, collection, body, manager=manager
            )
        except UnreadableBodyError:
            return api_error(400, "Failed to read the submitted data.")
        except InvalidInputError as error:
            return api_error(400, "Failed to create record.", error.to_json())
        return json_response(record_json(record, show_email=manager))

    async def update_record(self, request: web.Request) -> web.Response:
        """Change a password: the owner with ``oldPassword``, or a superuser without."""
        collection = find_collection(request.match_info["collection"])
        if collection is None:
            return api_error(404, "Missing collection context.")
        record_id = request.match_info["id"]
        verified = await self._auth.resolve(request, allow_query_and_cookie=False)
        identity = None if verified is None else verified.identity
        manager = identity is not None and identity.is_superuser
        if collection.is_superusers and not manager:
            return api_error(403, SUPERUSERS_ONLY)
        owner = (
            identity is not None
            and identity.collection_id == collection.id
            and identity.record_id == record_id
        )
        if not (manager or owner):
            # PocketBase's users update rule (id = @request.auth.id) filters the
            # record out: others cannot even learn that it exists.
            return api_error(404, NOT_FOUND)
        record = await self._auth.accounts.find_by_id(collection.name, record_id)
        if record is None:
            return api_error(404, NOT_FOUND)
        try:
            change = parse_password_change(
                await read_body(request), record, collection, manager=manager
            )
        except UnreadableBodyError:
            return api_error(400, "Failed to read the submitted data.")
        except InvalidInputError as error:
            return api_error(400, "Failed to update record.", error.to_json())
        if change is None:
            return json_response(record_json(record, show_email=True))

        if change.old_password is not None:
            limiter = self._auth.limiter
            address, key = request.remote or "", record.email.lower()
            wait = limiter.begin(address, key)
            if wait is not None:
                return too_many_failures(wait)
            matched: bool | None = None
            try:
                matched = await self._auth.check_password(record, change.old_password)
            finally:
                limiter.end(address, key, failed=matched is False)
            if not matched:
                return api_error(
                    400, "Failed to update record.", {"oldPassword": INVALID_OLD_PASSWORD.to_json()}
                )
        record = await change_password(
            self._auth.accounts, self._auth.hasher, record, change.password
        )
        logger.info("auth: password changed for %s/%s", collection.name, record.id)
        return json_response(record_json(record, show_email=True))
