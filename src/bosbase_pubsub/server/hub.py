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
  a batch is being written, so delivery order equals commit order. Batches
  come in ``seq`` (position) order, whichever node stored them (see
  ``cluster.Sequencer``); ``position`` is the last ``seq`` delivered, so a
  subscription that joins now gets every message after it.
* A subscription resuming from a position (``CatchUp``) is kept out of the
  live set while the store replays what it missed: the messages delivered
  meanwhile are held for it (their bytes count against its outbound limit),
  and written after the replay, when it joins the live set, in one step. The
  hot loop pays one dict lookup per topic for this, and nothing when no
  subscription is catching up.
* Pattern subscriptions (``chat/*``, ``chat/**``, see ``topics``; their keys
  are marked, ``topics.subscription_key``) live in a ``PatternTrie`` beside
  the exact topics, which may hold ``*`` as any other character. While there are none, ``deliver``
  is the exact-topic loop above, untouched. With some, a connection reached
  through a pattern (or catching up on one) gets each message of a batch once,
  however many of its subscriptions match, and its messages in ``seq``
  order in one write (a pattern spans topics, and a resume position must
  never step back); a message held for one of its catch-ups is not also
  written live (it follows the replay, in order).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from websockets.frames import Close, Frame, Opcode

from .. import protocol
from ..topics import PatternTrie, is_pattern_key, key_topic
from .metrics import Metrics
from .storage import Message

log = logging.getLogger("bosbase_pubsub.hub")

CLOSE_SLOW_CONSUMER = 1013
"""WebSocket close code for a subscriber that stopped reading (RFC 6455: try again later)."""
SLOW_CONSUMER_GRACE = 5.0
"""Seconds a slow consumer gets to read its close frame before its socket is aborted."""


_TEXT_HEADERS: dict[int, bytes] = {}
"""Unmasked text frame headers by payload length (only the length varies)."""
_CACHED_HEADERS_MAX = 4096
_CACHED_PAYLOAD_MAX = 65535  # headers up to 4 bytes; larger frames are rare


def encode_text_frame(payload: bytes) -> bytes:
    """One unmasked server-to-client WebSocket text frame holding ``payload``."""
    length = len(payload)
    header = _TEXT_HEADERS.get(length)
    if header is not None:
        return header + payload
    frame = Frame(Opcode.TEXT, payload).serialize(mask=False)
    if length <= _CACHED_PAYLOAD_MAX:
        # websockets builds every header once; serializing a frame costs more
        # than the rest of an ack, and every ack and message is one.
        if len(_TEXT_HEADERS) >= _CACHED_HEADERS_MAX:
            _TEXT_HEADERS.clear()
        _TEXT_HEADERS[length] = frame[: len(frame) - length]
    return frame


PING_FRAME = Frame(Opcode.PING, b"").serialize(mask=False)
"""An unmasked server-to-client WebSocket ping with no payload."""


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


class CatchUp:
    """A subscription replaying from the store: live messages are held until it is done."""

    __slots__ = ("after", "held", "held_bytes", "subscriber", "topic")

    def __init__(self, subscriber: Subscriber, topic: str, after: int) -> None:
        self.subscriber = subscriber
        self.topic = topic
        self.after = after
        """Held messages at or below this ``seq`` are dropped (replayed, or seen before)."""
        self.held: list[tuple[int, bytes]] = []
        self.held_bytes = 0


class Hub:
    """Topic membership and fan-out for the subscribers of this node."""

    def __init__(self, metrics: Metrics, *, outbound_buffer_bytes: int) -> None:
        self._topics: dict[str, set[Subscriber]] = {}
        self._patterns: PatternTrie[Subscriber] = PatternTrie()
        """Live pattern subscriptions."""
        self._catching_up: dict[str, dict[Subscriber, CatchUp]] = {}
        """Subscriptions catching up, by topic or pattern."""
        self._catching_patterns: PatternTrie[CatchUp] = PatternTrie()
        """The pattern ones among them, for matching message topics."""
        self._patterned: dict[Subscriber, int] = {}
        """Subscribers with pattern subscriptions (live or catching up), and how many."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._metrics = metrics
        self._limit = outbound_buffer_bytes
        self.epoch = ""
        """The store's epoch: the first part of every position (set once the store is open)."""
        self.position = 0
        """The ``seq`` of the last message delivered (every later one will be)."""

    @property
    def outbound_limit(self) -> int:
        return self._limit

    def position_text(self, seq: int | None = None) -> str:
        """``seq`` (default: ``position``) as a position string."""
        return protocol.format_position(self.epoch, self.position if seq is None else seq)

    async def reached(self, seq: int) -> None:
        """Return once every message up to ``seq`` has been delivered (``position >= seq``)."""
        if self.position >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        await future

    @property
    def topic_count(self) -> int:
        """Topics with a subscriber, and live patterns."""
        return len(self._topics) + len(self._patterns)

    def topic_names(self) -> list[str]:
        """The topics with at least one live subscriber."""
        return list(self._topics)

    def subscriber_count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def subscribe(self, subscriber: Subscriber, topic: str) -> None:
        """Add ``subscriber`` to ``topic``, a subscription key (``topics.subscription_key``:
        a pattern's is marked); a second call is a no-op."""
        if topic in subscriber.topics:
            return
        subscriber.topics.add(topic)
        self._join(subscriber, topic)
        self._count_pattern(subscriber, topic, 1)
        self._metrics.subscriptions += 1

    def _count_pattern(self, subscriber: Subscriber, topic: str, step: int) -> None:
        if not is_pattern_key(topic):
            return
        count = self._patterned.get(subscriber, 0) + step
        if count:
            self._patterned[subscriber] = count
        else:
            del self._patterned[subscriber]

    def _join(self, subscriber: Subscriber, topic: str) -> None:
        if is_pattern_key(topic):
            self._patterns.add(key_topic(topic), subscriber)
        else:
            self._topics.setdefault(topic, set()).add(subscriber)

    def begin_catch_up(self, subscriber: Subscriber, topic: str, after: int) -> CatchUp | None:
        """Subscribe ``subscriber`` to ``topic``, holding its live messages; None if subscribed.

        Call ``finish_catch_up`` once the replay is written.
        """
        if topic in subscriber.topics:
            return None
        subscriber.topics.add(topic)
        catch_up = CatchUp(subscriber, topic, after)
        self._catching_up.setdefault(topic, {})[subscriber] = catch_up
        if is_pattern_key(topic):
            self._catching_patterns.add(key_topic(topic), catch_up)
        self._count_pattern(subscriber, topic, 1)
        self._metrics.subscriptions += 1
        return catch_up

    def finish_catch_up(self, catch_up: CatchUp) -> None:
        """Write the held messages after ``catch_up.after``, then deliver live."""
        subscriber, topic = catch_up.subscriber, catch_up.topic
        members = self._catching_up.get(topic)
        if members is None or members.get(subscriber) is not catch_up:
            return  # unsubscribed (or closed) meanwhile
        del members[subscriber]
        if not members:
            del self._catching_up[topic]
        if is_pattern_key(topic):
            self._catching_patterns.remove(key_topic(topic), catch_up)
        frames = [frame for seq, frame in catch_up.held if seq > catch_up.after]
        catch_up.held.clear()
        if frames:
            subscriber.write(b"".join(frames))
            self._metrics.delivered += len(frames)
        self._join(subscriber, topic)
        if subscriber.transport.get_write_buffer_size() > self._limit:
            self._close_slow(subscriber)

    def unsubscribe(self, subscriber: Subscriber, topics: Iterable[str] | None = None) -> None:
        """Remove ``subscriber`` from ``topics`` (all of its topics when None)."""
        for topic in list(subscriber.topics if topics is None else topics):
            if topic not in subscriber.topics:
                continue
            subscriber.topics.discard(topic)
            if is_pattern_key(topic):
                self._patterns.remove(key_topic(topic), subscriber)
            else:
                members = self._topics.get(topic)
                if members is not None:
                    members.discard(subscriber)
                    if not members:
                        del self._topics[topic]
            catching_up = self._catching_up.get(topic)
            if catching_up is not None:
                catch_up = catching_up.pop(subscriber, None)
                if catch_up is not None and is_pattern_key(topic):
                    self._catching_patterns.remove(key_topic(topic), catch_up)
                if not catching_up:
                    del self._catching_up[topic]
            self._count_pattern(subscriber, topic, -1)
            self._metrics.subscriptions -= 1

    def deliver(self, messages: Sequence[Message]) -> None:
        """Write ``messages`` (in ``seq`` order) to every subscriber of their topics."""
        if not messages:
            return
        if self._patterned:
            self._deliver_matching(messages)
            return
        topics = self._topics
        catching_up = self._catching_up
        epoch = self.epoch
        frames_by_topic: dict[str, list[bytes]] = {}
        for message in messages:
            topic = message.topic
            if topic in topics or (catching_up and topic in catching_up):
                frame = encode_text_frame(
                    protocol.message_frame(
                        message.id,
                        topic,
                        message.data,
                        message.created,
                        f"{epoch}:{message.seq}",
                    )
                )
                frames_by_topic.setdefault(topic, []).append(frame)
        self.position = messages[-1].seq
        limit = self._limit
        delivered = 0
        for topic, frames in frames_by_topic.items():
            if catching_up and topic in catching_up:
                self._hold(topic, messages, frames)
            members = topics.get(topic)
            if not members:
                continue
            joined = frames[0] if len(frames) == 1 else b"".join(frames)
            count = len(frames)
            for subscriber in members:
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
        if self._waiters:
            self._wake_waiters()

    def _deliver_matching(self, messages: Sequence[Message]) -> None:
        """``deliver`` with pattern subscriptions: see the module for what changes.

        The subscribers with a pattern (``_patterned``) get their own frame list,
        built in ``seq`` order, each message once; everyone else is served by
        topic exactly as in ``deliver``.
        """
        exact = self._topics
        match = self._patterns.match_list
        catching_up = self._catching_up
        catching_patterns = self._catching_patterns
        patterned = self._patterned
        epoch = self.epoch
        by_topic: dict[str, list[bytes]] = {}
        own: dict[Subscriber, list[bytes]] = {}
        touched: dict[CatchUp, None] = {}
        for message in messages:
            topic = message.topic
            members = exact.get(topic)
            groups = match(topic)
            catch_ups: list[CatchUp] = []
            if catching_up:
                waiting = catching_up.get(topic)
                if waiting:
                    catch_ups.extend(waiting.values())
                for found in catching_patterns.match_list(topic):
                    catch_ups.extend(found)
            if not members and not groups and not catch_ups:
                continue
            frame = encode_text_frame(
                protocol.message_frame(
                    message.id, topic, message.data, message.created, f"{epoch}:{message.seq}"
                )
            )
            holders: set[Subscriber] | None = None
            if catch_ups:
                holders = set()
                for catch_up in catch_ups:
                    holders.add(catch_up.subscriber)
                    if message.seq > catch_up.after:
                        catch_up.held.append((message.seq, frame))
                        catch_up.held_bytes += len(frame)
                        touched[catch_up] = None
            if members:
                by_topic.setdefault(topic, []).append(frame)
                # Its members with a pattern too: iterate the smaller set.
                groups.append(
                    {s for s in patterned if s in members}
                    if len(patterned) < len(members)
                    else {s for s in members if s in patterned}
                )
            for group in groups:
                for subscriber in group:
                    if holders is not None and subscriber in holders:
                        continue  # follows its replay instead
                    frames = own.get(subscriber)
                    if frames is None:
                        own[subscriber] = [frame]
                    elif frames[-1] is not frame:
                        frames.append(frame)
        self.position = messages[-1].seq
        limit = self._limit
        delivered = 0
        for topic, frames in by_topic.items():
            joined = frames[0] if len(frames) == 1 else b"".join(frames)
            count = len(frames)
            for subscriber in exact[topic]:
                if subscriber.closed or subscriber in patterned:
                    continue
                transport = subscriber.transport
                if transport.is_closing():
                    subscriber.closed = True
                    continue
                transport.write(joined)
                delivered += count
                if transport.get_write_buffer_size() > limit:
                    self._close_slow(subscriber)
        for subscriber, frames in own.items():
            if subscriber.closed:
                continue
            transport = subscriber.transport
            if transport.is_closing():
                subscriber.closed = True
                continue
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
            delivered += len(frames)
            if transport.get_write_buffer_size() > limit:
                self._close_slow(subscriber)
        for catch_up in touched:
            subscriber = catch_up.subscriber
            if (
                not subscriber.closed
                and catch_up.held_bytes + subscriber.transport.get_write_buffer_size() > limit
            ):
                catch_up.held.clear()
                self._close_slow(subscriber)
        self._metrics.delivered += delivered
        if self._waiters:
            self._wake_waiters()

    def _hold(self, topic: str, messages: Sequence[Message], frames: list[bytes]) -> None:
        seqs = [message.seq for message in messages if message.topic == topic]
        for catch_up in list(self._catching_up[topic].values()):
            subscriber = catch_up.subscriber
            for seq, frame in zip(seqs, frames, strict=True):
                if seq > catch_up.after:
                    catch_up.held.append((seq, frame))
                    catch_up.held_bytes += len(frame)
            if (
                not subscriber.closed
                and catch_up.held_bytes + subscriber.transport.get_write_buffer_size() > self._limit
            ):
                catch_up.held.clear()
                self._close_slow(subscriber)

    def _wake_waiters(self) -> None:
        position = self.position
        waiting = []
        for seq, future in self._waiters:
            if seq <= position:
                if not future.done():
                    future.set_result(None)
            elif not future.done():
                waiting.append((seq, future))
        self._waiters = waiting

    def _close_slow(self, subscriber: Subscriber) -> None:
        self._metrics.slow_consumer_closes += 1
        log.warning(
            "closing slow consumer %s (%s): more than %d bytes queued",
            subscriber.client_id,
            subscriber.peer,
            self._limit,
        )
        subscriber.close(CLOSE_SLOW_CONSUMER, "slow consumer")
