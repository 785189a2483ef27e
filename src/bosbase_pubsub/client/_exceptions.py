"""Every error the SDK raises, rooted in one class.

::

    BosBaseError
    ├── TransportError          the server could not be reached, or the socket broke
    │   └── ConnectionClosed    the connection closed before the reply came
    ├── RequestTimeout          no reply within the timeout (also a TimeoutError)
    ├── ServerError             the server refused the request; ``message`` is its text
    │   └── AuthError           ... because of who you are (sign-in failed, publish
    │                           needs a token, token not refreshable, ...)
    └── ClientError             you misused the client
        ├── ClientClosed        the client was closed
        └── InvalidRequest      the request cannot be sent (also a ValueError)

Third-party exceptions (httpx, websockets, ``OSError``) are translated here and
nowhere else, so callers never have to import those libraries to catch errors.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from .. import protocol

__all__ = [
    "AuthError",
    "BosBaseError",
    "ClientClosed",
    "ClientError",
    "ConnectionClosed",
    "InvalidRequest",
    "RequestTimeout",
    "ServerError",
    "TransportError",
]


class BosBaseError(Exception):
    """The root of every error the SDK raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        """A sentence for humans; for ``ServerError`` exactly the server's text."""

    def __str__(self) -> str:
        return self.message


class TransportError(BosBaseError):
    """The server could not be reached, or the connection to it failed."""


class ConnectionClosed(TransportError):  # noqa: N818 - named for what happened
    """The connection closed while a request waited for its reply.

    For a publish, the outcome is unknown: the server may have stored the
    message before the connection dropped. The SDK does not send it again by
    itself (that could store it twice); retry if a duplicate is acceptable.
    """

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        """The WebSocket close code, when the server sent one (e.g. 1001, 1013)."""
        self.reason = reason


class RequestTimeout(BosBaseError, TimeoutError):  # noqa: N818 - named for what happened
    """No reply came within the request's timeout (``Timeouts.request`` by default)."""


class ServerError(BosBaseError):
    """The server answered the request with an error.

    ``message`` is the server's own text, e.g. ``topic must be set`` (a pub/sub
    ``error`` reply) or ``Failed to create record.`` (an HTTP API error).
    """

    def __init__(
        self, message: str, *, status: int | None = None, data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status of an API error; ``None`` for a pub/sub ``error`` reply."""
        self.data: dict[str, Any] = data or {}
        """PocketBase's per-field errors, e.g. ``{"email": {"code": ..., "message": ...}}``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


class AuthError(ServerError):
    """The server refused the request because of the caller's identity.

    Raised for a failed sign-in, a refresh without a valid token, a publish on
    a connection without a token (``authentication required to publish``) and
    the HTTP statuses 401 and 403.
    """


class ClientError(BosBaseError):
    """The client was used in a way it cannot serve."""


class ClientClosed(ClientError):  # noqa: N818 - named for what happened
    """The client (or the request's connection) was closed by the application."""


class InvalidRequest(ClientError, ValueError):  # noqa: N818 - named for what happened
    """The request cannot be sent as given.

    The messages are the server's own where it has one (``topic must be set``,
    ``payload too large``, ``payload must be valid JSON``), checked before
    anything is sent.
    """


# --- translation of third-party errors ----------------------------------------------


def server_error(message: str) -> ServerError:
    """The exception for a pub/sub ``error`` reply carrying ``message``."""
    if message == protocol.ERR_AUTH_REQUIRED:
        return AuthError(message)
    return ServerError(message)


def api_error(status: int, body: Any, *, auth_call: bool = False) -> ServerError:
    """The exception for an HTTP API error response (PocketBase's error body).

    Args:
        status: the HTTP status.
        body: the decoded JSON body, or anything else when it was not JSON.
        auth_call: the request was a sign-in or refresh, where a 400 means
            the credentials were refused.
    """
    message = ""
    data: dict[str, Any] = {}
    if isinstance(body, dict):
        text = body.get("message")
        message = text if isinstance(text, str) else ""
        fields = body.get("data")
        data = fields if isinstance(fields, dict) else {}
    if not message:
        message = f"the server answered with HTTP {status}"
    if status in (401, 403) or (auth_call and status == 400 and not data):
        return AuthError(message, status=status, data=data)
    return ServerError(message, status=status, data=data)


def transport_error(exc: BaseException, *, action: str = "connect") -> TransportError:
    """A readable ``TransportError`` for a failure of httpx, websockets or the socket layer."""
    # Imported here: this module is imported first by everything else, and the
    # translations are the only reason it knows these libraries.
    import httpx
    from websockets.exceptions import ConnectionClosed as WsConnectionClosed
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return TransportError(f"the server refused the WebSocket upgrade with HTTP {status}")
    if isinstance(exc, InvalidHandshake):
        return TransportError(f"the WebSocket handshake failed: {exc}")
    if isinstance(exc, WsConnectionClosed):
        rcvd = exc.rcvd
        code = rcvd.code if rcvd is not None else None
        reason = rcvd.reason if rcvd is not None else ""
        return ConnectionClosed(describe_close(code, reason), code=code, reason=reason)
    if isinstance(exc, httpx.HTTPError):
        return TransportError(f"could not {action}: {exc or type(exc).__name__}")
    if isinstance(exc, ssl.SSLError):
        return TransportError(f"TLS failed: {exc}")
    if isinstance(exc, socket.gaierror):
        return TransportError(f"could not resolve the server's name: {exc}")
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc) or type(exc).__name__
        return TransportError(f"could not {action}: {text}")
    return TransportError(f"could not {action}: {exc!r}")


def describe_close(code: int | None, reason: str) -> str:
    """A sentence for a WebSocket close, e.g. ``connection closed by the server (1013 slow
    consumer)``."""
    if code is None:
        return "connection lost (no close frame)"
    detail = f"{code} {reason}".strip()
    return f"connection closed by the server ({detail})"
