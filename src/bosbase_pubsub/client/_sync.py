"""The client for threads: ``BosBase``.

Threads (started on first use of ``client.pubsub``, ended by ``close()``):

* the **socket thread** owns the socket. It steps a ``_link.Link`` (websockets'
  sans-I/O ``ClientProtocol`` on a non-blocking socket: connect, TLS, upgrade,
  frames, keepalive pings) in a ``poll`` loop, feeds the core, writes what the
  core queues, and fires the core's timers. No application code runs on it,
  so pings are answered and acks are read even while a handler is slow.
* the **dispatcher thread** calls the message handlers, one message at a
  time, in the order the server sent them.
* application threads call ``publish``/``subscribe``: they update the core
  under ``PubSub._lock``, wake the socket thread, and wait on a future that
  the socket thread completes when the reply (or the deadline) comes.

Why not ``websockets.sync.client``: it reads on a thread of its own and hands
over one message at a time through a queue, so every message would cross
threads twice before a handler saw it; here one ``recv()`` of many frames
becomes one batch for the dispatcher, and the core's deadlines share the
socket thread's ``poll`` instead of needing a timer thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast

import httpx

from ._auth import AuthStore
from ._config import (
    DEFAULT_RECONNECT,
    DEFAULT_TIMEOUTS,
    Reconnect,
    Timeouts,
    as_timeouts,
    normalize_base_url,
)
from ._core import (
    BacklogMonitor,
    CloseSocket,
    Connected,
    Deliver,
    Disconnected,
    Event,
    Gap,
    Handshake,
    Listener,
    PubSubCore,
    Rejected,
    Resolved,
    ServerNotice,
    State,
    SubscriptionLost,
)
from ._exceptions import (
    ClientClosed,
    RequestTimeout,
    TransportError,
)
from ._link import Link, wait
from ._records import ApiCall, RecordService, build_request, read_answer, send_failed
from ._refresh import TokenRefresher
from ._types import GapHandler, Handler, Message, PublishAck

__all__ = ["BosBase", "PubSub"]

log = logging.getLogger("bosbase_pubsub.client")

T = TypeVar("T")

_WAIT_GRACE = 1.0
"""Callers wait this much past a request's deadline before giving up on the socket
thread (which should have failed the request by then)."""
DRAIN_TIMEOUT = 5.0
"""How long ``close()`` lets handlers finish the messages already received."""


class BosBase:
    """A BosBase client for threads: accounts over HTTP, pub/sub over one WebSocket.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8090``.
        auth_store: where the token lives (a new, empty one by default); share
            one between clients to sign them in together.
        timeout: seconds to wait for any reply, or a ``Timeouts`` for finer control.
        reconnect: the schedule of reconnection attempts.
        auto_refresh: refresh a built-in token before it expires (``auth-refresh``),
            so that a long-lived client stays signed in; an open pub/sub socket gets
            the new token without reconnecting. See ``_refresh``.

    Use it as a context manager, or call ``close()``: that ends its threads and
    closes its sockets.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth_store: AuthStore | None = None,
        timeout: float | Timeouts = DEFAULT_TIMEOUTS,
        reconnect: Reconnect = DEFAULT_RECONNECT,
        auto_refresh: bool = True,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.auth_store = auth_store if auth_store is not None else AuthStore()
        self.timeouts = as_timeouts(timeout)
        self.pubsub = PubSub(self.base_url, self.auth_store, self.timeouts, reconnect)
        """Publish and subscribe (see ``PubSub``)."""
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()
        self._closed = False
        self._refresher = (
            TokenRefresher(
                self.auth_store, lambda collection: self.collection(collection).auth_refresh()
            )
            if auto_refresh
            else None
        )

    def collection(self, name: str) -> RecordService:
        """The record API of a collection, e.g. ``client.collection("users")``."""
        return RecordService(self, name)

    def close(self) -> None:
        """Close the WebSocket and the HTTP connections and end the client's threads.

        Pending requests fail with ``ClientClosed``. Idempotent.
        """
        self._closed = True
        if self._refresher is not None:
            self._refresher.close()
        self.pubsub.close()
        with self._http_lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def __enter__(self) -> BosBase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BosBase({self.base_url!r})"

    def _send(self, call: ApiCall[T]) -> T:
        """Send one record API call; save the token when it signs in."""
        if self._closed:
            raise ClientClosed("the client was closed")
        with self._http_lock:
            if self._http is None:
                self._http = httpx.Client(
                    base_url=self.base_url,
                    timeout=httpx.Timeout(self.timeouts.request, connect=self.timeouts.connect),
                )
            http = self._http
        request = build_request(http, call, self.auth_store.token)
        try:
            response = http.send(request)
        except httpx.HTTPError as error:
            raise send_failed(error, self.base_url, self.timeouts.request) from error
        return read_answer(call, response, self.auth_store)


