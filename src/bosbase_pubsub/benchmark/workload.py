"""The benchmark's load: subscribers and publishers on raw WebSockets, in this process.

Two modes:

- ``fanout``: ``publishers`` connections publish ``rate`` messages per second in
  total (paced, each with at most ``in_flight`` unanswered publishes) on one topic
  that ``subscribers`` connections subscribe to. Measured: deliveries/s and the
  delivery latency, from the time the publish was *due* (open loop: a publish
  that this process sends late, because it is busy or waiting for an ack slot,
  still counts from when it was due, so a stall cannot hide itself) to the
  message's arrival, on one clock: this process's.
- ``publish``: each publisher sends a publish, waits for its ack (the server
  stored it), sends the next: acked publishes/s and the ack latency.

Every message carries ``{"b": run, "p": publisher, "n": number, "t": due}``; each
publisher's messages arrive in order, so a subscriber counts them per publisher
without keeping them (``stats.Stream``). Bounded: at most ``duration`` seconds of
publishing and ``max_messages`` messages (a publisher still stuck in a send
``drain`` seconds after that, on a server that stopped reading, is cancelled),
then at most ``drain`` seconds to wait for the last acks and deliveries. A
connection the server closes (1001, shutting down; 1013, a slow consumer) is
an error, with its close code, and nothing more is waited for from it.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from .stats import Reservoir, Stream, Timeline

Mode = Literal["fanout", "publish"]
CONNECT_CONCURRENCY = 50
"""Connections opened at once while setting up."""
RECENT_SAMPLES = 20_000
"""Latencies kept between two progress lines (sorting them must stay cheap)."""


@dataclass(frozen=True, slots=True)
class Workload:
    ws_url: str
    token: str
    mode: Mode = "fanout"
    subscribers: int = 100
    publishers: int = 1
    rate: float = 100.0
    """``fanout``: messages per second, all publishers together."""
    duration: float = 10.0
    payload: int = 64
    """Padding bytes in each message's data."""
    topic: str = ""
    max_messages: int = 1_000_000
    drain: float = 10.0
    in_flight: int = 100
    """``fanout``: unanswered publishes one publisher may have."""
    connect_timeout: float = 10.0


