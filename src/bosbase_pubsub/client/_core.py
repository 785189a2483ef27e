"""The pub/sub client protocol as an I/O-free state machine, driven by both shells.

The core never touches a socket, a thread or a clock: every input that
depends on time takes ``now`` (monotonic seconds). A shell (``_sync.py`` with
threads, ``_async.py`` with asyncio) feeds it what happened and carries out
what it asks, the way websockets' ``Protocol`` is driven::

    request_id = core.publish(topic, data, now)    # application calls
    handshake  = core.start_connecting(now)        # when now >= core.connect_at
    core.receive(frame, now)                       # each text frame read
    core.connection_lost(error, now)               # the socket ended
    core.tick(now)                                 # at core.next_deadline()
    core.data_to_send() -> [frame, ...]            # write these, in order
    core.events_received() -> [event, ...]         # act on these, in order

Rules it keeps:

* **One connection at a time**, opened only when something needs it (a
  subscription or a request), reopened after an unexpected close on the
  ``Reconnect`` schedule, at once after an identity change.
* **Nothing is sent before ``ready``.** Requests made while there is no usable
  connection wait in order in the queue, each within its own deadline.
* **On ``ready``** every subscribed topic is subscribed again, then the queue
  is sent, without waiting for acks (pipelined; replies are matched by
  ``requestId``). Once every subscribe is acknowledged the state is ``OPEN``:
  that, and only that, is ``is_connected``.
* **On a lost connection** a subscribe in flight is sent again on the next one
  (subscribing is idempotent). A publish in flight is sent again too, with
  the same ``key``, once the server has shown that it keeps the resume
  extension (it sent a ``position``): it stores a key once. Against a server
  that never did (an official one), the publish fails with
  ``ConnectionClosed`` instead: it may have been stored, and sending it twice
  could store it twice. Requests wait in creation order, so one publisher's
  messages keep their order across the resend.
* **A new token on an open socket** (a refresh, a sign-in, a sign-out) goes
  to this server as an ``auth`` frame (ours) on that socket: no reconnect,
  and the frames after it act with the new identity. A server that refuses
  it (an official one, an older one, a token it does not take) gets the new
  token the standard way instead: a reconnect.
* **Another identity or handshake change** (new ``query`` or ``headers``,
  or a token while no socket is open) reconnects: new requests wait, the
  publishes in flight get their acks, then the socket is closed and reopened
  with the new handshake.
* **Every request has a deadline**; past it, it fails with ``RequestTimeout``.
* **You see your own writes**: the server acks a publish before it delivers
  the message, so when this connection subscribes to the topic, the ack is
  held until the message itself has come (and been handed to the listeners),
  or the topic is left, the connection drops, or the deadline passes. When
  ``publish`` returns, the publisher's own handlers already have the message.
* **Resume positions** (``docs/reference/resume.md``): each topic keeps
  ``Topic.position``, the position of the last message delivered on it, or,
  before any, the one the ``subscribed`` ack names (where live delivery
  began). Every subscribe frame is built when it is written, and carries
  ``since`` = that position, so a re-subscribe replays exactly what was
  missed. A ``replay`` of ``pruned`` or ``unknown`` is a ``Gap`` event for the
  topic's listeners, never silence.
* **No duplicate delivery**: a message whose position is not after the
  topic's position is dropped. Positions are opaque on the wire (the core
  only sends back what it got), but ``after`` compares two of this server's
  ``EPOCH:SEQ`` positions of the same epoch: the server delivers each topic
  in position order, so that one comparison is exact, costs no memory per
  message (unlike a window of recent ids, which also forgets), and is a no-op
  for positions of another shape or epoch, or none (an official server).
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlencode

import orjson

from .. import protocol
from ..protocol import decode_json  # one decoder for both sides of the wire
from ..topics import check_pattern, is_pattern, matches
from ._config import Reconnect, Timeouts, backoff, websocket_url
from ._events import (
    CloseSocket,
    Connected,
    Deliver,
    Disconnected,
    Event,
    Gap,
    Handshake,
    Listener,
    Rejected,
    Resolved,
    ServerNotice,
    State,
    SubscriptionLost,
)
from ._exceptions import (
    BosBaseError,
    ClientClosed,
    ConnectionClosed,
    InvalidRequest,
    RequestTimeout,
    TransportError,
    describe_close,
    server_error,
)
from ._requests import HOLD_ACK_FOR, Deadlines, HeldAck, Kind, Request, publish_lost
from ._topics import BacklogMonitor, Topic, after, check_topic, subscribe_frame
from ._types import Message, PublishAck, ReplayGap

__all__ = [
    "BacklogMonitor",
    "CloseSocket",
    "Connected",
    "Deliver",
    "Disconnected",
    "Event",
    "Gap",
    "Handshake",
    "Listener",
    "PubSubCore",
    "Rejected",
    "Resolved",
    "ServerNotice",
    "State",
    "SubscriptionLost",
]

USER_AGENT = "bosbase-pubsub-python"
RESERVED_ENVELOPE_KEYS = frozenset({"type", "topic", "data", "requestId", "key"})
MAX_KEY_LENGTH = 128
"""The longest publish ``key`` the server takes."""

_CloseReason = Literal["reconnect", "timeout", "disconnect", "close"]


class PubSubCore:
    """The client side of the pub/sub contract for one ``BosBase`` client.

    Not thread-safe: the sync shell holds a lock around it, the asyncio shell
    calls it from its event loop only.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeouts: Timeouts,
        reconnect: Reconnect,
        rng: random.Random | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.timeouts = timeouts
        self._reconnect = reconnect
        self._rng = rng
        self._backoff = backoff(reconnect, rng)
        self._ws_url = websocket_url(base_url)
        self._user_agent = user_agent

        self.state = State.IDLE
        self.connect_at: float | None = None
        """When the shell should open the next connection; ``None``: no connection wanted."""
        self.client_id = ""
        """The server's id for the current connection (from ``ready``)."""
        self.last_error: BosBaseError | None = None
        """Why the last connection or attempt failed (cleared once connected)."""

        self._token = ""
        self._query: dict[str, str] = {}
        self._headers: dict[str, str] = {}
        self._handshake_version = 0
        self._socket_version = -1
        self._ready_deadline: float | None = None
        self._closing: _CloseReason | None = None
        self._reconnect_pending = False

        self._topics: dict[str, Topic] = {}
        self._patterns: dict[str, Topic] = {}
        """The wildcard subscriptions among ``_topics`` (a message goes to each that matches)."""
        self._requests: dict[str, Request] = {}
        self._queue: dict[str, Request] = {}
        self._auth_waiting: str | None = None
        """The ``auth`` frame in flight: requests made after it wait for its answer, so
        that they act with the identity it gives (or go on the reconnect if refused)."""
        self._deadlines = Deadlines()
        self._sync_waiting: set[str] = set()
        self._in_flight_publishes = 0
        self._held: dict[str, HeldAck] = {}
        """Publish acks waiting for their own message, by message id."""
        self.server_resumes = False
        """The server sent a ``position``: it keeps the resume extension, so a lost
        publish may be sent again with its key."""
        self.server_renews_tokens: bool | None = None
        """Whether the server takes ``auth`` frames: ``None`` until one is answered."""
        self._ids = itertools.count(1)

        self._events: list[Event] = []
        self._outbox: list[bytes] = []

    # --- outputs ----------------------------------------------------------------------

    def events_received(self) -> list[Event]:
        """What happened since the last call, in order."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Frames to write on the socket, in order (each one text frame)."""
        frames, self._outbox = self._outbox, []
        return frames

    def next_deadline(self) -> float | None:
        """The earliest moment ``tick`` (or a connection attempt) is due, if any."""
        # Called after every frame: no allocation on the common path.
        earliest = self._deadlines.earliest(self._requests)
        for moment in (self.connect_at, self._ready_deadline):
            if moment is not None and (earliest is None or moment < earliest):
                earliest = moment
        if self._held:
            held = min(held.deadline for held in self._held.values())
            if earliest is None or held < earliest:
                earliest = held
        return earliest

    @property
    def output_pending(self) -> bool:
        """``data_to_send`` has frames."""
        return bool(self._outbox)

    @property
    def is_connected(self) -> bool:
        # Not while a close this client asked for is under way (``disconnect``).
        return self.state is State.OPEN and self._closing is None

    @property
    def topics(self) -> list[str]:
        """The subscribed topics."""
        return list(self._topics)

    @property
    def pending(self) -> int:
        """Requests waiting for a reply or for a connection."""
        return len(self._requests)

    # --- handshake --------------------------------------------------------------------

    def set_token(self, token: str, now: float) -> None:
        """The auth token changed: the next handshake carries it; an open socket to
        this server gets it in an ``auth`` frame, other sockets reconnect."""
        if token == self._token:
            return
        self._token = token
        live = self._socket_live() and not self._reconnect_pending
        if live and self.server_resumes and self.server_renews_tokens is not False:
            fields = {"type": "auth", "requestId": self._next_id(), "token": token}
            request = self._request(
                fields["requestId"], "auth", "", orjson.dumps(fields), now, None
            )
            self._register(request)
            self._send(request)
            self._auth_waiting = request.id
        else:
            self._handshake_changed(now)

    def _token_not_renewed(self, now: float, *, unsupported: bool) -> None:
        """An ``auth`` frame failed: hand the token over with a reconnect instead (the
        requests waiting for it go on the new socket)."""
        self._auth_waiting = None
        if unsupported:
            self.server_renews_tokens = False
        self._handshake_changed(now)

    def update_handshake(
        self,
        query: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        now: float,
    ) -> None:
        """Merge ``query`` parameters and ``headers`` into the handshake; reconnect if
        that changes it (the server reads them only when the socket opens)."""
        for extra in (query, headers):
            for key, value in (extra or {}).items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise InvalidRequest("query and headers must map strings to strings")
        changed = False
        for target, extra in ((self._query, query), (self._headers, headers)):
            for key, value in (extra or {}).items():
                if target.get(key) != value:
                    target[key] = value
                    changed = True
        if changed:
            self._handshake_changed(now)

    def _handshake_changed(self, now: float) -> None:
        self._handshake_version += 1
        if self.state in (State.SYNCING, State.OPEN):
            self._reconnect_pending = True
            self._maybe_finish_drain()
        elif self.state is State.WAITING:
            self.connect_at = now
        # CONNECTING: ``ready`` sees the version changed and reconnects.

    def start_connecting(self, now: float) -> Handshake:
        """The shell is opening a socket now; returns what its handshake must carry."""
        self._check_not_closed()
        self.state = State.CONNECTING
        self.connect_at = None
        self._ready_deadline = now + self.timeouts.connect
        self._socket_version = self._handshake_version
        url = self._ws_url
        if self._query:
            url += "?" + urlencode(self._query)
        headers: dict[str, str] = {"User-Agent": self._user_agent}
        if self._token:
            headers["Authorization"] = self._token
        headers.update(self._headers)
        return Handshake(url, tuple(headers.items()))

    # --- application requests ---------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        handler: Any,
        now: float,
        *,
        timeout: float | None = None,
        since: str | None = None,
        on_gap: Any = None,
    ) -> tuple[Listener, str | None]:
        """Add ``handler`` on ``topic``; with ``since`` (a position), replay from there.

        Returns the listener and the id of the request to wait for, or ``None``
        when the topic is already subscribed on the live connection.

        Raises ``InvalidRequest`` for ``since`` on a topic this client already
        subscribes to (the server replays only on a topic's first subscribe).
        """
        self._check_not_closed()
        topic = check_topic(topic)
        bad_pattern = check_pattern(topic)
        if bad_pattern is not None:
            raise InvalidRequest(bad_pattern)
        if since is not None and (not isinstance(since, str) or not since):
            raise InvalidRequest("since must be a position (a non-empty string)")
        entry = self._topics.get(topic)
        if since is not None and entry is not None:
            raise InvalidRequest(
                f"since needs a topic this client does not subscribe to yet ({topic!r} is)"
            )
        listener = Listener(topic, handler, on_gap)
        if entry is None:
            entry = self._topics[topic] = Topic(topic)
            if entry.segments is not None:
                self._patterns[topic] = entry
            entry.position = since
        entry.listeners += (listener,)
        if entry.active:
            return listener, None
        request_id = self._next_id()
        # The frame is built when it is written (``_send``): it names the position then.
        request = self._request(request_id, "subscribe", topic, b"", now, timeout)
        request.listener = listener
        self._submit(request, now)
        return listener, request_id

    def remove_listener(self, listener: Listener, now: float) -> None:
        """Remove one handler; the last one of a topic unsubscribes it."""
        if not listener.active:
            return
        listener.active = False
        entry = self._topics.get(listener.topic)
        if entry is None:
            return
        entry.listeners = tuple(item for item in entry.listeners if item is not listener)
        if not entry.listeners:
            self._drop_topic(entry, now)

    def unsubscribe(self, topic: str | None, now: float) -> None:
        """Remove every handler of ``topic``, or of every topic when it is ``None``."""
        self._check_not_closed()
        if topic is None:
            entries = list(self._topics.values())
            self._topics.clear()
            self._patterns.clear()
            for entry in entries:
                self._forget_topic(entry)
            if self._socket_live():
                self._send_unsubscribe("", now)
            return
        found = self._topics.get(check_topic(topic))
        if found is not None:
            self._drop_topic(found, now)

    def publish(
        self,
        topic: str,
        data: Any,
        now: float,
        *,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        key: str | None = None,
    ) -> str:
        """Queue a publish; returns the request id whose ``Resolved`` carries the ack.

        ``key`` (a fresh random one by default) lets the server store it once
        even when it is sent again after a lost connection.

        Raises ``InvalidRequest`` for an empty topic, a ``data`` that is not
        JSON or is over the server's size limit, a ``body`` that sets an
        envelope field the client owns, or a ``key`` that is empty or too long.
        """
        self._check_not_closed()
        topic = check_topic(topic)
        if key is None:
            key = uuid.uuid4().hex
        elif not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
            raise InvalidRequest(f"key must be a string of 1 to {MAX_KEY_LENGTH} characters")
        payload = protocol.encode_payload(data)
        if isinstance(payload, str):
            raise InvalidRequest(payload)
        request_id = self._next_id()
        frame = self._publish_frame(topic, payload, request_id, body, key)
        self._submit(self._request(request_id, "publish", topic, frame, now, timeout), now)
        return request_id

    def cancel(self, request_id: str, now: float) -> None:
        """The caller stopped waiting (its own timeout, or a cancelled task)."""
        request = self._requests.get(request_id)
        if request is not None:
            self._finish(request)
            self._failed(request, now)

    def disconnect(self, now: float) -> None:
        """Drop every subscription, fail every pending request, close the socket.

        A later request opens a new connection.
        """
        self._check_not_closed()
        self._abandon_all(ConnectionClosed("disconnected by the client"), now)
        if self.state in (State.CONNECTING, State.SYNCING, State.OPEN):
            self._ask_close("disconnect", 1000, "client disconnected")
        else:
            self.state = State.IDLE
            self.connect_at = None

    def close(self, now: float) -> None:
        """Like ``disconnect``, for good: every later call raises ``ClientClosed``."""
        if self.state is State.CLOSED:
            return
        self._abandon_all(ClientClosed("the client was closed"), now)
        live = self.state in (State.CONNECTING, State.SYNCING, State.OPEN)
        self.state = State.CLOSED
        self.connect_at = None
        self._ready_deadline = None
        if live:
            self._closing = "close"
            self._events.append(CloseSocket(1000, "client closed"))

    # --- connection events ------------------------------------------------------------

    def receive(self, frame: bytes | str, now: float) -> None:
        """One text frame from the server."""
        envelope = decode_json(frame)
        if type(envelope) is not dict:
            return
        kind = envelope.get("type")
        if kind == "message":
            self._on_message(envelope)
        elif kind == "ready":
            if self.state is State.CONNECTING and self._closing is None:
                self._on_ready(envelope, now)
        elif kind == "error":
            self._on_error(envelope, now)
        elif kind in ("published", "subscribed", "unsubscribed", "pong"):
            self._on_reply(kind, envelope, now)
        elif kind == "authenticated":
            request = self._requests.get(envelope.get("requestId", ""))
            if request is not None:
                self.server_renews_tokens = True
                self._finish(request)
                if request.id == self._auth_waiting:
                    self._auth_waiting = None
                    if self._can_send():  # what waited for it goes out now, in order
                        queue, self._queue = self._queue, {}
                        for waiting in queue.values():
                            self._send(waiting)
        # Anything else is from a newer server: ignored.

    def connection_failed(self, error: BosBaseError, now: float) -> None:
        """The attempt started by ``start_connecting`` failed before the upgrade."""
        self.connection_lost(error, now)

    def connection_lost(
        self,
        error: BosBaseError | None,
        now: float,
        *,
        code: int | None = None,
        reason: str = "",
    ) -> None:
        """The socket ended (an error, the server's close, or the close we asked for)."""
        if self.state in (State.IDLE, State.WAITING):
            return
        closing, self._closing = self._closing, None
        self._auth_waiting = None  # its socket is gone: the next handshake carries the token
        was_closed = self.state is State.CLOSED
        established = self.state in (State.SYNCING, State.OPEN)
        self.state = State.WAITING  # while the in-flight requests are sorted out
        # Frames not written yet belong to the dead socket: what must go out again
        # is queued below, after ``ready``, in order (never before it, nor twice).
        self._outbox.clear()
        self._ready_deadline = None
        self._reconnect_pending = False
        self._sync_waiting.clear()
        self.client_id = ""
        if closing == "timeout" and self.last_error is not None:
            error = self.last_error  # we closed it: say why
        elif error is None:
            error = ConnectionClosed(describe_close(code, reason), code=code, reason=reason)
        for entry in self._topics.values():
            entry.active = False
        self._release_held()
        again: list[Request] = []
        for request in list(self._requests.values()):
            if not request.sent:
                continue
            if request.kind == "subscribe":
                again.append(request)  # subscribing is idempotent
            elif request.kind == "publish" and self.server_resumes:
                self._in_flight_publishes -= 1
                again.append(request)  # the same key: the server stores it once
            elif request.kind == "publish":
                self._finish(request)
                self._events.append(Rejected(request.id, publish_lost(error)))
            else:  # re-subscribes are redone; unsubscribes need no new connection
                self._finish(request)
        if again:
            for request in again:
                request.sent = False
            # Creation order (ids count up), so that a publisher's order holds.
            waiting = [*again, *self._queue.values()]
            waiting.sort(key=lambda request: int(request.id))
            self._queue = {request.id: request for request in waiting}
        if was_closed:
            self.state = State.CLOSED
            return
        expected = closing in ("reconnect", "disconnect")
        if not expected:
            self.last_error = error
        retry_in = self._plan_connection(now, immediate=expected)
        self._events.append(Disconnected(None if expected else error, retry_in, established))

    def tick(self, now: float) -> None:
        """Expire what is past its deadline."""
        if (
            self._ready_deadline is not None
            and now >= self._ready_deadline
            and self.state is State.CONNECTING
        ):
            self._ready_deadline = None
            self.last_error = TransportError(
                f"the server did not get ready within {self.timeouts.connect:g}s"
            )
            self._ask_close("timeout", 1000, "connect timeout")
        while (request_id := self._deadlines.pop_due(now)) is not None:
            request = self._requests.get(request_id)
            if request is None:
                continue
            self._finish(request)
            self._expired(request, now)
        if self._held:
            for message_id, held in list(self._held.items()):
                if held.deadline <= now:  # the message never came: the ack stands
                    self._release_held(message_id)

    # --- incoming frames --------------------------------------------------------------

    def _on_message(self, envelope: dict[str, Any]) -> None:
        topic = envelope.get("topic")
        if type(topic) is not str:
            return
        entry = self._topics.get(topic)
        if self._patterns:
            # Every subscription the topic matches gets it once (wildcards: docs/reference/sdk.md).
            segments = topic.split("/")
            for pattern in self._patterns.values():
                if pattern.segments is not None and matches(pattern.segments, segments):
                    self._deliver_to(pattern, topic, envelope)
        if entry is not None:
            self._deliver_to(entry, topic, envelope)
        if self._held:
            held = self._held.pop(envelope.get("id", ""), None)
            if held is not None:
                self._events.append(Resolved(held.request_id, held.ack))

    def _pattern_for(self, topic: str) -> Topic | None:
        """An active wildcard subscription matching ``topic``, if any."""
        if self._patterns:
            segments = topic.split("/")
            for entry in self._patterns.values():
                wildcard = entry.segments
                if entry.active and wildcard is not None and matches(wildcard, segments):
                    return entry
        return None

    def _deliver_to(self, entry: Topic, topic: str, envelope: dict[str, Any]) -> None:
        position = envelope.get("position")
        message: Message = {
            "id": envelope.get("id", ""),
            "topic": topic,
            "data": envelope.get("data"),
            "created": envelope.get("created", ""),
        }
        if type(position) is str and position:
            if entry.position is not None and not after(position, entry.position):
                return  # delivered already (a replay overlapping live delivery)
            entry.position = message["position"] = position
        self._events.append(Deliver(message, entry.listeners))

    def _on_ready(self, envelope: dict[str, Any], now: float) -> None:
        if self._socket_version != self._handshake_version:
            self._ask_close("reconnect", 1000, "reconnecting with a new identity")
            return
        client_id = envelope.get("clientId")
        self.client_id = client_id if isinstance(client_id, str) else ""
        position = envelope.get("position")
        if isinstance(position, str) and position:
            # The server announces the resume extension from the first frame on.
            self.server_resumes = True
        self._ready_deadline = None
        self.state = State.SYNCING
        waiting = self._sync_waiting
        waiting.clear()
        queued_topics = {r.topic for r in self._queue.values() if r.kind == "subscribe"}
        for entry in self._topics.values():
            if entry.name in queued_topics:
                continue  # its queued subscribe goes out below
            request_id = self._next_id()
            request = self._request(request_id, "resubscribe", entry.name, b"", now, None)
            self._register(request)
            self._send(request)
            waiting.add(request_id)
        queue, self._queue = self._queue, {}
        for request in queue.values():
            self._send(request)
            if request.kind == "subscribe":
                waiting.add(request.id)
        if not waiting:
            self._become_open()

    def _on_reply(self, kind: str, envelope: dict[str, Any], now: float) -> None:
        request = self._requests.get(envelope.get("requestId", ""))
        if request is None:
            return  # late: it timed out or was cancelled
        self._finish(request)
        value: PublishAck | None = None
        position = envelope.get("position")
        if type(position) is not str or not position:
            position = None
        elif not self.server_resumes:
            self.server_resumes = True
        if kind == "published":
            ack: PublishAck = {
                "id": envelope.get("id", ""),
                "topic": envelope.get("topic", request.topic),
                "created": envelope.get("created", ""),
            }
            if position is not None:
                ack["position"] = position
            value = ack
            entry = self._topics.get(request.topic) or self._pattern_for(request.topic)
            if (
                entry is not None
                and entry.active
                and type(ack["id"]) is str
                # A resent publish whose message was delivered before the loss: no wait.
                and (position is None or entry.position is None or after(position, entry.position))
            ):
                # Our own copy follows the ack: answer once it has been delivered.
                deadline = min(request.deadline, now + HOLD_ACK_FOR)
                self._held[ack["id"]] = HeldAck(request.id, request.topic, ack, deadline)
                return
        elif kind == "subscribed":
            entry = self._topics.get(request.topic)
            if entry is not None:
                entry.active = True
                self._on_subscribed(entry, request, envelope.get("replay"), position)
        self._events.append(Resolved(request.id, value))

    def _on_subscribed(
        self, entry: Topic, request: Request, replay: object, position: str | None
    ) -> None:
        since = request.since
        if since is None or replay not in ("pruned", "unknown"):
            if entry.position is None:
                entry.position = position  # nothing delivered yet: resume from here
            return
        if replay == "unknown" and position is not None:
            entry.position = position  # ours means nothing to this store: start over
        gap: ReplayGap = {
            "topic": entry.name,
            "replay": "pruned" if replay == "pruned" else "unknown",
            "since": since,
            "position": position,
        }
        self._events.append(Gap(gap, entry.listeners))

    def _on_error(self, envelope: dict[str, Any], now: float) -> None:
        text = envelope.get("message")
        message = text if isinstance(text, str) and text else "unknown error"
        request_id = envelope.get("requestId")
        request = self._requests.get(request_id) if isinstance(request_id, str) else None
        if request is None:
            topic = envelope.get("topic")
            entry = self._topics.get(topic) if type(topic) is str and not request_id else None
            if entry is not None:
                # Ours: the server withdrew the subscription (the topic rules no
                # longer allow it after a token change); it is gone there already.
                del self._topics[entry.name]
                self._patterns.pop(entry.name, None)
                self._forget_topic(entry)
                self._events.append(SubscriptionLost(entry.name, server_error(message)))
                return
            self._events.append(ServerNotice(message))
            return
        self._finish(request)
        if request.kind == "auth":
            self._token_not_renewed(now, unsupported=message == protocol.ERR_UNSUPPORTED_TYPE)
            return
        error = server_error(message)
        if request.kind == "resubscribe":
            entry = self._topics.get(request.topic)
            if entry is not None:
                self._drop_topic(entry, now)
                self._events.append(SubscriptionLost(request.topic, error))
        elif request.kind == "subscribe" and request.listener is not None:
            self.remove_listener(request.listener, now)
        self._events.append(Rejected(request.id, error))

    # --- requests ---------------------------------------------------------------------

    def _next_id(self) -> str:
        return str(next(self._ids))

    def _request(
        self,
        request_id: str,
        kind: Kind,
        topic: str,
        frame: bytes,
        now: float,
        timeout: float | None,
    ) -> Request:
        timeout = self.timeouts.request if timeout is None else timeout
        if not timeout > 0:
            raise InvalidRequest("timeout must be above 0")
        return Request(request_id, kind, topic, frame, now + timeout, timeout)

    def _register(self, request: Request) -> None:
        self._requests[request.id] = request
        self._deadlines.add(request.deadline, request.id)

    def _submit(self, request: Request, now: float) -> None:
        self._register(request)
        if self._can_send():
            self._send(request)
            return
        self._queue[request.id] = request
        if self.state is State.IDLE:
            self.state = State.WAITING
            self.connect_at = now

    def _send(self, request: Request) -> None:
        request.sent = request.ever_sent = True
        kind = request.kind
        if kind == "publish":
            self._in_flight_publishes += 1
        elif kind == "subscribe" or kind == "resubscribe":
            entry = self._topics.get(request.topic)
            request.since = entry.position if entry is not None else None
            request.frame = subscribe_frame(request.topic, request.id, request.since)
        self._outbox.append(request.frame)

    def _finish(self, request: Request) -> None:
        """Forget a request that got its answer, expired or was abandoned."""
        del self._requests[request.id]
        self._queue.pop(request.id, None)
        if request.sent and request.kind == "publish":
            self._in_flight_publishes -= 1
        if request.id in self._sync_waiting:
            self._sync_waiting.discard(request.id)
            if not self._sync_waiting and self.state is State.SYNCING:
                self._become_open()
        self._maybe_finish_drain()

    def _expired(self, request: Request, now: float) -> None:
        if request.kind == "auth":  # internal: nobody waits for it
            self._token_not_renewed(now, unsupported=False)
            return
        if request.sent:
            error = RequestTimeout(f"no reply from the server within {request.timeout:g}s")
            if request.kind == "resubscribe" and self._socket_live():
                # The server answers subscribes at once; silence means a dead link.
                self.last_error = error
                self._ask_close("timeout", 1000, "re-subscribe timed out")
        else:
            detail = f" (last error: {self.last_error})" if self.last_error else ""
            what = f"no connection to the server within {request.timeout:g}s{detail}"
            if request.ever_sent and request.kind == "publish":
                # Sent before its connection dropped, then queued to be resent.
                what = (
                    f"no reply from the server within {request.timeout:g}s: the connection"
                    " dropped after the publish was sent, and none came back in time; it may"
                    f" or may not have been stored (resend it with the same key){detail}"
                )
            error = RequestTimeout(what)
        self._failed(request, now)
        self._events.append(Rejected(request.id, error))

    def _failed(self, request: Request, now: float) -> None:
        if request.kind == "subscribe" and request.listener is not None:
            self.remove_listener(request.listener, now)

    def _abandon_all(self, error: BosBaseError, now: float) -> None:
        self._release_held()
        self._sync_waiting.clear()
        self._reconnect_pending = False
        for request in list(self._requests.values()):
            self._finish(request)
            self._events.append(Rejected(request.id, error))
        self._deadlines.clear()
        entries = list(self._topics.values())
        self._topics.clear()
        self._patterns.clear()
        for entry in entries:
            self._forget_topic(entry)

    # --- topics -----------------------------------------------------------------------

    def _drop_topic(self, entry: Topic, now: float) -> None:
        """Leave a topic: listeners off, queued subscribes answered, the server told."""
        if self._topics.get(entry.name) is entry:
            del self._topics[entry.name]
            self._patterns.pop(entry.name, None)
        if self._held:
            self._release_held(topic=entry.name)
        self._forget_topic(entry)
        if self._socket_live():
            self._send_unsubscribe(entry.name, now)

    def _forget_topic(self, entry: Topic) -> None:
        for listener in entry.listeners:
            listener.active = False
        entry.listeners = ()
        # A queued subscribe for a topic left before it went out: nothing to send.
        for request in list(self._queue.values()):
            if request.kind == "subscribe" and request.topic == entry.name:
                self._finish(request)
                self._events.append(Resolved(request.id, None))

    def _release_held(self, message_id: str | None = None, *, topic: str | None = None) -> None:
        """Answer held acks: one by message id, those of a topic, or all."""
        if message_id is not None:
            ids = [message_id]
        else:
            ids = [key for key, held in self._held.items() if topic in (None, held.topic)]
        for key in ids:
            held = self._held.pop(key)
            self._events.append(Resolved(held.request_id, held.ack))

    def _send_unsubscribe(self, topic: str, now: float) -> None:
        request_id = self._next_id()
        fields: dict[str, str | bool] = {"type": "unsubscribe", "requestId": request_id}
        if topic:
            fields["topic"] = topic
            if is_pattern(topic):
                fields["pattern"] = True
        request = self._request(request_id, "unsubscribe", topic, orjson.dumps(fields), now, None)
        self._register(request)
        self._send(request)

    # --- frames -----------------------------------------------------------------------

    @staticmethod
    def _publish_frame(
        topic: str, payload: bytes, request_id: str, body: Mapping[str, Any] | None, key: str
    ) -> bytes:
        fields: dict[str, Any] = {}
        if body:
            clash = RESERVED_ENVELOPE_KEYS.intersection(body)
            if clash:
                names = ", ".join(sorted(clash))
                raise InvalidRequest(f"body may not set the envelope's own fields ({names})")
            fields.update(body)
        fields.update(type="publish", topic=topic, requestId=request_id, key=key)
        try:
            head = orjson.dumps(fields)
        except TypeError as error:
            raise InvalidRequest(f"body is not JSON: {error}") from None
        # ``data`` is spliced in as the compact JSON already checked for size.
        return b"".join((head[:-1], b',"data":', payload, b"}"))

    # --- connection -------------------------------------------------------------------

    def _can_send(self) -> bool:
        return self._socket_live() and not self._reconnect_pending and self._auth_waiting is None

    def _socket_live(self) -> bool:
        return self.state in (State.SYNCING, State.OPEN) and self._closing is None

    def _become_open(self) -> None:
        self.state = State.OPEN
        self.last_error = None
        self._backoff = backoff(self._reconnect, self._rng)
        self._events.append(Connected(self.client_id))
        self._maybe_finish_drain()

    def _maybe_finish_drain(self) -> None:
        if (
            self._reconnect_pending
            and self._in_flight_publishes == 0
            and self._closing is None
            and self.state in (State.SYNCING, State.OPEN)
        ):
            self._reconnect_pending = False
            self._ask_close("reconnect", 1000, "reconnecting with a new identity")

    def _ask_close(self, why: _CloseReason, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = why
            self._events.append(CloseSocket(code, reason))

    def _plan_connection(self, now: float, *, immediate: bool) -> float | None:
        """After a loss: wait for the next attempt if anything needs a connection."""
        if not (self._topics or self._queue):
            self.state = State.IDLE
            self.connect_at = None
            return None
        delay = 0.0 if immediate else next(self._backoff)
        self.state = State.WAITING
        self.connect_at = now + delay
        return delay

    def _check_not_closed(self) -> None:
        if self.state is State.CLOSED:
            raise ClientClosed("the client was closed")
