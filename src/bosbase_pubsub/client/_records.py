"""The record API (PocketBase-style accounts) over HTTP, for both clients.

Each verb is described once, as an ``ApiCall`` (method, path, body, how to
read the answer). ``BosBase`` sends calls with ``httpx.Client`` and
``AsyncBosBase`` with ``httpx.AsyncClient``; the answer is read by the same
``read_response`` for both, so the twins cannot drift.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast
from urllib.parse import quote

import httpx
import orjson

from ._exceptions import BosBaseError, RequestTimeout, ServerError, api_error, transport_error
from ._types import AuthRecord, AuthResponse

if TYPE_CHECKING:
    from ._auth import AuthStore

__all__ = ["ApiCall", "AsyncRecordService", "RecordService"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ApiCall(Generic[T]):
    """One HTTP request of the record API and how to read its answer."""

    method: str
    path: str
    read: Callable[[Any], T]
    json: Mapping[str, Any] | None = None
    query: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    auth_call: bool = False
    """A sign-in or refresh: a refusal is an ``AuthError``, a success is saved."""


def _collection_path(collection: str, suffix: str) -> str:
    if not collection or not isinstance(collection, str):
        raise ValueError("collection must be a non-empty string")
    return f"/api/collections/{quote(collection, safe='')}/{suffix}"


def _read_auth(body: Any) -> AuthResponse:
    if not (isinstance(body, dict) and isinstance(body.get("token"), str)):
        raise ServerError("the server's sign-in answer has no token")
    record = body.get("record")
    return {"token": body["token"], "record": cast(AuthRecord, record or {})}


def _read_record(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ServerError("the server's answer is not a record")
    return body


def auth_with_password_call(
    collection: str,
    identity: str,
    password: str,
    *,
    body: Mapping[str, Any] | None,
    query: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
) -> ApiCall[AuthResponse]:
    return ApiCall(
        "POST",
        _collection_path(collection, "auth-with-password"),
        _read_auth,
        json={**(body or {}), "identity": identity, "password": password},
        query=query,
        headers=headers or {},
        auth_call=True,
    )


def auth_refresh_call(
    collection: str,
    *,
    body: Mapping[str, Any] | None,
    query: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
) -> ApiCall[AuthResponse]:
    return ApiCall(
        "POST",
        _collection_path(collection, "auth-refresh"),
        _read_auth,
        json=body,
        query=query,
        headers=headers or {},
        auth_call=True,
    )


def create_call(
    collection: str,
    body: Mapping[str, Any],
    *,
    query: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
) -> ApiCall[dict[str, Any]]:
    return ApiCall(
        "POST",
        _collection_path(collection, "records"),
        _read_record,
        json=dict(body),
        query=query,
        headers=headers or {},
    )


def build_request(http: httpx.Client | httpx.AsyncClient, call: ApiCall[Any], token: str) -> Any:
    """The ``httpx.Request`` for ``call``, signed with ``token`` when there is one."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = token
    headers.update(call.headers)
    content = None
    if call.json is not None:
        headers["Content-Type"] = "application/json"
        content = orjson.dumps(call.json)
    return http.build_request(
        call.method, call.path, params=call.query, headers=headers, content=content
    )


def read_response(call: ApiCall[T], status: int, content: bytes) -> T:
    """The call's result, or the ``ServerError``/``AuthError`` the server's answer means."""
    try:
        body: Any = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        body = None
    if status >= 400:
        raise api_error(status, body, auth_call=call.auth_call)
    return call.read(body)


def read_answer(call: ApiCall[T], response: httpx.Response, auth_store: AuthStore) -> T:
    """``read_response`` for a sent call; a sign-in's token and record go to ``auth_store``."""
    result = read_response(call, response.status_code, response.content)
    if call.auth_call:
        auth = cast(AuthResponse, result)
        auth_store.save(auth["token"], auth["record"])
    return result


def send_failed(error: httpx.HTTPError, base_url: str, timeout: float) -> BosBaseError:
    """The error to raise when sending a call to ``base_url`` failed with ``error``."""
    if isinstance(error, httpx.TimeoutException):
        return RequestTimeout(f"no answer from {base_url} within {timeout:g}s")
    return transport_error(error, action=f"reach {base_url}")


# --- the per-collection services ----------------------------------------------------


class _SyncSender(Protocol):
    def _send(self, call: ApiCall[T]) -> T: ...


class _AsyncSender(Protocol):
    def _send(self, call: ApiCall[T]) -> Awaitable[T]: ...


class RecordService:
    """The record API of one collection, for ``BosBase`` (``client.collection(name)``)."""

    def __init__(self, client: _SyncSender, name: str) -> None:
        self._client = client
        self.name = name

    def auth_with_password(
        self,
        identity: str,
        password: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AuthResponse:
        """Sign in with an email and password; saves the token in ``client.auth_store``
        (which reconnects an open pub/sub socket with the new identity).

        Raises ``AuthError`` for wrong credentials (``Failed to authenticate.``),
        ``ServerError`` for other refusals (e.g. 429 after too many failures).
        """
        call = auth_with_password_call(
            self.name, identity, password, body=body, query=query, headers=headers
        )
        return self._client._send(call)

    def auth_refresh(
        self,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AuthResponse:
        """Trade the stored token for a fresh one (and the current record), and save it.

        Raises ``AuthError`` when the stored token is missing, invalid or not refreshable.
        """
        return self._client._send(
            auth_refresh_call(self.name, body=body, query=query, headers=headers)
        )

    def create(
        self,
        body: Mapping[str, Any],
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a record: sign-up on ``users`` with ``email``, ``password``,
        ``passwordConfirm`` (and optionally ``name``, ``emailVisibility``).

        Returns the new record. Does not sign in. Raises ``ServerError`` with
        the per-field problems in ``data`` (e.g. ``validation_not_unique``).
        """
        return self._client._send(create_call(self.name, body, query=query, headers=headers))


class AsyncRecordService:
    """The record API of one collection, for ``AsyncBosBase``: ``RecordService``, awaited."""

    def __init__(self, client: _AsyncSender, name: str) -> None:
        self._client = client
        self.name = name

    async def auth_with_password(
        self,
        identity: str,
        password: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AuthResponse:
        """See ``RecordService.auth_with_password``."""
        call = auth_with_password_call(
            self.name, identity, password, body=body, query=query, headers=headers
        )
        return await self._client._send(call)

    async def auth_refresh(
        self,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AuthResponse:
        """See ``RecordService.auth_refresh``."""
        return await self._client._send(
            auth_refresh_call(self.name, body=body, query=query, headers=headers)
        )

    async def create(
        self,
        body: Mapping[str, Any],
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """See ``RecordService.create``."""
        return await self._client._send(create_call(self.name, body, query=query, headers=headers))
