"""The benchmark's connections: subscribers that count, publishers that pace.

Raw WebSocket connections (the ``websockets`` library, no SDK), speaking the
contract's envelopes, so that the figures are the server's and not a client
library's reconnect or bookkeeping logic. Every message's data carries
``{"p": publisher, "s": sequence, "t": due}``: ``t`` is the ``time.monotonic()``
at which the publish was *due* (open loop: a publish sent late still counts
from when it was due, so a stalled server cannot hide its stall), and since
the subscribers run in the same process the same clock reads its arrival.

Each subscriber keeps one byte per (publisher, sequence) it received, each
publisher one byte per sequence acked; ``lost`` at the end is what was acked
and is missing at a subscriber, duplicates are counted apart.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .stats import LatencyHistogram, Timeline

_MAX_FRAME = 1024 * 1024


class SetupError(Exception):
    """A connection could not be opened, or the server refused a subscribe."""


class Tally:
    """The counts of one run, shared by every connection (one event loop, no locks)."""

    def __init__(self, start: float, *, publishers: int, with_subscribers: bool) -> None:
        self.timeline = Timeline(start)
        self.ack_latency = LatencyHistogram()
        self.delivery_latency = LatencyHistogram()
        self.with_subscribers = with_subscribers
        self.sent = 0
        self.acked = 0
        self.delivered = 0
        self.duplicates = 0
        self.publish_errors = 0
        self.connection_errors = 0
        self.error_messages: Counter[str] = Counter()
        self.acked_by_publisher = [bytearray() for _ in range(publishers)]
        self.last_ack = start
        self.last_delivery = start

    def error(self, message: str, *, connection: bool = False) -> None:
        if connection:
            self.connection_errors += 1
        else:
            self.publish_errors += 1
        self.error_messages[message] += 1
        self.timeline.at(time.monotonic()).errors += 1


def ws_url(base_url: str) -> str:
    """``http://host:port`` → ``ws://host:port/api/pubsub`` (``https`` → ``wss``)."""
    base = base_url.rstrip("/")
    scheme, rest = base.split("://", 1)
    return ("wss" if scheme == "https" else "ws") + "://" + rest + "/api/pubsub"


async def open_connection(url: str, token: str | None, timeout: float) -> ClientConnection:
    """Connect and wait for ``ready``; raises ``SetupError`` with the reason."""
    headers = {"Authorization": token} if token else None
    try:
        ws = await connect(
            url,
            additional_headers=headers,
            compression=None,  # the server offers none; say so up front
            max_size=_MAX_FRAME,
            open_timeout=timeout,
            close_timeout=2,  # the end of a run waits for no slow goodbye
        )
    except InvalidStatus as error:
        raise SetupError(f"the server refused the WebSocket: {error}") from None
    except (OSError, InvalidHandshake, asyncio.TimeoutError) as error:
        raise SetupError(f"cannot connect to {url}: {error or type(error).__name__}") from None
    try:
        ready = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    except ConnectionClosed as closed:
        await ws.close()
        raise SetupError(f"the server closed the connection: {_close_reason(closed)}") from None
    except asyncio.TimeoutError:
        await ws.close()
        raise SetupError("no 'ready' from the server") from None
    if ready.get("type") != "ready":
        await ws.close()
        raise SetupError(f"expected 'ready', got {ready!r}")
    return ws


def _close_reason(closed: ConnectionClosed) -> str:
    frame = closed.rcvd
    if frame is None:
        return "without a close frame"
    hints = {
        1008: "refused (too many connections from this address? see --max-connections-per-address)",
        1013: "slow consumer (the bench client fell behind)",
    }
    return f"code {frame.code} {hints.get(frame.code, frame.reason)}".strip()


