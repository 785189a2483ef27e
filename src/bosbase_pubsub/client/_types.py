"""The shapes the SDK hands to applications: plain dicts, typed as ``TypedDict``.

They are read like the JSON they come from (``msg["topic"]``), cost nothing to
build, and serialize as they are (``json.dumps(msg)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypedDict

__all__ = [
    "AsyncGapHandler",
    "AsyncHandler",
    "AuthRecord",
    "AuthResponse",
    "GapHandler",
    "Handler",
    "Message",
    "PublishAck",
    "ReplayGap",
]


class _MessageBase(TypedDict):
    id: str
    """The server's id for the message (opaque: do not parse it)."""
    topic: str
    data: Any
    """The publisher's JSON value (``None`` when it published none)."""
    created: str
    """When the server stored it, UTC, ``YYYY-MM-DD HH:MM:SS.mmmZ``."""


class Message(_MessageBase, total=False):
    """A message delivered on a subscribed topic: ``id``, ``topic``, ``data``,
    ``created``, and ``position`` from a server with the resume extension."""

    position: str
    """Where the message sits in the store (opaque); ``subscribe(topic, handler,
    since=position)`` replays what came after it. Absent from servers without
    the resume extension."""


class _PublishAckBase(TypedDict):
    id: str
    """The stored message's id; subscribers receive the same id."""
    topic: str
    created: str
    """Equal to the delivered message's ``created``."""


class PublishAck(_PublishAckBase, total=False):
    """The server's acknowledgement of a publish, sent once the message is stored:
    ``id``, ``topic``, ``created``, and ``position`` (resume extension)."""

    position: str
    """The stored message's position (see ``Message.position``)."""


class ReplayGap(TypedDict):
    """A resume that could not replay everything: messages may be missing before
    the ones that follow (``on_gap`` receives it, before those messages)."""

    topic: str
    replay: Literal["pruned", "unknown"]
    """``pruned``: ``since`` is older than the oldest message still stored (the
    retention deleted some); what is still stored after it was replayed.
    ``unknown``: the server does not know ``since`` (another database, or not a
    position): nothing was replayed, delivery goes on from now."""
    since: str
    """The position the client asked to resume from."""
    position: str | None
    """Where the server said delivery starts (``None`` if it did not say)."""


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

GapHandler = Callable[[ReplayGap], object]
"""Told when a resume came back incomplete (``subscribe(..., on_gap=...)``); called
where message handlers are, in order with the messages."""

AsyncGapHandler = Callable[[ReplayGap], Awaitable[object] | object]
"""``GapHandler`` for the asyncio client: a plain or an ``async`` function."""
