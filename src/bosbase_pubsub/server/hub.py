"""Topics, subscribers and fan-out on one node.

Invariants:

* Every message is serialized once: its WebSocket frame is built a single
  time and the same bytes are written to every subscriber of its topic.
  Messages of one batch that share a topic are joined, so that a subscriber
  receives the whole batch in one write.
* Fan-out never waits on a subscriber. Each subscriber has an outbound
  buffer (its transport's) bounded in bytes; a write that leaves more than
  ``Limits.outbound_buffer_bytes`` queued closes that subscriber alone with
  ``CLOSE_SLOW_CONSUMER`` (1013). The others are unaffected, and the
  server's memory stays bounded by the limit times the number of sockets.
* ``deliver`` is synchronous: no subscriber can join or leave a topic while
  a batch is being written, so delivery order equals commit order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from websockets.frames import Close, Frame, Opcode

from .. import protocol
from .metrics import Metrics
from .storage import Message

log = logging.getLogger("bosbase_pubsub.hub")

CLOSE_SLOW_CONSUMER = 1013
"""WebSocket close code for a subscriber that stopped reading (RFC 6455: try again later)."""
SLOW_CONSUMER_GRACE = 5.0
"""Seconds a slow consumer gets to read its close frame before its socket is aborted."""


def encode_text_frame(payload: bytes) -> bytes:
    """One unmasked server-to-client WebSocket text frame holding ``payload``."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def encode_close_frame(code: int, reason: str) -> bytes:
    """One unmasked server-to-client WebSocket close frame."""
    return Frame(Opcode.CLOSE, Close(code, reason).serialize()).serialize(mask=False)


class Subscriber:
    """The hub's view of one WebSocket connection: a transport and its topics.

    Frames are written straight to the transport, beside aiohttp's own
    writer (which never buffers uncompressed frames, so ordering holds).
    """

    __slots__ = ("client_id", "closed", "peer", "topics", "transport")

    def __init__(self, client_id: str, transport: asyncio.Transport, peer: str) -> None:
        self.client_id = client_id
        self.transport = transport
        self.peer = peer
        self.topics: set[str] = set()
        self.closed = False

    def send(self, payload: bytes) -> bool:
        """Queue one frame holding ``payload`` (JSON text); False if the socket is gone."""
        return self.write(encode_text_frame(payload))

    def write(self, frames: bytes) -> bool:
        """Queue already-encoded frames. False if the socket is gone or was just closed."""
        if self.closed:
            return False
        transport = self.transport
        if transport.is_closing():
            self.closed = True
            return False
        transport.write(frames)
        return True

    def close(self, code: int, reason: str, *, grace: float = SLOW_CONSUMER_GRACE) -> None:
        """Send a close frame, stop writing, and abort the socket after ``grace`` seconds."""
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(encode_close_frame(code, reason))
        asyncio.get_running_loop().call_later(grace, transport.abort)


class Hub:
    """Topic membership and fan-out for the subscribers of this node."""

    def __init__(self, metrics: Metrics, *, outbound_buffer_bytes: int) -> None:
        self._topics: dict[str, set[Subscriber]] = {}
        self._metrics = metrics
        self._limit = outbound_buffer_bytes

    @property
    def topic_count(self) -> int:
        return len(self._topics)

    def subscriber_count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def subscribe(self, subscriber: Subscriber, topic: str) -> None:
        """Add ``subscriber`` to ``topic``; a second call is a no-op."""
        if topic in subscriber.topics:
            return
        subscriber.topics.add(topic)
        self._topics.setdefault(topic, set()).add(subscriber)
        self._metrics.subscriptions += 1

    def unsubscribe(self, subscriber: Subscriber, topics: Iterable[str] | None = None) -> None:
        """Remove ``subscriber`` from ``topics`` (all of its topics when None)."""
        for topic in list(subscriber.topics if topics is None else topics):
            if topic not in subscriber.topics:
                continue
            subscriber.topics.discard(topic)
            members = self._topics.get(topic)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del self._topics[topic]
            self._metrics.subscriptions -= 1

    def deliver(self, messages: Sequence[Message]) -> None:
        """Write ``messages`` (in order) to every subscriber of their topics."""
        frames_by_topic: dict[str, list[bytes]] = {}
        for message in messages:
            if message.topic in self._topics:
                frame = encode_text_frame(
                    protocol.message_frame(message.id, message.topic, message.data, message.created)
                )
                frames_by_topic.setdefault(message.topic, []).append(frame)
        limit = self._limit
        delivered = 0
        for topic, frames in frames_by_topic.items():
            joined = frames[0] if len(frames) == 1 else b"".join(frames)
            count = len(frames)
            for subscriber in self._topics[topic]:
                if subscriber.closed:
                    continue
                transport = subscriber.transport
                if transport.is_closing():
                    subscriber.closed = True
                    continue
                transport.write(joined)
                delivered += count
                if transport.get_write_buffer_size() > limit:
                    self._close_slow(subscriber)
        self._metrics.delivered += delivered

    def _close_slow(self, subscriber: Subscriber) -> None:
        self._metrics.slow_consumer_closes += 1
        log.warning(
            "closing slow consumer %s (%s): more than %d bytes queued",
            subscriber.client_id,
            subscriber.peer,
            self._limit,
        )
        subscriber.close(CLOSE_SLOW_CONSUMER, "slow consumer")
