"""The cross-node feed on JetStream: one node follows the message stream from its position.

Invariants:

* The position is one number, the highest stream sequence returned so far.
  The feed reads through an ephemeral push consumer of its own (no acks,
  flow control, idle heartbeats) that starts at ``position + 1``; JetStream
  delivers the stream in sequence order, so nothing below a returned
  message is ever returned after it.
* The feed is an *ordered* consumer, done here rather than by nats-py so
  that every failure ends the same way: the consumer sequence of each
  delivery must be the last one plus one, and a heartbeat names the last one
  sent. A gap (a delivery dropped by the client as a slow consumer, say), a
  consumer deleted by the server, a reconnect of the connection, or no
  heartbeat for ``3 x HEARTBEAT`` marks the consumer broken: what was
  received in order is still returned, then ``next_batch`` raises
  ``StoreError`` once, and the next call starts a new consumer right after
  the last message received. Nothing is skipped or returned twice.
* The node's own messages come back as markers (``seq`` and ``origin``
  only), as on PostgreSQL (see ``server.cluster.Sequencer``).
* Flow control: the server pauses the consumer until the feed answers its
  flow-control request; the feed answers at once unless ``MAX_QUEUED``
  messages wait unread, else when ``next_batch`` has taken them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.js import api

from .base import Feed, Message, StoreError
from .jetstream_common import (
    REQUEST_TIMEOUT,
    decode_message,
    delivery_sequences,
    translate_errors,
)

if TYPE_CHECKING:
    from .jetstream import JetStreamStore

log = logging.getLogger("bosbase_pubsub.storage.jetstream")

HEARTBEAT = 1.0
"""Seconds between the consumer's idle heartbeats; three missed count as a lost consumer."""
MAX_QUEUED = 20_000
"""Messages received and not yet returned beyond which flow control holds the server back."""