class Subscriber:
    """One subscribed connection; counts every message of the run's topic."""

    def __init__(self, ws: ClientConnection, tally: Tally, publishers: int) -> None:
        self.ws = ws
        self.tally = tally
        self.received = [bytearray() for _ in range(publishers)]
        self.distinct = 0
        self.closed = False
        """The connection ended (the drain stops waiting for it)."""

    @classmethod
    async def start(
        cls, url: str, topic: str, tally: Tally, publishers: int, timeout: float
    ) -> Subscriber:
        ws = await open_connection(url, None, timeout)
        try:
            await ws.send(
                orjson.dumps({"type": "subscribe", "topic": topic, "requestId": "s"}).decode()
            )
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
        except (ConnectionClosed, asyncio.TimeoutError) as error:
            await ws.close()
            raise SetupError(f"subscribe got no answer: {error or 'timeout'}") from None
        if reply.get("type") != "subscribed":
            await ws.close()
            raise SetupError(f"subscribe refused: {reply.get('message', reply)}")
        return cls(ws, tally, publishers)

    async def read(self) -> None:
        """Count messages until the connection closes (run as a task)."""
        tally = self.tally
        try:
            async for frame in self.ws:
                message = orjson.loads(frame)
                if message.get("type") != "message":
                    continue
                now = time.monotonic()
                data = message["data"]
                seen = self.received[data["p"]]
                sequence = data["s"]
                if sequence >= len(seen):
                    seen.extend(bytes(max(sequence + 1 - len(seen), len(seen))))
                if seen[sequence]:
                    tally.duplicates += 1
                    continue
                seen[sequence] = 1
                self.distinct += 1
                tally.delivered += 1
                tally.last_delivery = now
                second = tally.timeline.at(now)
                second.delivered += 1
                second.latency.record(now - data["t"])
        except ConnectionClosed as closed:
            if closed.rcvd is None or closed.rcvd.code != 1000:
                tally.error(f"subscriber closed: {_close_reason(closed)}", connection=True)
        finally:
            self.closed = True


class Publisher:
    """One authenticated connection publishing ``count`` messages at ``rate`` per second."""

    def __init__(self, index: int, ws: ClientConnection, tally: Tally, *, in_flight: int) -> None:
        self.index = index
        self.ws = ws
        self.tally = tally
        self.pending: dict[str, tuple[int, float]] = {}
        self.window = asyncio.Semaphore(in_flight)
        self.acked = tally.acked_by_publisher[index]

    async def publish(
        self,
        topic: str,
        *,
        count: int,
        rate: float,
        start: float,
        end: float,
        padding: str,
    ) -> None:
        """Publish until ``count`` are sent or ``end`` (monotonic) passes."""
        tally = self.tally
        interval = 1 / rate if rate else 0.0
        for sequence in itertools.count():
            if sequence >= count:
                return
            now = time.monotonic()
            due = start + sequence * interval if interval else now
            if due > now:
                # Everything already due went out back to back; wait for the next.
                await asyncio.sleep(due - now)
            if time.monotonic() >= end:
                return
            await self.window.acquire()
            request_id = str(sequence)
            self.pending[request_id] = (sequence, due)
            data = {"p": self.index, "s": sequence, "t": due, "x": padding}
            envelope = {"type": "publish", "topic": topic, "requestId": request_id, "data": data}
            try:
                await self.ws.send(orjson.dumps(envelope).decode())
            except ConnectionClosed:
                self.pending.pop(request_id, None)
                return  # the reader counts the close
            tally.sent += 1
            tally.timeline.at(time.monotonic()).sent += 1

    async def read(self) -> None:
        """Match acks and errors to the publishes (run as a task)."""
        tally = self.tally
        try:
            async for frame in self.ws:
                reply: dict[str, Any] = orjson.loads(frame)
                entry = self.pending.pop(reply.get("requestId", ""), None)
                if entry is None:
                    continue
                self.window.release()
                sequence, due = entry
                now = time.monotonic()
                if reply.get("type") != "published":
                    tally.error(f"publish: {reply.get('message', reply.get('type'))}")
                    continue
                if sequence >= len(self.acked):
                    self.acked.extend(bytes(max(sequence + 1 - len(self.acked), len(self.acked))))
                self.acked[sequence] = 1
                tally.acked += 1
                tally.last_ack = now
                tally.ack_latency.record(now - due)
                second = tally.timeline.at(now)
                second.acked += 1
                if not tally.with_subscribers:
                    second.latency.record(now - due)
        except ConnectionClosed as closed:
            if closed.rcvd is None or closed.rcvd.code != 1000:
                tally.error(f"publisher closed: {_close_reason(closed)}", connection=True)
        finally:
            # Whatever is still pending will get no answer now: an error each.
            for _ in self.pending:
                self.window.release()
                tally.error("publish: no answer before the connection closed")
            self.pending.clear()


def lost(subscribers: list[Subscriber], tally: Tally) -> int:
    """Acked messages missing at a subscriber, summed over the subscribers.

    The byte maps hold 0 or 1, so AND-ing them as big integers and counting
    the set bits counts the acked messages a subscriber has, in C speed.
    """
    acked = [int.from_bytes(a, "little") for a in tally.acked_by_publisher]
    acked_counts = [sum(a) for a in tally.acked_by_publisher]
    missing = 0
    for subscriber in subscribers:
        for index, received in enumerate(subscriber.received):
            have = (int.from_bytes(received, "little") & acked[index]).bit_count()
            missing += acked_counts[index] - have
    return missing
