"""The ``/api/pubsub`` WebSocket endpoint: one ``Connection`` per socket.

The identity is read at the handshake (see ``auth``) and replaced by an
``auth`` frame (ours: a fresh token on the open socket, so a long-lived
connection outlives its token); a token's expiry is enforced on every
publish. The frames after an ``auth`` are read only once its token is
checked, so they act with the identity it gives. Requests are parsed by the pure
``protocol`` module; this module applies the node's limits, talks to the hub
and the commit queue, and writes replies.

Backpressure, not refusal: a connection has at most
``Limits.max_publishes_in_flight`` publishes waiting for their commit. At that
many, its read loop stops reading the socket until one of them is answered, so
the kernel's buffers fill and TCP slows the client down; every publish is
answered, in the order sent. (A per-connection rate limit that refuses is an
opt-in, ``Limits.publish_rate``.)

Heartbeats are the endpoint's, not aiohttp's (which re-arms a timer for
every frame received, a cost on every publish): every half ``heartbeat`` one
task looks at every connection; one that sent nothing since the last look
gets a ping, and one that still sent nothing (not even the pong) by the next
look is dropped. Receiving marks a connection as heard, nothing more.

The same round signs out a connection whose account's password changed (its
token key with it) or that was deleted, on whichever node did it: one lookup
of the token keys of the accounts signed in, per collection, per round. Until
then (at most half a ``heartbeat``) such a connection still acts as signed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any, cast

from aiohttp import WSMsgType, web

from .. import protocol
from ..topics import check_pattern, key_topic, subscription_key
from .auth import Authenticator, Identity
from .commits import CommitQueue
from .config import Limits
from .hub import PING_FRAME, Hub, Subscriber, encode_text_frame
from .ids import new_id, now_created
from .metrics import Metrics
from .resume import catch_up
from .rules import Rules
from .storage import Message, Store, StoreError

log = logging.getLogger("bosbase_pubsub.websocket")

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_PING_TIMEOUT = 1011
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
PING_TIMEOUT_GRACE = 1.0
"""Seconds a dropped silent peer gets to take the close frame before its socket is aborted."""


def err_topic_too_long(limits: Limits) -> str:
    return f"topic is too long (at most {limits.max_topic_length} characters)"


def err_too_many_subscriptions(limits: Limits) -> str:
    return f"too many subscriptions (at most {limits.max_subscriptions} per connection)"


def err_rate_limited(limits: Limits) -> str:
    return f"publish rate limit exceeded (at most {limits.publish_rate:g} per second)"


class PublishBucket:
    """A token bucket: ``rate`` publishes per second, ``burst`` at once."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class PubSubEndpoint:
    """Accepts WebSocket connections and serves the pub/sub contract on them."""

    def __init__(
        self,
        *,
        hub: Hub,
        store: Store,
        commits: CommitQueue,
        authenticator: Authenticator,
        metrics: Metrics,
        limits: Limits,
        node_id: str,
        heartbeat: float,
        rules: Rules | None = None,
    ) -> None:
        self.hub = hub
        self.rules = rules or Rules.default()
        self.store = store
        self.commits = commits
        self.authenticator = authenticator
        self.metrics = metrics
        self.limits = limits
        self.node_id = node_id
        self.heartbeat = heartbeat
        self.closing = False
        """Set when the node shuts down: publishes from then on are neither stored nor answered."""
        self._per_address: Counter[str] = Counter()
        self._connections: dict[Connection, web.WebSocketResponse] = {}
        """Every connection being served, with its socket."""
        self._heartbeats: asyncio.Task[None] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler for ``GET /api/pubsub``."""
        try:
            identity = await self.authenticator.identify(request)
        except StoreError as error:
            # Subscribing still works without the store; publishing would fail anyway.
            log.warning("store unavailable to check a token, connection is anonymous: %s", error)
            identity = None
        ws = web.WebSocketResponse(
            max_msg_size=self.limits.max_frame_bytes,
            autoping=False,  # pings are answered and pongs noted in Connection.serve
            compress=False,  # frames are pre-built once and shared by every subscriber
        )
        await ws.prepare(request)
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, request.transport)
        if transport is None:
            return ws
        peer = request.remote or "unknown"
        per_address = self.limits.max_connections_per_address
        if per_address and self._per_address[peer] >= per_address:
            log.warning("refusing connection from %s: too many connections", peer)
            await ws.close(
                code=CLOSE_POLICY_VIOLATION,
                message=b"too many connections from this address",
            )
            return ws

        self._per_address[peer] += 1
        self.metrics.connections += 1
        connection = Connection(self, Subscriber(new_id(), transport, peer), identity)
        self._connections[connection] = ws
        if self._heartbeats is None and self.heartbeat > 0:
            self._heartbeats = asyncio.get_running_loop().create_task(self._beat())
        try:
            await connection.serve(ws)
        finally:
            del self._connections[connection]
            connection.stop_replays()
            self.hub.unsubscribe(connection.subscriber)
            connection.subscriber.closed = True
            self.metrics.connections -= 1
            self._per_address[peer] -= 1
            if not self._per_address[peer]:
                del self._per_address[peer]
        return ws

    def identities(self) -> list[Identity | None]:
        """The identity of every open connection (``None``: anonymous), for the console."""
        return [connection.identity for connection in self._connections]

    async def _beat(self) -> None:
        """Ping the connections that went quiet, drop those that stayed quiet, sign out
        those whose account changed (see the module)."""
        while True:
            await asyncio.sleep(self.heartbeat / 2)
            try:
                self._look_at_connections()
                await self._check_accounts()
            except Exception:  # a bug here must not end heartbeats for good
                log.exception("heartbeat round failed")

    async def _check_accounts(self) -> None:
        """Sign out the connections whose account's token key changed or is gone."""
        signed_in: dict[str, list[tuple[Connection, Identity]]] = {}
        for connection in self._connections:
            identity = connection.identity
            if identity is not None and identity.token_key is not None:
                signed_in.setdefault(identity.collection_name, []).append((connection, identity))
        accounts = self.authenticator.accounts
        for collection, pairs in signed_in.items():
            try:
                keys = await accounts.token_keys(collection, {i.record_id for _, i in pairs})
            except StoreError:
                return  # unknown is not changed: look again next round
            for connection, identity in pairs:
                if connection.identity is not identity:
                    continue  # signed out, or a new token, while the keys were read
                if keys.get(identity.record_id) != identity.token_key:
                    log.info(
                        "signed out %s: the password of %s %s changed, or it was deleted",
                        connection.subscriber.peer,
                        collection,
                        identity.record_id,
                    )
                    connection.identity = None
                    connection.recheck_subscriptions()

    def _look_at_connections(self) -> None:
        now = time.time()
        for connection in list(self._connections):
            identity = connection.identity
            if identity is not None and identity.expires_at <= now:
                connection.identity = None  # expired: what it opened is checked again
                connection.recheck_subscriptions()
            subscriber = connection.subscriber
            if connection.heard:
                connection.heard = connection.pinged = False
            elif not connection.pinged:
                connection.pinged = True
                subscriber.write(PING_FRAME)
            elif not subscriber.closed:
                log.info("dropped %s: no answer to a ping", subscriber.peer)
                subscriber.close(CLOSE_PING_TIMEOUT, "ping timeout", grace=PING_TIMEOUT_GRACE)

    async def close_all(self) -> None:
        """Close every socket with 1001 (going away), for a graceful shutdown."""
        heartbeats, self._heartbeats = self._heartbeats, None
        if heartbeats is not None:
            heartbeats.cancel()
        sockets = list(self._connections.values())
        await asyncio.gather(
            *(ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down") for ws in sockets),
            return_exceptions=True,
        )


class Connection:
    """One client's session: its subscriptions, identity and publish budget."""

    __slots__ = (
        "bucket",
        "endpoint",
        "heard",
        "identity",
        "in_flight",
        "pinged",
        "reading_paused",
        "replays",
        "subscriber",
    )

    def __init__(
        self, endpoint: PubSubEndpoint, subscriber: Subscriber, identity: Identity | None
    ) -> None:
        self.endpoint = endpoint
        self.subscriber = subscriber
        self.identity = identity
        limits = endpoint.limits
        self.bucket = (
            PublishBucket(limits.publish_rate, limits.publish_burst)
            if limits.publish_rate > 0
            else None
        )
        self.in_flight = 0
        """Publishes sent to the commit queue and not answered yet."""
        self.reading_paused: asyncio.Future[None] | None = None
        """Set while the read loop waits for ``in_flight`` to drop below the limit."""
        self.replays: dict[str, asyncio.Task[None]] = {}
        """Subscriptions catching up from the store, by topic."""
        self.heard = True
        """Whether a frame came since the endpoint's last heartbeat look."""
        self.pinged = False
        """Whether the endpoint pinged this connection and waits for an answer."""

    def stop_replays(self, topic: str | None = None) -> None:
        """Cancel the replay of ``topic`` (of every topic when None)."""
        for name in list(self.replays) if topic is None else [topic]:
            task = self.replays.pop(name, None)
            if task is not None:
                task.cancel()

    async def serve(self, ws: web.WebSocketResponse) -> None:
        self.subscriber.send(
            protocol.ready_frame(self.subscriber.client_id, self.endpoint.hub.position_text())
        )
        max_in_flight = self.endpoint.limits.max_publishes_in_flight
        while True:
            if self.in_flight >= max_in_flight:
                # Backpressure (see the module): read again once a publish is answered.
                self.reading_paused = asyncio.get_running_loop().create_future()
                await self.reading_paused
            msg = await ws.receive()
            self.heard = True
            kind = msg.type
            if kind is _TEXT or kind is _BINARY:
                token_check = self.handle_frame(msg.data)
                if token_check is not None:
                    # Frames after an ``auth`` act with the identity it gives: read on after it.
                    await token_check
            elif kind is WSMsgType.PING:
                with contextlib.suppress(ConnectionError):  # closing meanwhile: nothing to answer
                    await ws.pong(msg.data)
            elif kind is WSMsgType.PONG:
                pass  # heard: that is all a pong is for
            elif kind is WSMsgType.ERROR:
                if ws.close_code == 1009:
                    self.endpoint.metrics.oversized_frame_closes += 1
                    log.info("closed %s: frame over the size limit", self.subscriber.peer)
                return
            else:  # CLOSE, CLOSING, CLOSED
                return

    def handle_frame(self, frame: str | bytes) -> Coroutine[Any, Any, None] | None:
        """Act on one frame; an ``auth`` returns its token check, for ``serve`` to await."""
        request = protocol.parse_request(frame)
        if isinstance(request, protocol.Publish):
            self.publish(request)
        elif isinstance(request, protocol.Subscribe):
            self.subscribe(request)
        elif isinstance(request, protocol.Unsubscribe):
            key = subscription_key(request.topic, request.pattern) if request.topic else None
            topics = None if key is None else [key]
            if self.replays:
                self.stop_replays(key)
            self.endpoint.hub.unsubscribe(self.subscriber, topics)
            self.reply(protocol.unsubscribed_frame(request.request_id))
        elif isinstance(request, protocol.Ping):
            self.reply(protocol.pong_frame(request.request_id))
        elif isinstance(request, protocol.Auth):
            return self.authenticate(request)
        else:
            self.reply(protocol.error_frame(request.request_id, request.message))
        return None

    async def authenticate(self, request: protocol.Auth) -> None:
        """Replace the connection's identity by the one ``request.token`` proves.

        A token that proves nothing (or cannot be checked now) is refused with
        an error and changes nothing: a client refreshing ahead of expiry
        keeps what it had. An empty token signs the connection out.
        """
        identity: Identity | None = None
        if request.token:
            try:
                identity = await self.endpoint.authenticator.verify_token(
                    request.token, source="message"
                )
            except StoreError as error:
                log.warning("store unavailable to check a token: %s", error)
                self.reply(protocol.error_frame(request.request_id, protocol.ERR_TOKEN_UNCHECKED))
                return
            if identity is None or identity.expires_at <= time.time():
                self.reply(protocol.error_frame(request.request_id, protocol.ERR_TOKEN_INVALID))
                return
        self.identity = identity
        self.endpoint.metrics.token_renewals += 1
        self.recheck_subscriptions()
        self.reply(
            protocol.authenticated_frame(
                request.request_id,
                None if identity is None else identity.collection_name,
                None if identity is None else identity.record_id,
                None if identity is None else identity.expires_at,
            )
        )

    def reply(self, frame: bytes) -> None:
        self.subscriber.send(frame)

    def subscribe(self, request: protocol.Subscribe) -> None:
        limits = self.endpoint.limits
        if len(request.topic) > limits.max_topic_length:
            self.reply(protocol.error_frame(request.request_id, err_topic_too_long(limits)))
            return
        if request.pattern:
            bad_pattern = check_pattern(request.topic)
            if bad_pattern is not None:
                self.reply(protocol.error_frame(request.request_id, bad_pattern))
                return
        # From here on the subscription's key: a pattern's is marked (``topics``).
        topic = subscription_key(request.topic, request.pattern)
        topics = self.subscriber.topics
        if topic not in topics and len(topics) >= limits.max_subscriptions:
            self.reply(protocol.error_frame(request.request_id, err_too_many_subscriptions(limits)))
            return
        if not self.endpoint.rules.may_subscribe(self.identity, topic):
            self.reply(protocol.error_frame(request.request_id, protocol.ERR_FORBIDDEN))
            return
        hub = self.endpoint.hub
        resume = protocol.parse_position(request.since) if request.since else None
        if topic in topics or not request.since:
            hub.subscribe(self.subscriber, topic)  # a no-op when subscribed already
            self.reply(protocol.subscribed_frame(request.request_id, hub.position_text()))
            return
        if resume is None or resume[0] != hub.epoch:
            # Not a position of this database: live from here, and the client refetches.
            hub.subscribe(self.subscriber, topic)
            self.reply(
                protocol.subscribed_frame(
                    request.request_id, hub.position_text(), protocol.REPLAY_UNKNOWN
                )
            )
            return
        # In this step: every message after ``live_from`` is held for the replay.
        live_from = hub.position
        held = hub.begin_catch_up(self.subscriber, topic, live_from)
        assert held is not None
        task = asyncio.get_running_loop().create_task(
            catch_up(
                store=self.endpoint.store,
                hub=hub,
                metrics=self.endpoint.metrics,
                catch_up=held,
                since=resume[1],
                live_from=live_from,
                request_id=request.request_id,
            )
        )
        self.replays[topic] = task
        task.add_done_callback(lambda done: self._replay_done(topic, done))

    def recheck_subscriptions(self) -> None:
        """After an identity change: leave each topic the rules no longer allow, and say so.

        The notice is ``{"type": "error", "topic": ..., "message": protocol.ERR_FORBIDDEN}``
        (no ``requestId``: nothing asked for it); the connection stays open.
        """
        rules = self.endpoint.rules
        if rules.is_default:
            return
        for topic in list(self.subscriber.topics):
            if not rules.may_subscribe(self.identity, topic):
                self.stop_replays(topic)
                self.endpoint.hub.unsubscribe(self.subscriber, [topic])
                self.reply(protocol.topic_error_frame(key_topic(topic), protocol.ERR_FORBIDDEN))

    def _replay_done(self, topic: str, task: asyncio.Task[None]) -> None:
        if self.replays.get(topic) is task:
            del self.replays[topic]
        if not task.cancelled() and task.exception() is not None:
            log.error("replay of %r failed", key_topic(topic), exc_info=task.exception())

    def publish(self, request: protocol.Publish) -> None:
        # The hot path of an acked publish: every check is inline, and the ack
        # (built once the commit is known) is written by the callback itself.
        endpoint = self.endpoint
        request_id = request.request_id
        topic = request.topic
        identity = self.identity
        if identity is None or identity.expires_at <= time.time():
            self.reply(protocol.error_frame(request_id, protocol.ERR_AUTH_REQUIRED))
            return
        if endpoint.closing:
            # Shutting down: not stored and not answered. The socket closes with 1001
            # in a moment, and a client resends what was never acked after it reconnects.
            return
        limits = endpoint.limits
        if len(topic) > limits.max_topic_length:
            self.reply(protocol.error_frame(request_id, err_topic_too_long(limits)))
            return
        rules = endpoint.rules
        if not rules.is_default and not rules.may_publish(identity, topic):
            self.reply(protocol.error_frame(request_id, protocol.ERR_FORBIDDEN))
            return
        bucket = self.bucket
        if bucket is not None and not bucket.take():
            self.reply(protocol.error_frame(request_id, err_rate_limited(limits)))
            return
        message = Message(
            new_id(),
            topic,
            request.data,
            now_created(),
            endpoint.node_id,
            identity.record_id,
            key=request.key or None,
        )
        subscriber = self.subscriber
        hub = endpoint.hub

        def on_stored(message: Message, error: BaseException | None) -> None:
            if error is None:
                frame = protocol.published_frame(
                    request_id,
                    message.id,
                    message.topic,
                    message.created,
                    f"{hub.epoch}:{message.seq}",  # hub.position_text(message.seq), inline
                )
            else:
                frame = protocol.error_frame(request_id, protocol.ERR_PUBLISH_FAILED)
            subscriber.write(encode_text_frame(frame))
            self.in_flight -= 1
            paused = self.reading_paused
            if paused is not None and not paused.done():
                self.reading_paused = None
                paused.set_result(None)

        self.in_flight += 1
        endpoint.commits.submit(message, on_stored)