class JetStreamFeed(Feed):
    """Every message other nodes store after ``open``, in stream sequence order."""

    def __init__(
        self,
        store: JetStreamStore,
        *,
        skip_origin: str,
        batch: int = 2000,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._origin = skip_origin
        self._batch = batch
        self._poll_interval = poll_interval
        self._clock = clock
        self._position: int | None = None
        self._received_through = 0
        """The stream sequence of the last message received in order (returned or queued)."""
        self._queue: collections.deque[Message] = collections.deque()
        self._event = asyncio.Event()
        self._inbox: str | None = None
        self._subscription: object | None = None
        self._consumer: str | None = None
        self._epoch = -1  # the store connection's epoch the consumer was made in
        self._expected = 1  # the next consumer sequence
        self._heard_at = 0.0
        self._broken: str | None = None
        self._held_flow_control: str | None = None
        self._closed = False

    @property
    def position(self) -> int:
        """The highest stream sequence returned so far (0 before ``open``)."""
        return self._position or 0

    def wake(self) -> None:
        return  # pushed: messages arrive as soon as they are stored

    async def open(self) -> None:
        info = await self._store.stream_state()
        self._position = self._received_through = info.last_seq
        await self._start()

    async def next_batch(self) -> Sequence[Message]:
        if self._position is None:
            raise StoreError("the feed is not open")
        if self._closed:
            raise StoreError("the feed is closed")
        if self._inbox is None:
            await self._start()
        if not self._queue:
            self._event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event.wait(), self._poll_interval)
            if self._closed:
                raise StoreError("the feed is closed")
        if not self._queue:
            problem = self._problem()
            if problem is not None:
                await self._stop()
                raise StoreError(f"jetstream: feed: {problem}")
            return []
        count = min(self._batch, len(self._queue))
        batch = [self._queue.popleft() for _ in range(count)]
        self._position = batch[-1].seq
        held = self._held_flow_control
        if held is not None and len(self._queue) < MAX_QUEUED // 2:
            self._held_flow_control = None
            await self._answer(held)
        return batch

    async def close(self) -> None:
        self._closed = True
        self._event.set()
        await self._stop()

    # ------------------------------------------------------------------ the consumer

    def _problem(self) -> str | None:
        if self._broken is not None:
            return self._broken
        if self._store.connection_epoch != self._epoch:
            return "the connection to NATS was lost"
        if self._clock() - self._heard_at > 3 * HEARTBEAT:
            return f"no heartbeat from the consumer for {3 * HEARTBEAT:g} s"
        return None

    async def _start(self) -> None:
        """A new consumer from the message after the last one received."""
        connection = self._store.connection()
        epoch = self._store.connection_epoch
        inbox = connection.new_inbox()
        self._inbox, self._expected, self._broken = inbox, 1, None

        async def received(msg: Msg) -> None:
            # A late delivery to a consumer given up is dropped (JetStream
            # deliveries keep their stream subject: the inbox tells them apart).
            if self._inbox == inbox:
                await self._received(msg)

        self._heard_at = self._clock()
        try:
            with translate_errors("feed"):
                self._subscription = await connection.subscribe(
                    inbox, cb=received, pending_msgs_limit=0, pending_bytes_limit=0
                )
                config = api.ConsumerConfig(
                    deliver_subject=inbox,
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=self._received_through + 1,
                    ack_policy=api.AckPolicy.NONE,
                    flow_control=True,
                    idle_heartbeat=HEARTBEAT,
                    filter_subject=self._store.settings.subjects + ".>",
                    mem_storage=True,
                    num_replicas=1,
                    description=f"bosbase-pubsub feed of node {self._origin}",
                )
                info = await self._store.manager().add_consumer(
                    self._store.settings.stream, config, timeout=REQUEST_TIMEOUT
                )
        except BaseException:
            await self._stop()
            raise
        self._consumer = info.name
        self._epoch = epoch

    async def _stop(self) -> None:
        """Drop the consumer (the server deletes it anyway once nobody listens)."""
        subscription, self._subscription = self._subscription, None
        consumer, self._consumer = self._consumer, None
        self._inbox = None
        self._held_flow_control = None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()  # type: ignore[attr-defined]
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._store.manager().delete_consumer(self._store.settings.stream, consumer),
                    2.0,
                )

    async def _received(self, msg: Msg) -> None:
        if self._broken is not None:
            return  # given up: the next consumer starts after the last message received
        self._heard_at = self._clock()
        headers = msg.headers
        status = headers.get(api.Header.STATUS) if headers else None
        if status is not None:
            await self._control(msg, status)
            return
        sequences = delivery_sequences(msg.reply)
        if sequences is None:  # not a JetStream delivery: ignore it
            return
        seq, consumer_seq = sequences
        if consumer_seq != self._expected:
            self._break(
                f"missed deliveries (consumer sequence {consumer_seq}, not {self._expected})"
            )
            return
        self._expected += 1
        if seq <= self._received_through:
            return
        self._received_through = seq
        try:
            message = decode_message(msg.data, seq)
        except Exception:
            log.warning("skipping stream message %d: not a bosbase-pubsub message", seq)
            return
        if message.origin == self._origin:
            message = Message("", "", b"", "", message.origin, None, seq)
        self._queue.append(message)
        self._event.set()

    async def _control(self, msg: Msg, status: str) -> None:
        """A status message: a heartbeat, a flow-control request, or the consumer's end."""
        headers = msg.headers or {}
        if status != "100":
            self._break(f"the consumer ended ({status} {headers.get(api.Header.DESCRIPTION, '')})")
            return
        last = headers.get(api.Header.LAST_CONSUMER)
        if last is not None and int(last) != self._expected - 1:
            self._break(
                f"missed deliveries (the consumer sent {last}, we got {self._expected - 1})"
            )
            return
        reply = msg.reply or headers.get(api.Header.CONSUMER_STALLED)
        if reply:
            if len(self._queue) >= MAX_QUEUED:
                self._held_flow_control = reply
            else:
                await self._answer(reply)

    async def _answer(self, reply: str) -> None:
        with contextlib.suppress(Exception):
            await self._store.connection().publish(reply, b"")

    def _break(self, problem: str) -> None:
        self._broken = problem
        self._event.set()