@dataclass
class Progress:
    """What the run has done so far (read by the progress line)."""

    started: float = 0.0
    phase: str = "connecting"
    sent: int = 0
    acked: int = 0
    errors: int = 0
    first_error: str = ""
    deliveries: int = 0
    delivery_latency: Reservoir = field(default_factory=Reservoir)
    ack_latency: Reservoir = field(default_factory=Reservoir)
    delivery_timeline: Timeline = field(default_factory=Timeline)
    ack_timeline: Timeline = field(default_factory=Timeline)
    duplicates: int = 0
    connected: int = 0
    recent_latency: Reservoir = field(default_factory=lambda: Reservoir(RECENT_SAMPLES))
    """Latencies since the progress line last read them (its "current" p99)."""
    cpu_started: float = 0.0
    """``time.process_time()`` at the start: the client's own CPU share."""

    def take_recent(self) -> Reservoir:
        """The latencies since the last call, and start a new window."""
        recent, self.recent_latency = self.recent_latency, Reservoir(RECENT_SAMPLES)
        return recent

    def client_cpu_percent(self) -> float:
        """This process's CPU time since the start, in percent of the wall time."""
        wall = self.elapsed()
        return 100 * (time.process_time() - self.cpu_started) / wall if wall > 0 else 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started if self.started else 0.0

    def error(self, message: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = message


class BenchError(Exception):
    """The benchmark could not run (no connection, refused, ...)."""


async def _open(url: str, token: str, timeout: float) -> ClientConnection:
    headers = {"Authorization": token} if token else None
    try:
        ws = await connect(
            url, additional_headers=headers, open_timeout=timeout, max_size=4 * 1024 * 1024
        )
        ready = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    except (OSError, WebSocketException, asyncio.TimeoutError) as error:
        raise BenchError(f"cannot connect to {url}: {error}") from error
    if ready.get("type") != "ready":
        raise BenchError(f"the server did not send ready: {ready}")
    return ws


def _closed_by_server(ws: ClientConnection) -> str | None:
    """What to report for a connection the bench did not close itself, or ``None``.

    Read from the close handshake, not from the exception: websockets ends the
    reading loop quietly on 1000 and 1001, and a server going away is news.
    """
    protocol = ws.protocol
    if protocol.close_sent is not None and not protocol.close_rcvd_then_sent:
        return None  # the bench closed it: the end of the run
    frame = protocol.close_rcvd
    if frame is None:
        return "the connection dropped"
    hints = {
        1001: "the server is shutting down",
        1008: "refused: too many connections from this address (--max-connections-per-address)",
        1013: "a slow consumer: this process did not read fast enough",
    }
    return f"closed with {frame.code}: {hints.get(frame.code, frame.reason or 'no reason')}"


class Subscriber:
    def __init__(self, ws: ClientConnection, run: str, progress: Progress, publishers: int):
        self.ws = ws
        self.run = run
        self.progress = progress
        self.streams = [Stream() for _ in range(publishers)]
        self.closed = False
        """The connection ended: nothing more will come (the drain stops waiting for it)."""

    async def read(self) -> None:
        progress, run, streams = self.progress, self.run, self.streams
        try:
            async for raw in self.ws:
                now = time.perf_counter()
                frame = orjson.loads(raw)
                data = frame.get("data")
                if frame.get("type") != "message" or not isinstance(data, dict):
                    continue
                if data.get("b") != run:
                    continue
                if not streams[data["p"]].add(data["n"]):
                    progress.duplicates += 1
                    continue
                progress.deliveries += 1
                latency_ms = (now - data["t"]) * 1000
                progress.delivery_latency.add(latency_ms)
                progress.recent_latency.add(latency_ms)
                progress.delivery_timeline.add(now - progress.started)
        except ConnectionClosed:
            pass  # what the handshake says is reported below
        finally:
            self.closed = True
        reason = _closed_by_server(self.ws)
        if reason is not None:
            progress.error(f"subscriber {reason}")


class Publisher:
    def __init__(self, ws: ClientConnection, index: int, workload: Workload, run: str,
                 progress: Progress) -> None:  # fmt: skip
        self.ws = ws
        self.index = index
        self.workload = workload
        self.run = run
        self.progress = progress
        self.acked = 0
        self.pending: dict[str, tuple[float, asyncio.Future[None]]] = {}
        self._ids = itertools.count()
        self._pad = "x" * workload.payload
        self.closed = False
        """The connection ended: no ack will come (the drain stops waiting for it)."""

    async def read(self) -> None:
        progress = self.progress
        try:
            async for raw in self.ws:
                frame = orjson.loads(raw)
                entry = self.pending.pop(frame.get("requestId", ""), None)
                if entry is None:
                    continue
                sent, done = entry
                now = time.perf_counter()
                if frame.get("type") == "published":
                    self.acked += 1
                    progress.acked += 1
                    progress.ack_latency.add((now - sent) * 1000)
                    if not self.workload.subscribers:
                        progress.recent_latency.add((now - sent) * 1000)
                    progress.ack_timeline.add(now - progress.started)
                else:
                    progress.error(str(frame.get("message", frame)))
                if not done.done():
                    done.set_result(None)
        except ConnectionClosed:
            pass  # what the handshake says is reported below
        finally:
            self.closed = True
        reason = _closed_by_server(self.ws)
        if reason is not None:
            progress.error(f"publisher {reason}")
        for _, done in self.pending.values():  # the connection ended: nothing more comes
            if not done.done():
                done.set_result(None)

    async def send(self, n: int, due: float | None = None) -> asyncio.Future[None]:
        """Publish message ``n``; its latencies count from ``due`` (default: now)."""
        request_id = str(next(self._ids))
        now = time.perf_counter() if due is None else due
        data = {"b": self.run, "p": self.index, "n": n, "t": now, "pad": self._pad}
        envelope = {"type": "publish", "topic": self.workload.topic, "data": data,
                    "requestId": request_id}  # fmt: skip
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = (now, done)
        self.progress.sent += 1
        try:
            await self.ws.send(orjson.dumps(envelope).decode())
        except ConnectionClosed:
            self.closed = True  # the reader reports the close; the pending one is an error
        return done


async def run_workload(
    workload: Workload, on_start: Callable[[Progress], None] | None = None
) -> dict[str, Any]:
    """Run ``workload``; the raw figures (``report`` turns them into the result)."""
    run = secrets.token_hex(4)
    topic = workload.topic or f"bench/{run}"
    workload = Workload(**{**_fields(workload), "topic": topic})
    progress = Progress()
    if on_start is not None:
        on_start(progress)
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    subscribers: list[Subscriber] = []
    publishers: list[Publisher] = []
    tasks: list[asyncio.Task[None]] = []

    async def add_subscriber() -> None:
        async with limit:
            ws = await _open(workload.ws_url, "", workload.connect_timeout)
            await ws.send(orjson.dumps({"type": "subscribe", "topic": topic, "requestId": "s"}))
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), workload.connect_timeout))
            if reply.get("type") != "subscribed":
                await ws.close()
                raise BenchError(f"subscribe refused: {reply.get('message', reply)}")
            subscribers.append(Subscriber(ws, run, progress, workload.publishers))
            progress.connected += 1

    async def add_publisher(index: int) -> None:
        async with limit:
            ws = await _open(workload.ws_url, workload.token, workload.connect_timeout)
            publishers.append(Publisher(ws, index, workload, run, progress))
            progress.connected += 1

    try:
        await asyncio.gather(
            *(add_subscriber() for _ in range(workload.subscribers)),
            *(add_publisher(i) for i in range(workload.publishers)),
        )
        publishers.sort(key=lambda p: p.index)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(s.read()) for s in subscribers]
        tasks += [loop.create_task(p.read()) for p in publishers]
        progress.phase = "running"
        progress.started = time.perf_counter()
        progress.cpu_started = time.process_time()
        per_publisher = max(1, workload.max_messages // workload.publishers)
        drive = _paced if workload.mode == "fanout" else _closed_loop
        drivers = [loop.create_task(drive(p, workload, per_publisher)) for p in publishers]
        # A send (or an ack slot) can wait for ever on a server that stopped reading.
        # Past the duration, a blocked publisher gets the drain time for its last send.
        _, stuck = await asyncio.wait(drivers, timeout=workload.duration + workload.drain)
        for driver in stuck:
            driver.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        if stuck:
            progress.error(f"{len(stuck)} publisher(s) blocked in a send past the duration")
        for driver in drivers:
            if not driver.cancelled() and (error := driver.exception()) is not None:
                raise error
        published_for = progress.elapsed()
        progress.phase = "draining"
        await _drain(workload, progress, publishers, subscribers)
        return {
            "client_cpu_percent": progress.client_cpu_percent(),
            "run": run,
            "topic": topic,
            "published_seconds": published_for,
            "progress": progress,
            "publishers": publishers,
            "subscribers": subscribers,
        }
    finally:
        progress.phase = "done"
        for task in tasks:
            task.cancel()
        sockets = [s.ws for s in subscribers] + [p.ws for p in publishers]
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def _fields(workload: Workload) -> dict[str, Any]:
    return {name: getattr(workload, name) for name in Workload.__dataclass_fields__}


async def _paced(publisher: Publisher, workload: Workload, count: int) -> None:
    """Publish at ``rate / publishers`` per second, at most ``in_flight`` unanswered."""
    interval = workload.publishers / workload.rate
    window = asyncio.Semaphore(workload.in_flight)
    # Staggered, so that P publishers at R/P each make one even stream of R.
    start = time.perf_counter() + publisher.index / workload.rate
    for n in range(count):
        due = start + n * interval
        # The window ends on time even for a publisher running behind its schedule
        # (the table then says how many of the due publishes were sent).
        if due - start >= workload.duration or time.perf_counter() - start >= workload.duration:
            return
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await window.acquire()
        if publisher.closed:
            return
        done = await publisher.send(n, due)
        done.add_done_callback(lambda _: window.release())


async def _closed_loop(publisher: Publisher, workload: Workload, count: int) -> None:
    """Send, wait for the ack, send the next, until ``duration`` or ``count``."""
    end = time.perf_counter() + workload.duration
    for n in range(count):
        if time.perf_counter() >= end or publisher.closed:
            return
        done = await publisher.send(n)
        try:
            await asyncio.wait_for(done, workload.drain)
        except asyncio.TimeoutError:
            publisher.progress.error("no ack within the drain time")
            return


async def _drain(
    workload: Workload, progress: Progress, publishers: list[Publisher], subs: list[Subscriber]
) -> None:
    """Wait (at most ``drain`` seconds) for the last acks, then for their deliveries."""
    deadline = time.perf_counter() + workload.drain

    def settled() -> bool:
        if any(p.pending and not p.closed for p in publishers):
            return False
        return all(
            s.closed or s.streams[p.index].received >= p.acked for s in subs for p in publishers
        )

    while time.perf_counter() < deadline:  # polled: the readers know nothing of each other
        if settled():
            break
        await asyncio.sleep(0.05)
    for publisher in publishers:
        for _ in publisher.pending:
            progress.error("no ack within the drain time")