class PubSub:
    """Publish and subscribe over one WebSocket that reconnects on its own.

    Reached as ``client.pubsub``. Every method may be called from any thread,
    including from inside a handler.
    """

    def __init__(
        self, base_url: str, auth_store: AuthStore, timeouts: Timeouts, reconnect: Reconnect
    ) -> None:
        self._timeouts = timeouts
        self._core = PubSubCore(base_url, timeouts=timeouts, reconnect=reconnect)
        self._lock = threading.Lock()
        self._waiters: dict[str, _Waiter] = {}
        self._socket_thread: threading.Thread | None = None
        self._dispatcher: _Dispatcher | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._wake_pending = False
        self._remove_auth_callback = auth_store.on_change(
            self._on_auth_change, fire_immediately=True
        )

    # --- the API ----------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        data: Any = None,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        key: str | None = None,
    ) -> PublishAck:
        """Publish ``data`` (any JSON value) on ``topic``; returns the server's ack
        ``{id, topic, created}`` (and ``position``) once the message is stored.

        Without a connection it waits for one, within ``timeout``. Requests are
        pipelined: many threads may publish at once over the one socket. When
        this client subscribes to ``topic``, it returns after its own handlers
        got the message (read-your-writes).

        Args:
            body: extra fields merged into the publish envelope (not ``type``,
                ``topic``, ``data`` or ``requestId``).
            query, headers: added to the WebSocket handshake, the only place
                the server reads them; new values reconnect first.
            timeout: seconds to wait for the ack (default ``Timeouts.request``).
            key: the publish's idempotency key (at most 128 characters; a fresh
                random one by default). If the connection drops before the ack,
                the publish is sent again with it after the reconnect, within
                ``timeout``, and the server stores it once.

        Raises:
            AuthError: the connection has no valid token (``authentication
                required to publish``).
            ServerError: any other refusal (``payload too large``, rate limit...).
            RequestTimeout: no ack (or no connection) in time.
            ConnectionClosed: the connection dropped before the ack, and the
                server never showed it keeps keys (the resume extension): the
                message may or may not have been stored.
            InvalidRequest: an empty topic, or data that is not JSON or too large.
            ClientClosed: the client was closed.
        """

        def start(now: float) -> str | None:
            self._core.update_handshake(query, headers, now)
            return self._core.publish(topic, data, now, body=body, timeout=timeout, key=key)

        return cast(PublishAck, self._call(start, timeout))

    def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        since: str | None = None,
        on_gap: GapHandler | None = None,
    ) -> Callable[[], None]:
        """Call ``handler(message)`` for every message on ``topic``, from now on
        (or from ``since``).

        Returns once the server confirmed the subscription, with a function
        that removes this handler (the last one removed unsubscribes the topic).
        Handlers run on the dispatcher thread, one message at a time, in the
        server's order; an exception in one is logged and delivery goes on.
        After a reconnect the topic resumes from the last message delivered,
        with no gap and no duplicate.

        Args:
            since: a position (``message["position"]``, ``ack["position"]``):
                first replay every message of the topic stored after it. Only
                for a topic this client does not subscribe to yet.
            on_gap: called with a ``ReplayGap`` (on the dispatcher thread,
                before the messages that follow) when a resume, or ``since``,
                could not replay everything; without one, a warning is logged.

        Raises ``ServerError`` if the server refuses (e.g. too many
        subscriptions), ``RequestTimeout``, ``InvalidRequest``, ``ClientClosed``.
        """
        if not callable(handler):
            raise TypeError("handler must be callable")
        if on_gap is not None and not callable(on_gap):
            raise TypeError("on_gap must be callable")
        holder: list[Listener] = []

        def start(now: float) -> str | None:
            self._core.update_handshake(query, headers, now)
            listener, request_id = self._core.subscribe(
                topic, handler, now, timeout=timeout, since=since, on_gap=on_gap
            )
            holder.append(listener)
            return request_id

        self._call(start, timeout)
        listener = holder[0]

        def unsubscribe() -> None:
            """Remove this handler (idempotent)."""
            with self._lock:
                self._core.remove_listener(listener, time.monotonic())
            self._wake()

        return unsubscribe

    def unsubscribe(self, topic: str | None = None) -> None:
        """Remove every handler of ``topic`` (of every topic when ``None``).

        Takes effect at once (no handler of the topic is called afterwards); the
        server is told without waiting for its ack.
        """
        with self._lock:
            self._core.unsubscribe(topic, time.monotonic())
        self._wake()

    def disconnect(self) -> None:
        """Close the connection and drop every subscription; pending requests fail
        with ``ConnectionClosed``. A later publish or subscribe connects again."""
        with self._lock:
            self._core.disconnect(time.monotonic())
        self._wake()

    def is_connected(self) -> bool:
        """Connected, with every topic subscribed (false while reconnecting)."""
        return self._core.is_connected

    @property
    def topics(self) -> list[str]:
        """The topics subscribed to."""
        with self._lock:
            return self._core.topics

    def close(self) -> None:
        """Close the connection and end the threads (``BosBase.close`` calls this)."""
        with self._lock:
            self._core.close(time.monotonic())
            thread, dispatcher = self._socket_thread, self._dispatcher
        self._remove_auth_callback()
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._timeouts.close + 5.0)
            if thread.is_alive():
                log.warning("the socket thread did not end in time")
        if dispatcher is not None:
            dispatcher.stop()
        with self._lock:
            wake_r, wake_w = self._wake_r, self._wake_w
            self._wake_r = self._wake_w = None
        for sock in (wake_r, wake_w):
            if sock is not None:
                sock.close()
        # Without a socket thread, the core's last events are handled here.
        self._handle(self._take_events())

    # --- callers ----------------------------------------------------------------------

    def _call(self, start: Callable[[float], str | None], timeout: float | None) -> Any:
        """Run ``start`` on the core; wait for the reply of the request it made."""
        self._start_threads()
        dispatcher = self._dispatcher
        waiter = _Waiter(ordered=dispatcher is not None and not dispatcher.is_current())
        future = waiter.future
        with self._lock:
            request_id = start(time.monotonic())
            if request_id is not None:
                self._waiters[request_id] = waiter
        self._wake()
        if request_id is None:
            return None
        wait = (self._timeouts.request if timeout is None else timeout) + _WAIT_GRACE
        try:
            return future.result(wait)
        except concurrent.futures.TimeoutError:
            # Since Python 3.11 that is the builtin TimeoutError, which our own
            # RequestTimeout (set by the socket thread) also is.
            if future.done():
                raise
            if waiter.acked is not _UNSET:  # stored; only our own handlers are slow
                return waiter.acked
            raise RequestTimeout(f"no reply within {wait - _WAIT_GRACE:g}s") from None
        finally:
            if not future.done():
                with self._lock:
                    self._waiters.pop(request_id, None)
                    self._core.cancel(request_id, time.monotonic())

    def _on_auth_change(self, token: str, record: object) -> None:
        with self._lock:
            self._core.set_token(token, time.monotonic())
        self._wake()

    def _wake(self) -> None:
        """Have the socket thread look at the core again (coalesced: one byte until it
        has read it)."""
        wake_w = self._wake_w
        if wake_w is None or self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(OSError):  # full (the thread is busy anyway) or closed
            wake_w.send(b"\0")

    def _start_threads(self) -> None:
        with self._lock:
            if self._core.state is State.CLOSED:
                raise ClientClosed("the client was closed")
            if self._socket_thread is not None:
                return
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._wake_pending = False
            self._dispatcher = _Dispatcher()
            self._socket_thread = threading.Thread(
                target=self._run, name="bosbase-pubsub-socket", daemon=True
            )
            self._socket_thread.start()

    # --- the socket thread ------------------------------------------------------------

    def _take_events(self) -> list[Event]:
        with self._lock:
            return self._core.events_received()

    def _handle(self, events: list[Event], link: Link | None = None) -> None:
        """Act on the core's events: queue deliveries, answer callers, close sockets.

        Deliveries reach the dispatcher before any answer that follows them. The
        core answers a publish right after its own message (read-your-writes);
        that answer goes through the dispatcher too, so ``publish`` returns once
        the publisher's own handlers have run (unless it publishes from one).
        """
        dispatcher = self._dispatcher
        waiters = self._waiters
        batch: list[Deliver | Gap] = []
        for event in events:
            kind = type(event)
            if kind is Deliver:
                batch.append(cast(Deliver, event))
                continue
            if kind is Gap:
                if _tell_gap(cast(Gap, event)):
                    batch.append(cast(Gap, event))
                continue
            after_messages = bool(batch)
            if batch and dispatcher is not None:
                dispatcher.put(batch)
                batch = []
            if kind is Resolved:
                resolved = cast(Resolved, event)
                waiter = waiters.pop(resolved.request_id, None)
                if waiter is None:
                    continue
                if after_messages and waiter.ordered and dispatcher is not None:
                    waiter.acked = resolved.value
                    dispatcher.put_answer(waiter)
                else:
                    waiter.answer(resolved.value)
            elif kind is Rejected:
                rejected = cast(Rejected, event)
                waiter = waiters.pop(rejected.request_id, None)
                if waiter is not None and not waiter.future.done():
                    waiter.future.set_exception(rejected.error)
            elif kind is CloseSocket:
                if link is not None:
                    close = cast(CloseSocket, event)
                    link.close(close.code, close.reason, time.monotonic())
            else:
                _log_event(event)
        if batch and dispatcher is not None:
            dispatcher.put(batch)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # pragma: no cover - a bug: fail what waits, loudly
            log.exception("the pub/sub socket thread failed")
            with self._lock:
                self._core.close(time.monotonic())
            self._handle(self._take_events())
            raise

    def _loop(self) -> None:
        core = self._core
        wake_r = self._wake_r
        assert wake_r is not None
        link: Link | None = None
        while True:
            now = time.monotonic()
            with self._lock:
                core.tick(now)
                if link is None and core.state is State.CLOSED:
                    events = core.events_received()
                    break
                handshake: Handshake | None = None
                if link is None and core.connect_at is not None and core.connect_at <= now:
                    handshake = core.start_connecting(now)
                frames = core.data_to_send()
                events = core.events_received()
                deadline = core.next_deadline()
            if frames and link is not None:
                link.send_texts(frames)
            self._handle(events, link)
            if handshake is not None:
                link = Link(handshake, self._timeouts)
                link.start(now)
            if link is not None and link.done:
                self._link_ended(link)
                link = None
                continue

            if link is not None:
                link_deadline = link.next_timer()
                if link_deadline is not None:
                    deadline = link_deadline if deadline is None else min(deadline, link_deadline)
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            sock = link.sock if link is not None else None
            want_read = link is not None and link.wants_read
            want_write = link is not None and link.wants_write
            wake, readable, writable = wait(wake_r, sock, want_read, want_write, timeout)
            now = time.monotonic()
            if wake:
                with contextlib.suppress(OSError):
                    while wake_r.recv(4096):
                        pass
                # Only now: a byte sent after the reset must stay unread until the
                # next wait, or a wake-up would be lost.
                self._wake_pending = False
            if link is None:
                continue
            if writable:
                link.on_writable(now)
            if readable and not link.done:
                texts = link.on_readable(now)
                if texts:
                    with self._lock:
                        receive = core.receive
                        for text in texts:
                            receive(text, now)
            link.check_timers(now)
            if link.done:
                self._link_ended(link)
                link = None
        self._handle(events)

    def _link_ended(self, link: Link) -> None:
        """Tell the core that the link's socket is gone."""
        now = time.monotonic()
        with self._lock:
            if link.opened:
                self._core.connection_lost(
                    link.error, now, code=link.close_code, reason=link.close_reason
                )
            else:
                error = link.error or TransportError("the connection attempt failed")
                self._core.connection_failed(error, now)


