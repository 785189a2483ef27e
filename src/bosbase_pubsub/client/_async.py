"""The client for asyncio: ``AsyncBosBase``, the twin of ``BosBase`` with its verbs awaited.

Tasks (started on first use of ``client.pubsub``, ended by ``close()``), each
the counterpart of a thread of the sync client:

* the **connection task** (the socket thread's role) opens the WebSocket with
  ``websockets.asyncio.client.connect`` when the core asks, reads frames into
  the core until the socket ends, and reports the loss; keepalive pings are
  websockets' own.
* the **writer task** writes the frames the core queues, in order.
* the **dispatcher task** calls handlers one message at a time, in the
  server's order, awaiting the ``async`` ones; so a slow handler never stops
  the connection task from reading acks and answering pings.

The core's deadlines are one ``loop.call_later`` timer. Everything runs on the
event loop that first used the client.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.protocol import State as WsState

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
    Deliver,
    Event,
    Gap,
    Handshake,
    Listener,
    PubSubCore,
    Rejected,
    Resolved,
    State,
    SubscriptionLost,
)
from ._exceptions import (
    BosBaseError,
    ClientClosed,
    ClientError,
    TransportError,
    transport_error,
)
from ._link import MAX_MESSAGE_BYTES
from ._records import ApiCall, AsyncRecordService, build_request, read_answer, send_failed
from ._refresh import AsyncTokenRefresher
from ._sync import DRAIN_TIMEOUT, _log_event, _tell_gap
from ._types import AsyncGapHandler, AsyncHandler, Message, PublishAck

__all__ = ["AsyncBosBase", "AsyncPubSub", "MessageStream"]

log = logging.getLogger("bosbase_pubsub.client")

T = TypeVar("T")

_YIELD_EVERY = 256
"""The dispatcher lets the loop run after this many handler calls in a row."""
# websockets >= 14 sends bytes as a text frame as they are; 13 needs a str.
_SEND_BYTES_AS_TEXT = "text" in inspect.signature(ClientConnection.send).parameters


class AsyncBosBase:
    """A BosBase client for asyncio: ``BosBase`` with every verb awaited.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8090``.
        auth_store: where the token lives (a new, empty one by default).
        timeout: seconds to wait for any reply, or a ``Timeouts``.
        reconnect: the schedule of reconnection attempts.
        auto_refresh: refresh a built-in token before it expires (``auth-refresh``),
            so that a long-lived client stays signed in; an open pub/sub socket gets
            the new token without reconnecting. See ``_refresh``.

    Use ``async with AsyncBosBase(...) as client``, or ``await client.close()``:
    that ends its tasks and closes its sockets.
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
        self.pubsub = AsyncPubSub(self.base_url, self.auth_store, self.timeouts, reconnect)
        """Publish and subscribe (see ``AsyncPubSub``)."""
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        """The loop ``_http`` was made on (its connections belong to it)."""
        self._closed = False
        self._refresher = (
            AsyncTokenRefresher(
                self.auth_store, lambda collection: self.collection(collection).auth_refresh()
            )
            if auto_refresh
            else None
        )

    def collection(self, name: str) -> AsyncRecordService:
        """The record API of a collection, e.g. ``client.collection("users")``."""
        return AsyncRecordService(self, name)

    async def close(self) -> None:
        """Close the WebSocket and the HTTP connections and end the client's tasks.

        Pending requests fail with ``ClientClosed``. Idempotent.
        """
        self._closed = True
        if self._refresher is not None:
            await self._refresher.close()
        await self.pubsub.close()
        http, self._http = self._http, None
        if http is not None and not (self._http_loop is not None and self._http_loop.is_closed()):
            await http.aclose()  # (on an ended loop its connections ended with it)

    async def __aenter__(self) -> AsyncBosBase:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncBosBase({self.base_url!r})"

    async def _send(self, call: ApiCall[T]) -> T:
        """Send one record API call; save the token when it signs in."""
        if self._closed:
            raise ClientClosed("the client was closed")
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeouts.request, connect=self.timeouts.connect),
            )
            self._http_loop = asyncio.get_running_loop()
        http = self._http
        request = build_request(http, call, self.auth_store.token)
        try:
            response = await http.send(request)
        except httpx.HTTPError as error:
            raise send_failed(error, self.base_url, self.timeouts.request) from error
        return read_answer(call, response, self.auth_store)


