"""The shapes the SDK hands to applications: plain dicts, typed as ``TypedDict``.

They are read like the JSON they come from (``msg["topic"]``), cost nothing to
build, and serialize as they are (``json.dumps(msg)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypedDict

__all__ = [
    "AsyncHandler",
    "AuthRecord",
    "AuthResponse",
    "Handler",
    "Message",
    "PublishAck",
]


class Message(TypedDict):
    """A message delivered on a subscribed topic."""

    id: str
    """The server's id for the message (opaque: do not parse it)."""
    topic: str
    data: Any
    """The publisher's JSON value (``None`` when it published none)."""
    created: str
    """When the server stored it, UTC, ``YYYY-MM-DD HH:MM:SS.mmmZ``."""


class PublishAck(TypedDict):
    """The server's acknowledgement of a publish, sent once the message is stored."""

    id: str
    """The stored message's id; subscribers receive the same id."""
    topic: str
    created: str
    """Equal to the delivered message's ``created``."""


class _AuthRecordBase(TypedDict):
    id: str
    collectionId: str
    collectionName: str
    created: str
    updated: str
    verified: bool
    emailVisibility: bool


class AuthRecord(_AuthRecordBase, total=False):
    """An account as the server shows it (``users`` or ``_superusers``).

    ``email`` is present when it is visible to the reader (always for your own
    record after signing in); ``name`` exists on ``users`` only.
    """

    email: str
    name: str


class AuthResponse(TypedDict):
    """The body of a successful sign-in or refresh."""

    token: str
    record: AuthRecord


Handler = Callable[[Message], object]
"""A message handler for the sync client: called on the dispatcher thread."""

AsyncHandler = Callable[[Message], Awaitable[object] | object]
"""A message handler for the asyncio client: a plain or an ``async`` function."""