def _tell_gap(event: Gap) -> bool:
    """Whether a listener takes the gap (``on_gap``); if none does, log it."""
    if any(listener.on_gap is not None for listener in event.listeners):
        return True
    gap = event.gap
    log.warning(
        "resuming %r from %s: replay %s, messages may be missing (pass on_gap to subscribe"
        " to handle it)",
        gap["topic"],
        gap["since"],
        gap["replay"],
    )
    return False


def _log_event(event: Event) -> None:
    if isinstance(event, Connected):
        log.info("pub/sub connected (client id %s)", event.client_id)
    elif isinstance(event, Disconnected) and event.error is not None:
        retry = "" if event.retry_in is None else f"; retrying in {event.retry_in:.2f}s"
        if event.established:
            log.warning("pub/sub connection lost: %s%s", event.error, retry)
        else:
            log.info("pub/sub connection attempt failed: %s%s", event.error, retry)
    elif isinstance(event, SubscriptionLost):
        log.error("the server ended the subscription %r: %s", event.topic, event.error)
    elif isinstance(event, ServerNotice):
        log.warning("the server reported: %s", event.message)


_UNSET: Any = object()


class _Waiter:
    """A caller waiting for the reply to its request."""

    __slots__ = ("acked", "future", "ordered")

    def __init__(self, *, ordered: bool) -> None:
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.ordered = ordered
        """Not on the dispatcher thread: may be answered through it."""
        self.acked: Any = _UNSET
        """The ack, once the server sent it, while the answer waits for the handlers."""

    def answer(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)