class _Done:
    """An awaitable that is already complete: lets ``unsubscribe()`` be awaited or not."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


_DONE = _Done()


class AsyncPubSub:
    """Publish and subscribe over one WebSocket that reconnects on its own (asyncio).

    Reached as ``client.pubsub``; the verbs of ``PubSub``, awaited.
    """

    def __init__(
        self, base_url: str, auth_store: AuthStore, timeouts: Timeouts, reconnect: Reconnect
    ) -> None:
        self._timeouts = timeouts
        self._core = PubSubCore(base_url, timeouts=timeouts, reconnect=reconnect)
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[ClientConnection] | None = None
        self._ws: ClientConnection | None = None
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._close_requested: CloseSocket | None = None
        self._wakeup = asyncio.Event()
        self._writable = asyncio.Event()
        self._backlog: deque[Deliver | Gap] = deque()
        self._backlog_ready = asyncio.Event()
        self._monitor = BacklogMonitor()
        self._stop_dispatching = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._streams: set[MessageStream] = set()
        self._remove_auth_callback = auth_store.on_change(
            self._on_auth_change, fire_immediately=True
        )

    # --- the API ----------------------------------------------------------------------

    async def publish(
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
        """Publish ``data`` on ``topic``; returns the ack ``{id, topic, created}``
        (and ``position``).

        Arguments (``key`` included: a lost publish is sent again with it after
        the reconnect), waiting and errors are those of ``PubSub.publish``.
        Publishes from many tasks at once are pipelined over the one socket.
        """

        def start(now: float) -> str | None:
            self._core.update_handshake(query, headers, now)
            return self._core.publish(topic, data, now, body=body, timeout=timeout, key=key)

        return cast(PublishAck, await self._call(start))

    async def subscribe(
        self,
        topic: str,
        handler: AsyncHandler,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        since: str | None = None,
        on_gap: AsyncGapHandler | None = None,
    ) -> Callable[[], Awaitable[None]]:
        """Call ``handler(message)`` for every message on ``topic``, from now on
        (or from ``since``).

        ``handler`` may be a plain or an ``async`` function; either way the
        dispatcher task calls it one message at a time, in the server's order
        (awaiting it before the next), and logs what it raises. ``since`` and
        ``on_gap`` (which may be ``async`` too) are those of ``PubSub.subscribe``;
        after a reconnect the topic resumes from the last message delivered.

        Returns, once the server confirmed, a function removing this handler;
        calling it takes effect at once, and it may be awaited or not.
        """
        listener = await self._subscribe(
            topic,
            handler,
            query=query,
            headers=headers,
            timeout=timeout,
            since=since,
            on_gap=on_gap,
        )

        def unsubscribe() -> Awaitable[None]:
            """Remove this handler (idempotent)."""
            self._remove(listener)
            return _DONE

        return unsubscribe

    async def _subscribe(
        self,
        topic: str,
        handler: AsyncHandler,
        *,
        query: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        timeout: float | None,
        since: str | None,
        on_gap: AsyncGapHandler | None,
    ) -> Listener:
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

        await self._call(start)
        return holder[0]

    def stream(
        self,
        topic: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        since: str | None = None,
        on_gap: AsyncGapHandler | None = None,
    ) -> MessageStream:
        """The messages of ``topic`` (from ``since``, if given) as an async iterator::

            async with client.pubsub.stream("chat/general") as messages:
                async for msg in messages:
                    ...

        ``async for msg in client.pubsub.stream(topic)`` works too (it
        subscribes on the first step); ``async with`` also unsubscribes when
        the block ends. Messages wait in the stream until read.
        """
        return MessageStream(
            self,
            topic,
            query=query,
            headers=headers,
            timeout=timeout,
            since=since,
            on_gap=on_gap,
        )

    async def unsubscribe(self, topic: str | None = None) -> None:
        """Remove every handler of ``topic`` (of every topic when ``None``); see
        ``PubSub.unsubscribe``."""
        self._core.unsubscribe(topic, time.monotonic())
        self._pump()
        self._end_streams()

    async def disconnect(self) -> None:
        """Close the connection and drop every subscription; see ``PubSub.disconnect``."""
        self._core.disconnect(time.monotonic())
        self._pump()
        self._end_streams()

    def is_connected(self) -> bool:
        """Connected, with every topic subscribed (false while reconnecting)."""
        return self._core.is_connected

    @property
    def topics(self) -> list[str]:
        """The topics subscribed to."""
        return self._core.topics

    async def close(self) -> None:
        """Close the connection and end the tasks (``AsyncBosBase.close`` calls this)."""
        self._core.close(time.monotonic())
        self._remove_auth_callback()
        if self._loop is not None and self._loop.is_closed():
            # The loop that ran the client has ended, and its tasks and socket with it.
            self._runner = self._dispatcher = self._timer = None
            return
        self._pump()
        self._end_streams()
        self._wakeup.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            done, _ = await asyncio.wait({runner}, timeout=self._timeouts.close + 5.0)
            if not done:
                log.warning("the pub/sub connection task did not end in time")
                runner.cancel()
                await asyncio.wait({runner})
        if self._closing_tasks:
            await asyncio.wait(set(self._closing_tasks))
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None and dispatcher is not asyncio.current_task():
            self._stop_dispatching = True
            self._backlog_ready.set()
            done, _ = await asyncio.wait({dispatcher}, timeout=DRAIN_TIMEOUT)
            if not done:
                log.warning("a handler is still running %gs after close()", DRAIN_TIMEOUT)
                dispatcher.cancel()
                await asyncio.wait({dispatcher})
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None

    # --- callers ----------------------------------------------------------------------

    async def _call(self, start: Callable[[float], str | None]) -> Any:
        """Run ``start`` on the core; await the reply of the request it made."""
        loop = self._start()
        request_id = start(time.monotonic())
        if request_id is None:
            self._pump()
            return None
        future: asyncio.Future[Any] = loop.create_future()
        self._waiters[request_id] = future
        self._pump()
        try:
            return await future
        finally:
            if future.cancelled() or not future.done():
                self._waiters.pop(request_id, None)
                self._core.cancel(request_id, time.monotonic())
                self._pump()

    def _remove(self, listener: Listener) -> None:
        self._core.remove_listener(listener, time.monotonic())
        if self._loop is not None:
            self._pump()

    def _on_auth_change(self, token: str, record: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._core.set_token(token, time.monotonic())
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._set_token(token)
        else:  # changed from another thread
            loop.call_soon_threadsafe(self._set_token, token)

    def _set_token(self, token: str) -> None:
        self._core.set_token(token, time.monotonic())
        self._pump()

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._core.state is State.CLOSED:
            raise ClientClosed("the client was closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._runner = loop.create_task(self._run(), name="bosbase-pubsub-connection")
            self._dispatcher = loop.create_task(self._dispatch(), name="bosbase-pubsub-dispatcher")
        elif self._loop is not loop:
            raise ClientError("an AsyncBosBase belongs to the event loop that first used it")
        return loop

    # --- reacting to the core ---------------------------------------------------------

    def _pump(self) -> None:
        """Act on what the core produced: events, frames to write, timers, connecting."""
        core = self._core
        events = core.events_received()
        if events:
            self._handle(events)
        if core.output_pending:
            self._writable.set()
        if core.connect_at is not None:
            self._wakeup.set()
        at = core.next_deadline()
        if at is not None and (self._timer_at is None or at < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            loop = self._loop
            if loop is not None:
                self._timer_at = at
                self._timer = loop.call_later(max(0.0, at - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._core.tick(time.monotonic())
        self._pump()

    def _handle(self, events: list[Event]) -> None:
        """Act on the core's events; deliveries first (see ``PubSub._handle``)."""
        waiters = self._waiters
        backlog = self._backlog
        before = len(backlog)
        backlog.extend(
            event
            for event in events
            if isinstance(event, Deliver) or (isinstance(event, Gap) and _tell_gap(event))
        )
        if len(backlog) != before:
            self._backlog_ready.set()
            warning = self._monitor.check(len(backlog), time.monotonic())
            if warning:
                log.warning(warning)
        for event in events:
            kind = type(event)
            if kind is Deliver or kind is Gap:
                continue
            if kind is Resolved:
                future = waiters.pop(cast(Resolved, event).request_id, None)
                if future is not None and not future.done():
                    future.set_result(cast(Resolved, event).value)
            elif kind is Rejected:
                rejected = cast(Rejected, event)
                future = waiters.pop(rejected.request_id, None)
                if future is not None and not future.done():
                    future.set_exception(rejected.error)
            elif kind is CloseSocket:
                self._close_socket(cast(CloseSocket, event))
            else:
                _log_event(event)
                if kind is SubscriptionLost:
                    self._end_streams(cast(SubscriptionLost, event).error)

    def _close_socket(self, close: CloseSocket) -> None:
        ws, loop = self._ws, self._loop
        if ws is not None and loop is not None:
            task = loop.create_task(ws.close(close.code, close.reason))
            self._closing_tasks.add(task)
            task.add_done_callback(self._closing_tasks.discard)
        elif self._connecting is not None:
            # Too late to cancel if the attempt just succeeded: _connection checks this.
            self._close_requested = close
            self._connecting.cancel()

    def _end_streams(self, error: BosBaseError | None = None) -> None:
        for stream in list(self._streams):
            stream._check(error)

    # --- the connection task ----------------------------------------------------------

    async def _run(self) -> None:
        core = self._core
        while core.state is not State.CLOSED:
            at = core.connect_at
            if at is None or at > time.monotonic():
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            handshake = core.start_connecting(time.monotonic())
            self._pump()
            await self._connection(handshake)

    async def _open(self, handshake: Handshake) -> ClientConnection:
        timeouts = self._timeouts
        return await connect(
            handshake.url,
            additional_headers=handshake.headers,
            user_agent_header=None,
            compression=None,
            open_timeout=timeouts.connect,
            ping_interval=timeouts.ping_interval,
            ping_timeout=timeouts.ping_timeout,
            close_timeout=timeouts.close,
            max_size=MAX_MESSAGE_BYTES,
            max_queue=None,  # the dispatcher's backlog is the queue
        )

    async def _connection(self, handshake: Handshake) -> None:
        """One socket's life: open it, read it until it ends, report the end."""
        core = self._core
        attempt = asyncio.ensure_future(self._open(handshake))
        self._connecting = attempt
        self._close_requested = None
        try:
            await asyncio.wait({attempt})
        except asyncio.CancelledError:
            attempt.cancel()
            raise
        finally:
            self._connecting = None
        if attempt.cancelled():  # the core gave up on it (close, or no ready in time)
            core.connection_failed(
                core.last_error or TransportError("connection attempt abandoned"),
                time.monotonic(),
            )
            self._pump()
            return
        failure = attempt.exception()
        if failure is not None:
            core.connection_failed(transport_error(failure), time.monotonic())
            self._pump()
            return

        ws = attempt.result()
        close, self._close_requested = self._close_requested, None
        if close is not None:  # asked to close while it was being opened
            await ws.close(close.code, close.reason)
            core.connection_lost(None, time.monotonic(), code=close.code, reason=close.reason)
            self._pump()
            return
        self._ws = ws
        writer = asyncio.ensure_future(self._write(ws))
        error: BosBaseError | None = None
        code: int | None = None
        reason = ""
        try:
            recv = ws.recv
            receive = core.receive
            pump = self._pump
            while True:
                try:
                    frame = await recv(decode=False)
                except WsConnectionClosed as closed:
                    if closed.rcvd is not None:
                        code, reason = closed.rcvd.code, closed.rcvd.reason
                    else:  # no close frame: the TCP connection dropped, or no pong came
                        error = TransportError(f"connection lost: {closed}")
                    break
                receive(frame, time.monotonic())
                pump()
        finally:
            self._ws = None
            writer.cancel()
            await asyncio.wait({writer})
            if ws.state is not WsState.CLOSED:  # cancelled: do not leave the socket open
                ws.transport.abort()
        core.connection_lost(error, time.monotonic(), code=code, reason=reason)
        self._pump()

    async def _write(self, ws: ClientConnection) -> None:
        core = self._core
        writable = self._writable
        while True:
            await writable.wait()
            writable.clear()
            try:
                for frame in core.data_to_send():
                    if _SEND_BYTES_AS_TEXT:
                        await ws.send(frame, text=True)
                    else:  # pragma: no cover - websockets 13
                        await ws.send(frame.decode())
            except WsConnectionClosed:
                return  # the reader sees the close and reports it

    # --- the dispatcher task ----------------------------------------------------------

    async def _dispatch(self) -> None:
        backlog = self._backlog
        ready = self._backlog_ready
        calls = 0
        while True:
            if not backlog:
                self._monitor.check(0, time.monotonic())
                if self._stop_dispatching:
                    return  # close(): the messages already received were handled
                ready.clear()
                await ready.wait()
                continue
            deliver = backlog.popleft()
            if type(deliver) is Gap:
                await _call_on_gap(deliver)
                continue
            message = cast(Deliver, deliver).message
            for listener in deliver.listeners:
                try:
                    result = listener.handler(message)
                    if result is not None and inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("a handler of topic %r failed", listener.topic)
                calls += 1
            if calls >= _YIELD_EVERY:
                calls = 0
                await asyncio.sleep(0)


