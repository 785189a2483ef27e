"""Pending requests: what one request carries, and the deadlines they wait on.

Rules:

* A request has one id (``requestId`` on the wire), a kind, and an absolute
  ``deadline`` (monotonic seconds) fixed when it is made; it never moves.
* ``sent`` is true only while it is written on the current connection; a lost
  connection turns it back to waiting (in the queue), in creation order.
* ``Deadlines`` is a heap of ``(deadline, id)``: an entry whose request is
  gone (answered, cancelled) is skipped lazily, never searched for and removed.
* A publish ack may be held (``HeldAck``) until its own message arrives, at
  most ``HOLD_ACK_FOR`` seconds, and never past the request's deadline.
"""

from __future__ import annotations

import heapq
from collections.abc import Container
from dataclasses import dataclass
from typing import Literal

from ._events import Listener
from ._exceptions import BosBaseError, ConnectionClosed
from ._types import PublishAck

__all__ = ["HOLD_ACK_FOR", "Deadlines", "HeldAck", "Kind", "Request", "publish_lost"]

HOLD_ACK_FOR = 2.0
"""At most this long a publish ack waits for its own message (which follows it at once)."""

Kind = Literal["publish", "subscribe", "resubscribe", "unsubscribe", "auth"]


class Request:
    """One request waiting for its reply (or in the queue for a connection)."""

    __slots__ = (
        "deadline",
        "ever_sent",
        "frame",
        "id",
        "kind",
        "listener",
        "sent",
        "since",
        "timeout",
        "topic",
    )

    def __init__(
        self,
        request_id: str,
        kind: Kind,
        topic: str,
        frame: bytes,
        deadline: float,
        timeout: float,
        listener: Listener | None = None,
    ) -> None:
        self.id = request_id
        self.kind = kind
        self.topic = topic
        self.frame = frame
        self.deadline = deadline
        self.timeout = timeout
        self.listener = listener
        self.sent = False
        """Written on the current connection (else waiting in the queue)."""
        self.ever_sent = False
        """Written on some connection: a publish may have been stored even if queued again."""
        self.since: str | None = None
        """The ``since`` a subscribe carried when it was written."""


@dataclass(slots=True)
class HeldAck:
    """A publish ack held until its own message arrives (or ``deadline``)."""

    request_id: str
    topic: str
    ack: PublishAck
    deadline: float


class Deadlines:
    """The requests' deadlines, earliest first (a heap of ``(deadline, id)``)."""

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []

    def add(self, deadline: float, request_id: str) -> None:
        """Watch ``request_id`` until ``deadline``."""
        heapq.heappush(self._heap, (deadline, request_id))

    def earliest(self, live: Container[str]) -> float | None:
        """The earliest deadline of a request still in ``live``, if any."""
        heap = self._heap
        while heap and heap[0][1] not in live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> str | None:
        """The id of a request due at ``now`` (it may be gone already), or ``None``."""
        heap = self._heap
        if heap and heap[0][0] <= now:
            return heapq.heappop(heap)[1]
        return None

    def clear(self) -> None:
        """Forget every deadline."""
        self._heap.clear()


def publish_lost(error: BosBaseError) -> ConnectionClosed:
    """The error of a publish whose connection was lost before its ack."""
    code = error.code if isinstance(error, ConnectionClosed) else None
    reason = error.reason if isinstance(error, ConnectionClosed) else ""
    return ConnectionClosed(
        "the connection closed before the server acknowledged the publish, which may or"
        f" may not have been stored ({error})",
        code=code,
        reason=reason,
    )