class _Dispatcher:
    """The thread that calls message handlers, batch by batch, in order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[Deliver | Gap] | _Waiter | None] = queue.SimpleQueue()
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self._monitor = BacklogMonitor()
        self._given_up = False
        """Set when ``stop`` stopped waiting: no handler is called after that."""
        self._thread = threading.Thread(
            target=self._run, name="bosbase-pubsub-dispatcher", daemon=True
        )
        self._thread.start()

    def put(self, batch: list[Deliver | Gap]) -> None:
        with self._backlog_lock:
            self._backlog += len(batch)
            warning = self._monitor.check(self._backlog, time.monotonic())
        if warning:
            log.warning(warning)
        self._queue.put(batch)

    def put_answer(self, waiter: _Waiter) -> None:
        """Answer ``waiter`` once the messages queued before it were handled."""
        self._queue.put(waiter)

    def is_current(self) -> bool:
        return self._thread is threading.current_thread()

    def stop(self) -> None:
        """Let the messages already received be handled, then end the thread."""
        self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(DRAIN_TIMEOUT)
            if self._thread.is_alive():
                # A thread cannot be stopped: the running handler ends on its own, but
                # the messages after it are dropped, as close() promises.
                self._given_up = True
                log.warning(
                    "a handler is still running %gs after close(); the messages not yet"
                    " handled are dropped",
                    DRAIN_TIMEOUT,
                )

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if isinstance(batch, _Waiter):
                batch.answer(batch.acked)
                continue
            for deliver in batch:
                if self._given_up:
                    return
                if type(deliver) is Gap:
                    _call_on_gap(deliver)
                    continue
                message: Message = cast(Deliver, deliver).message
                for listener in deliver.listeners:
                    if self._given_up:
                        return
                    try:
                        listener.handler(message)
                    except Exception:
                        log.exception("a handler of topic %r failed", listener.topic)
            with self._backlog_lock:
                self._backlog -= len(batch)
                self._monitor.check(self._backlog, time.monotonic())


def _call_on_gap(event: Gap) -> None:
    for listener in event.listeners:
        if listener.on_gap is None:
            continue
        try:
            listener.on_gap(event.gap)
        except Exception:
            log.exception("an on_gap callback of topic %r failed", listener.topic)