async def _call_on_gap(event: Gap) -> None:
    for listener in event.listeners:
        if listener.on_gap is None:
            continue
        try:
            result = listener.on_gap(event.gap)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("an on_gap callback of topic %r failed", listener.topic)


class MessageStream:
    """The messages of one topic as an async iterator (``client.pubsub.stream(topic)``).

    Subscribes on ``async with`` (or on the first ``__anext__``); ``aclose()``
    (or leaving the ``async with`` block) unsubscribes and ends the iteration.
    The stream also ends when the client disconnects or closes, and raises
    the server's error if it refuses the subscription.
    """

    def __init__(
        self,
        pubsub: AsyncPubSub,
        topic: str,
        *,
        query: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        timeout: float | None,
        since: str | None = None,
        on_gap: AsyncGapHandler | None = None,
    ) -> None:
        self.topic = topic
        self._since = since
        self._on_gap = on_gap
        self._pubsub = pubsub
        self._query = query
        self._headers = headers
        self._timeout = timeout
        self._queue: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._listener: Listener | None = None
        self._ended = False
        self._error: BosBaseError | None = None

    async def subscribe(self) -> None:
        """Subscribe now (``async with`` and the first ``__anext__`` call this)."""
        if self._listener is not None or self._ended:
            return
        pubsub = self._pubsub
        self._listener = await pubsub._subscribe(
            self.topic,
            self._on_message,
            query=self._query,
            headers=self._headers,
            timeout=self._timeout,
            since=self._since,
            on_gap=self._on_gap,
        )
        pubsub._streams.add(self)

    def _on_message(self, message: Message) -> None:
        self._queue.append(message)
        self._ready.set()

    def _check(self, error: BosBaseError | None) -> None:
        """End the stream if its subscription is gone (disconnect, close, refusal)."""
        listener = self._listener
        if listener is not None and not listener.active:
            self._end(error)

    def _end(self, error: BosBaseError | None = None) -> None:
        if not self._ended:
            self._ended = True
            self._error = error
            self._pubsub._streams.discard(self)
            self._ready.set()

    async def aclose(self) -> None:
        """Unsubscribe and end the iteration (idempotent)."""
        if self._listener is not None:
            self._pubsub._remove(self._listener)
        self._end()

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> Message:
        if self._listener is None and not self._ended:
            await self.subscribe()
        while not self._queue:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    async def __aenter__(self) -> MessageStream:
        await self.subscribe()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
