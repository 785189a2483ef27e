"""Subscribed topics and their resume positions.

Rules (``docs/reference/resume.md``):

* A ``Topic`` keeps ``position``: the position of the last message delivered
  on it, or, before any, the one the ``subscribed`` ack named (where live
  delivery began). A (re-)subscribe frame is built when it is written and
  carries ``since`` = that position, so it replays exactly what was missed.
* Positions are opaque on the wire: the client only sends back what it got.
  ``after`` is the one place they are read, to drop a duplicate: two of this
  server's ``EPOCH:SEQ`` of one epoch compare by ``SEQ``; anything else is
  taken as after (a no-op against an official server).
* ``check_topic`` is the one place a topic name is validated (trimmed, not
  empty), before anything is sent.
"""

from __future__ import annotations

import orjson

from .. import protocol
from ..topics import is_pattern
from ._events import Listener
from ._exceptions import InvalidRequest

__all__ = ["BacklogMonitor", "Topic", "after", "check_topic", "subscribe_frame"]


class Topic:
    """One subscribed topic: its listeners, and where a resume starts from."""

    __slots__ = ("active", "listeners", "name", "position", "segments")

    def __init__(self, name: str) -> None:
        self.name = name
        self.segments: tuple[str, ...] | None = tuple(name.split("/")) if is_pattern(name) else None
        """A wildcard subscription's segments (``None``: a plain topic)."""
        self.listeners: tuple[Listener, ...] = ()
        self.active = False
        """The server acknowledged the subscription on the current connection."""
        self.position: str | None = None
        """The position of the last message delivered on this topic, or where the
        server said live delivery began; a re-subscribe resumes from it."""


class BacklogMonitor:
    """When to warn that messages pile up before a slow handler (pure: the caller
    passes the backlog size and the time).

    Warns at 10,000 waiting messages, then at each tenfold, at most once a
    minute; a backlog that drained completely starts over.
    """

    FIRST = 10_000
    QUIET = 60.0

    def __init__(self) -> None:
        self._next = self.FIRST
        self._last = float("-inf")

    def check(self, backlog: int, now: float) -> str | None:
        """A warning to log for ``backlog`` messages waiting, or ``None``."""
        if backlog == 0 and now - self._last >= self.QUIET:
            self._next = self.FIRST
        if backlog < self._next or now - self._last < self.QUIET:
            return None
        while self._next <= backlog:
            self._next *= 10
        self._last = now
        return f"{backlog} messages wait for a slow handler (they are kept in memory)"


def check_topic(topic: object) -> str:
    """The topic as the server will see it (trimmed); raise ``InvalidRequest`` if empty."""
    if not isinstance(topic, str):
        raise InvalidRequest(f"topic must be a string, not {type(topic).__name__}")
    topic = topic.strip()
    if not topic:
        raise InvalidRequest(protocol.ERR_TOPIC_REQUIRED)
    return topic


def subscribe_frame(topic: str, request_id: str, since: str | None) -> bytes:
    """The ``subscribe`` frame; ``since`` resumes after that position.

    A topic with ``*`` or ``**`` segments is subscribed as a pattern (``"pattern":
    true``, which this server reads; without it ``*`` is a plain character).
    """
    fields: dict[str, str | bool] = {"type": "subscribe", "topic": topic, "requestId": request_id}
    if is_pattern(topic):
        fields["pattern"] = True
    if since is not None:
        fields["since"] = since
    return orjson.dumps(fields)


def after(position: str, last: str) -> bool:
    """``position`` comes after ``last`` in the server's delivery order.

    The one place positions are read: two of this server's ``EPOCH:SEQ`` of
    the same epoch compare by ``SEQ``; anything else (another shape, another
    epoch, a database replaced) is taken as after, trusting the server.
    """
    epoch, _, seq = position.rpartition(":")
    last_epoch, _, last_seq = last.rpartition(":")
    if epoch != last_epoch or not epoch or not (seq.isdigit() and last_seq.isdigit()):
        return True
    return int(seq) > int(last_seq)
