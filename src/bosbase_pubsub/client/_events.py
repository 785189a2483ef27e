"""What the core tells its shell (events), and where the connection stands (``State``).

Rules:

* Events are frozen dataclasses, appended in the order things happened and
  handed out by ``PubSubCore.events_received``; the shell acts on each in turn.
* ``Listener`` is the one mutable object here: the core flips ``active`` off
  when it is removed, and a ``Deliver`` already made still names it (the shell
  skips it then), so a message is never handed to a removed listener.
* Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ._exceptions import BosBaseError
from ._types import Message, PublishAck, ReplayGap

__all__ = [
    "CloseSocket",
    "Connected",
    "Deliver",
    "Disconnected",
    "Event",
    "Gap",
    "Handshake",
    "Listener",
    "Rejected",
    "Resolved",
    "ServerNotice",
    "State",
    "SubscriptionLost",
]


class State(enum.Enum):
    """Where the connection stands."""

    IDLE = "idle"
    """No socket, and nothing needs one."""
    WAITING = "waiting"
    """No socket; the next attempt is due at ``connect_at``."""
    CONNECTING = "connecting"
    """The shell is opening a socket; the server's ``ready`` has not come yet."""
    SYNCING = "syncing"
    """``ready`` came; the topics are being subscribed again."""
    OPEN = "open"
    """Every topic is subscribed on a live connection."""
    CLOSED = "closed"
    """The client was closed; every call fails with ``ClientClosed``."""


# --- events (core to shell) ---------------------------------------------------------


class Listener:
    """One handler on one topic; ``active`` turns false when it is removed.

    A ``Deliver`` names the listeners subscribed when its message arrived: a
    message already received is still handed to a listener removed since (as
    an emit in progress does in Node's ``EventEmitter``)."""

    __slots__ = ("active", "handler", "on_gap", "topic")

    def __init__(self, topic: str, handler: Any, on_gap: Any = None) -> None:
        self.topic = topic
        self.handler = handler
        """Whatever the shell subscribed with; the core never calls it."""
        self.on_gap = on_gap
        """Told about an incomplete replay (``None``: the shell logs it)."""
        self.active = True


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand ``message`` to ``listeners`` (skipping any no longer ``active``)."""

    message: Message
    listeners: tuple[Listener, ...]


@dataclass(frozen=True, slots=True)
class Gap:
    """A resume came back incomplete: tell ``listeners`` (their ``on_gap``) before the
    messages that follow it, which are those the server could still replay."""

    gap: ReplayGap
    listeners: tuple[Listener, ...]


@dataclass(frozen=True, slots=True)
class Resolved:
    """The request succeeded; ``value`` is the ack of a publish, else ``None``."""

    request_id: str
    value: PublishAck | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """The request failed with ``error``."""

    request_id: str
    error: BosBaseError


@dataclass(frozen=True, slots=True)
class Connected:
    """The connection is up and every topic is subscribed (``State.OPEN``)."""

    client_id: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A connection (or an attempt) ended; ``error`` is ``None`` when the client asked.

    ``retry_in`` is the delay before the next attempt, ``None`` when none is planned;
    ``established`` tells a lost connection from a failed attempt.
    """

    error: BosBaseError | None
    retry_in: float | None
    established: bool


@dataclass(frozen=True, slots=True)
class SubscriptionLost:
    """The server refused to subscribe ``topic`` again after a reconnect, or ended
    it (the topic rules, after the identity changed); its listeners were removed."""

    topic: str
    error: BosBaseError


@dataclass(frozen=True, slots=True)
class ServerNotice:
    """An ``error`` frame that answers no pending request."""

    message: str


@dataclass(frozen=True, slots=True)
class CloseSocket:
    """Close the socket (a close frame with ``code``), then call ``connection_lost``."""

    code: int
    reason: str


Event = (
    Deliver | Gap | Resolved | Rejected | Connected | Disconnected | SubscriptionLost | ServerNotice
) | CloseSocket


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the shell needs to open the WebSocket."""

    url: str
    headers: tuple[tuple[str, str], ...]
