"""Cross-node delivery through PostgreSQL (and NATS JetStream): latency, the cross-node
path's throughput, and acked publishes, each beside its single-node figure from the same run.

    uv run python -m bench.cluster --pg postgres://root@127.0.0.1:5432/test
    uv run python -m bench.cluster --stores postgres,nats --phases latency,xnode,publish

Each phase runs on a fresh database created on the ``--pg`` server (an admin URL; the
database is named ``bench_cluster_<random>`` and dropped after), with fresh nodes. With
``--stores postgres,nats`` the latency, xnode, commit and publish phases also run on a
fresh JetStream stream of the ``--nats`` server (``bench_<random>``, deleted after),
the two stores side by side in one run:

latency   ``--nodes`` nodes (default 3) on one database. One publisher connection per node,
          open loop at ``--rate`` msg/s in all, spread evenly over the nodes (each message
          carries its scheduled send time: a late send counts as latency);
          ``--subscribers`` per node on the topic, so every message is delivered on its own
          node and across nodes. Reported separately: cross-node and same-node p50/p99/max
          publish-to-delivery, and lost / duplicated / out-of-order deliveries. Right
          after, on a fresh database, the same load and client against as many nodes of
          Socket.IO with its PostgreSQL adapter (``baselines/socketio_server.js --pg``;
          ``--no-latency-reference`` skips it), with bosbase's p50/p99 over its own. The
          same load on one node, on PostgreSQL and on SQLite, gives the single-node figures.
path      the cross-node path alone: this process stores rows as another node would (the
          same ``_pubsub_store_batch``: lock, multi-row insert, notify; ``--path-batch`` rows per
          transaction) at each of ``--path-rates`` msg/s for ``--path-step`` s; one
          subscriber per node counts what its node delivers and when.
xnode     end to end across nodes: ``--concurrency``'s largest count of closed-loop
          publishers (the C load generator) on node 1, one subscriber on each other node:
          acked publishes/s, what each other node delivered and how late, lost and
          duplicated messages, and the CPU of node 1 per ack and of each other node per
          message it delivered (reading the feed and writing to one subscriber).
commit    the commit path alone (``bench.commit``: the node's commit queue and store in one
          process, no WebSocket), pinned like the publish phase's node: ``--concurrency``
          in-process publishers each wait for their commit before the next, with group
          commit and with every publish committed alone (``--max-batch 1``), on PostgreSQL;
          and with group commit on SQLite. It splits a publish's cost between the store
          and the WebSocket server.
publish   acked publishes/s with 1 and 64 concurrent publishers on one node (the C load
          generator of ``bench.publish``), on PostgreSQL and on SQLite. Right after the
          PostgreSQL row, on a fresh database and the same ``--server-cpu``, the same load
          against the issue's reference design (``baselines/pg_group_commit.py``: aiohttp,
          asyncpg, group commit as one multi-row insert per batch, no auth, no fan-out);
          ``vs ref`` is bosbase's acks/s over the reference's, both from this run
          (``--no-publish-reference`` skips it).

Each node is one process (``serve --workers 1``; ``--node-workers N`` for more: ``auto``
would start one per CPU, each a node of the cluster of its own, and the publish phase's
node would have been that many processes taking turns on its one pinned core).
The nodes are not pinned (three nodes and PostgreSQL share the machine's cores with the
load generator); the C load generator of the publish phase is pinned like in
``bench.publish``. While this process times deliveries (latency, path, xnode), its own
cyclic garbage collector is paused: a full collection of its records stalled it for about
16 ms, which it would have reported as the servers' latency. Every subprocess is ended on
exit, error, Ctrl-C or SIGTERM, every database this benchmark created is dropped, and
every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson

from .common import (
    SERVER_KINDS,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    BenchError,
    Json,
    LoadGen,
    LoadgenOptions,
    Server,
    ServerOptions,
    bosbase_exe,
    collector_paused,
    ensure_loadgen,
    ensure_node_modules,
    fmt,
    machine_info,
    managed,
    print_table,
    ratio,
    taskset_prefix,
    write_result,
)
from .publish import run_acked
from .stores import DEFAULT_NATS, fresh_stream, process_cpu_seconds

TOPIC = "bench"
DEFAULT_PG = "postgres://root@127.0.0.1:5432/test"


# --------------------------------------------------------------------------- databases


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """A new database on the admin URL's server, dropped on exit."""
    name = f"bench_cluster_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(admin_url, name)
    finally:
        admin = await asyncpg.connect(admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def make_superuser(db_url: str) -> None:
    """The bench superuser, in the database, before any node starts (their sign-in uses it)."""
    with tempfile.TemporaryDirectory(prefix="bench-cluster-cli-") as folder:
        cmd = [*bosbase_exe(), "superuser", "upsert", SUPERUSER_EMAIL, SUPERUSER_PASSWORD]
        res = subprocess.run(
            [*cmd, "--dir", folder, "--db", db_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if res.returncode != 0:
        raise BenchError(f"superuser upsert failed: {res.stderr or res.stdout}")


@contextlib.asynccontextmanager
async def fresh_store(store: str, args: argparse.Namespace) -> AsyncIterator[str]:
    """A new, empty store of kind ``store`` (``postgres`` or ``nats``), with the bench
    superuser in it; dropped on exit."""
    fresh = fresh_database(args.pg) if store == "postgres" else fresh_stream(args.nats)
    async with fresh as url:
        await asyncio.to_thread(make_superuser, url)
        yield url


@contextlib.contextmanager
def nodes(
    count: int, db_url: str | None, workdir: Path, *, cpu: str | None = None, workers: int = 1
) -> Iterator[list[Server]]:
    """``count`` bosbase nodes on ``db_url`` (``None``: one node on its own SQLite file).

    Each node is ``workers`` processes (``serve --workers``; 1 unless ``--node-workers``
    says otherwise: ``auto`` would run one per CPU, each a node of its own).
    """
    extra = ["--db", db_url, "--workers", str(workers)] if db_url else []
    started: list[Server] = []
    try:
        for _ in range(count):
            server = Server(
                SERVER_KINDS["bosbase"], ServerOptions(cpu=cpu, extra_args=extra), workdir
            )
            started.append(server)
            server.start()
        yield started
    finally:
        for server in started:
            server.stop()


# --------------------------------------------------------------------------- statistics


def store_cpu_seconds(store: str) -> float:
    """utime+stime of the local processes of ``store``'s server (0 for SQLite, or when
    the server runs elsewhere)."""
    name = {"postgres": "postgres", "nats": "nats-server"}.get(store)
    return process_cpu_seconds(name) if name else 0.0


def percentiles(samples: Sequence[float]) -> Json:
    if not samples:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(ordered),
        "p50_ms": round(at(0.50), 3),
        "p99_ms": round(at(0.99), 3),
        "max_ms": round(ordered[-1], 3),
    }


# --------------------------------------------------------------------------- clients


class Wire(Protocol):
    """How a client of one kind of server connects, subscribes, publishes and reads."""

    async def connect(
        self, session: aiohttp.ClientSession, server: Server, token: str | None = None
    ) -> aiohttp.ClientWebSocketResponse[bool]: ...

    async def subscribe(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None: ...

    def publish(self, request_id: int, data: Json) -> str:
        """The frame publishing ``data`` to ``TOPIC``, acked under ``request_id``."""
        ...

    def read(self, text: str) -> tuple[str, Any]:
        """What a received frame is: ``("message", data)``, ``("ack", None)``,
        ``("error", message)``, ``("ping", reply frame)`` or ``("other", None)``."""
        ...


class EnvelopeWire:
    """bosbase's JSON envelopes (the contract)."""

    async def connect(
        self, session: aiohttp.ClientSession, server: Server, token: str | None = None
    ) -> aiohttp.ClientWebSocketResponse[bool]:
        headers = {"Authorization": token} if token else {}
        ws = await session.ws_connect(
            f"ws://127.0.0.1:{server.port}/api/pubsub", headers=headers, max_msg_size=0
        )
        ready = await asyncio.wait_for(ws.receive_json(), 10)
        if ready.get("type") != "ready":
            raise BenchError(f"expected ready, got {ready}")
        return ws

    async def subscribe(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        await ws.send_str(
            orjson.dumps({"type": "subscribe", "topic": TOPIC, "requestId": "s"}).decode()
        )
        reply = await asyncio.wait_for(ws.receive_json(), 10)
        if reply.get("type") != "subscribed":
            raise BenchError(f"subscribe failed: {reply}")

    def publish(self, request_id: int, data: Json) -> str:
        envelope = {"type": "publish", "topic": TOPIC, "requestId": str(request_id), "data": data}
        return orjson.dumps(envelope).decode()

    def read(self, text: str) -> tuple[str, Any]:
        frame = orjson.loads(text)
        kind = frame.get("type")
        if kind == "message":
            return "message", frame["data"]
        if kind == "published":
            return "ack", None
        if kind == "error":
            return "error", frame.get("message")
        return "other", None


async def _receive_text(ws: aiohttp.ClientWebSocketResponse[bool]) -> str:
    text = await asyncio.wait_for(ws.receive_str(), 10)
    return text if isinstance(text, str) else text.decode()


class SocketIOWire:
    """Engine.IO 4 / Socket.IO 4 text packets, as ``baselines/socketio_server.js`` speaks them.

    ``0`` open, ``40`` connect, ``42[event, ...]`` an event, ``42<id>[...]`` one
    that wants an ack, ``43<id>[...]`` the ack; ``2`` a ping, answered ``3``.
    """

    async def connect(
        self, session: aiohttp.ClientSession, server: Server, token: str | None = None
    ) -> aiohttp.ClientWebSocketResponse[bool]:
        ws = await session.ws_connect(
            f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket", max_msg_size=0
        )
        opened = await _receive_text(ws)
        if not opened.startswith("0"):
            raise BenchError(f"expected an Engine.IO open packet, got {opened!r}")
        await ws.send_str("40")
        connected = await _receive_text(ws)
        if not connected.startswith("40"):
            raise BenchError(f"expected a Socket.IO connect packet, got {connected!r}")
        return ws

    async def subscribe(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        await ws.send_str("420" + orjson.dumps(["subscribe", TOPIC]).decode())
        reply = await _receive_text(ws)
        if not reply.startswith("430"):
            raise BenchError(f"subscribe failed: {reply!r}")

    def publish(self, request_id: int, data: Json) -> str:
        return (
            f"42{request_id}" + orjson.dumps(["publish", {"topic": TOPIC, "data": data}]).decode()
        )

    def read(self, text: str) -> tuple[str, Any]:
        if text.startswith("42["):
            event = orjson.loads(text[2:])
            if event[0] == "message":
                return "message", event[1]["data"]
        elif text.startswith("43"):
            return "ack", None
        elif text == "2":
            return "ping", "3"
        return "other", None


ENVELOPES = EnvelopeWire()
SOCKET_IO = SocketIOWire()


async def frames(
    ws: aiohttp.ClientWebSocketResponse[bool], wire: Wire
) -> AsyncIterator[tuple[int, str, Any]]:
    """Each frame's arrival time (CLOCK_MONOTONIC ns) and what ``wire`` reads in it.

    Pings are answered here and not passed on.
    """
    async for msg in ws:
        if msg.type is not aiohttp.WSMsgType.TEXT:
            continue
        arrived = time.monotonic_ns()
        kind, value = wire.read(msg.data)
        if kind == "ping":
            await ws.send_str(value)
            continue
        yield arrived, kind, value


async def delivered(
    ws: aiohttp.ClientWebSocketResponse[bool], wire: Wire = ENVELOPES
) -> AsyncIterator[tuple[int, Json]]:
    """Each ``message`` frame's arrival time (CLOCK_MONOTONIC ns) and ``data``, until the end."""
    async for arrived, kind, data in frames(ws, wire):
        if kind == "message":
            yield arrived, data


@dataclass
class Subscriber:
    """One WebSocket subscribed to the topic on node ``node``; times every delivery."""

    node: int
    ws: aiohttp.ClientWebSocketResponse[bool]
    wire: Wire = ENVELOPES
    cross_ms: list[float] = field(default_factory=list)
    same_ms: list[float] = field(default_factory=list)
    seen: set[tuple[int, int]] = field(default_factory=set)
    last_seq: dict[int, int] = field(default_factory=dict)
    count: int = 0
    duplicates: int = 0
    reordered: int = 0
    last_arrival: float = 0.0

    async def read(self) -> None:
        async for arrived, data in delivered(self.ws, self.wire):
            origin, seq = data["o"], data["s"]
            key = (origin, seq)
            if key in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(key)
            self.count += 1
            self.last_arrival = time.monotonic()
            if seq < self.last_seq.get(origin, -1):
                self.reordered += 1
            self.last_seq[origin] = seq
            latency = (arrived - data["t"]) / 1e6
            (self.same_ms if origin == self.node else self.cross_ms).append(latency)


@dataclass
class Publisher:
    node: int
    ws: aiohttp.ClientWebSocketResponse[bool]
    wire: Wire = ENVELOPES
    seq: int = 0
    acks: int = 0
    errors: int = 0
    first_error: str = ""

    async def read(self) -> None:
        async for _, kind, value in frames(self.ws, self.wire):
            if kind == "ack":
                self.acks += 1
            elif kind == "error":
                self.errors += 1
                self.first_error = self.first_error or str(value)


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


# --------------------------------------------------------------------------- latency


async def run_latency(
    servers: Sequence[Server],
    *,
    rate: float,
    duration: float,
    subscribers: int,
    drain: float,
    wire: Wire = ENVELOPES,
) -> Json:
    """Open-loop publishing spread over ``servers``; every subscriber times every delivery."""
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession() as session:
        subs: list[Subscriber] = []
        for index, server in enumerate(servers):
            for _ in range(subscribers):
                ws = await wire.connect(session, server)
                await wire.subscribe(ws)
                subs.append(Subscriber(index, ws, wire))
        pubs = [
            Publisher(index, await wire.connect(session, server, server.token), wire)
            for index, server in enumerate(servers)
        ]
        readers: list[Subscriber | Publisher] = [*subs, *pubs]
        tasks = [asyncio.create_task(x.read()) for x in readers]
        try:
            total = int(rate * duration)
            interval = 1e9 / rate
            start = time.monotonic_ns() + 50_000_000
            sent = 0
            while sent < total:
                now = time.monotonic_ns()
                due_count = min(total, int((now - start) / interval) + 1) if now >= start else 0
                while sent < due_count:
                    publisher = pubs[sent % len(pubs)]
                    due = int(start + sent * interval)
                    data = {"o": publisher.node, "s": publisher.seq, "t": due}
                    publisher.seq += 1
                    await publisher.ws.send_str(wire.publish(sent, data))
                    sent += 1
                next_due = start + sent * interval
                await asyncio.sleep(max(0.0, (next_due - time.monotonic_ns()) / 1e9))
            window = (time.monotonic_ns() - start) / 1e9
            await wait_until(lambda: sum(p.acks + p.errors for p in pubs) >= total, drain)
            acked = sum(p.acks for p in pubs)
            await wait_until(lambda: all(s.count >= acked for s in subs), drain)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    cross = [x for s in subs for x in s.cross_ms]
    same = [x for s in subs for x in s.same_ms]
    return {
        "nodes": len(servers),
        "rate": rate,
        "sent": total,
        "send_window_s": round(window, 3),
        "acked": acked,
        "errors": sum(p.errors for p in pubs),
        "first_error": next((p.first_error for p in pubs if p.first_error), ""),
        "subscribers": len(subs),
        "lost": sum(max(0, acked - s.count) for s in subs),
        "duplicates": sum(s.duplicates for s in subs),
        "reordered": sum(s.reordered for s in subs),
        "cross_node": percentiles(cross),
        "same_node": percentiles(same),
    }


# --------------------------------------------------------------------------- path


async def run_path(
    servers: Sequence[Server], db_url: str, *, rates: Sequence[float], step: float, batch: int
) -> list[Json]:
    """This process stores rows as a node would; each node's subscriber times them."""
    steps: list[Json] = []
    writer = await asyncpg.connect(db_url)
    tasks: list[asyncio.Task[None]] = []
    try:
        async with aiohttp.ClientSession() as session:
            subs = []
            for index, server in enumerate(servers):
                ws = await ENVELOPES.connect(session, server)
                await ENVELOPES.subscribe(ws)
                # Node index -1 for the writer: every delivery here is cross-node.
                subs.append(Subscriber(index, ws))
            tasks = [asyncio.create_task(s.read()) for s in subs]
            seq = 0
            for rate in rates:
                before = [s.count for s in subs]
                cross_before = [len(s.cross_ms) for s in subs]
                total = int(rate * step)
                interval = 1e9 * batch / rate
                start = time.monotonic_ns()
                written = 0
                behind = False
                while written < total:
                    due = int(start + (written // batch) * interval)
                    wait = (due - time.monotonic_ns()) / 1e9
                    if wait > 0:
                        await asyncio.sleep(wait)
                    elif wait < -1.0:
                        behind = True  # the writer itself cannot keep this rate
                    n = min(batch, total - written)
                    ids = [secrets.token_hex(8)[:15] for _ in range(n)]
                    created = time.strftime("%Y-%m-%d %H:%M:%S.000Z", time.gmtime())
                    rows = [{"i": i, "t": TOPIC, "b": None, "c": created} for i in ids]
                    payloads = [{"o": -1, "s": seq + k, "t": due} for k in range(n)]
                    await writer.execute(
                        "SELECT _pubsub_store_batch($1, $2, $3, false)",
                        "bench-writer",
                        orjson.dumps(rows).decode(),
                        orjson.dumps(payloads).decode(),
                    )
                    seq += n
                    written += n
                write_window = (time.monotonic_ns() - start) / 1e9

                def caught_up(b: list[int] = before, t: int = total) -> bool:
                    return all(s.count - c >= t for s, c in zip(subs, b, strict=True))

                await wait_until(caught_up, max(5.0, step))
                delivered = [s.count - c for s, c in zip(subs, before, strict=True)]
                latencies = [
                    x for s, c in zip(subs, cross_before, strict=True) for x in s.cross_ms[c:]
                ]
                last = max(s.last_arrival for s in subs)
                deliver_window = max(write_window, last - start / 1e9)
                steps.append(
                    {
                        "rate": rate,
                        "written": written,
                        "write_window_s": round(write_window, 3),
                        "writer_behind": behind,
                        "delivered_per_node": delivered,
                        "delivered_per_s_per_node": round(min(delivered) / deliver_window, 1),
                        "lost": sum(max(0, written - d) for d in delivered),
                        "duplicates": sum(s.duplicates for s in subs),
                        "latency": percentiles(latencies),
                    }
                )
                print(f"    path {rate:,.0f} msg/s: {steps[-1]}", file=sys.stderr)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await writer.close()
    return steps


# --------------------------------------------------------------------------- xnode


@dataclass
class LoadgenSubscriber:
    """A subscriber on another node than the C load generator's publishers: counts and times
    their messages (data ``{"bs": step, "bq": seq, "bt": send time in CLOCK_MONOTONIC ns}``)."""

    ws: aiohttp.ClientWebSocketResponse[bool]
    latencies: list[float] = field(default_factory=list)
    seen: set[tuple[int, int]] = field(default_factory=set)
    duplicates: int = 0

    async def read(self) -> None:
        async for arrived, data in delivered(self.ws):
            key = (data["bs"], data["bq"])
            if key in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(key)
            self.latencies.append((arrived - data["bt"]) / 1e6)


async def run_xnode(servers: Sequence[Server], args: argparse.Namespace) -> Json:
    """64 closed-loop publishers on node 0 (the C load generator); node 1.. deliver."""
    conc = max(args.concurrency)
    opts = LoadgenOptions(cpu=args.loadgen_cpu or None, payload=args.payload)
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession() as session:
        subs = []
        for server in servers[1:]:
            ws = await ENVELOPES.connect(session, server)
            await ENVELOPES.subscribe(ws)
            subs.append(LoadgenSubscriber(ws))
        tasks = [asyncio.create_task(s.read()) for s in subs]
        try:
            with LoadGen(servers[0], 0, conc, opts) as lg:
                await asyncio.to_thread(lg.expect, "ready", 180)
                cpu_before = [server.cpu() for server in servers]
                lg.send(f"acked {conc} {args.publish_duration}")
                result = await asyncio.to_thread(lg.expect, "acked", args.publish_duration + 60)
            acks = result["acks"]
            started = time.monotonic()
            await wait_until(lambda: all(len(s.seen) >= acks for s in subs), args.drain)
            drain = time.monotonic() - started
            cpu = [
                server.cpu() - before for server, before in zip(servers, cpu_before, strict=True)
            ]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    window = result["seconds"] + drain
    return {
        "nodes": len(servers),
        "publishers": conc,
        "acks_per_s": result["acks_per_s"],
        "acks": acks,
        "errors": result["errors"],
        "delivered_per_node": [len(s.seen) for s in subs],
        "delivered_per_s_per_node": round(min(len(s.seen) for s in subs) / window, 1),
        "drain_s": round(drain, 3),
        # CPU of the node the publishes reached, per ack; of each other node (reading the
        # store's feed, delivering to its one subscriber), per message it delivered.
        "publisher_us_per_ack": cpu[0] / acks * 1e6 if acks else None,
        "follower_us_per_message": [
            c / len(s.seen) * 1e6 if s.seen else None for c, s in zip(cpu[1:], subs, strict=True)
        ],
        "lost": sum(max(0, acks - len(s.seen)) for s in subs),
        "duplicates": sum(s.duplicates for s in subs),
        "latency": percentiles([x for s in subs for x in s.latencies]),
    }


# --------------------------------------------------------------------------- publish


PUBLISH_REFERENCE = "reference (asyncpg group commit)"


def measure_publish(server: Server, store: str, args: argparse.Namespace) -> Json:
    """Acked publishes on ``server`` (the C load generator, as ``bench.publish`` runs it)."""
    out: Json = {}
    opts = LoadgenOptions(cpu=args.loadgen_cpu or None, payload=args.payload)
    with LoadGen(server, 0, max(args.concurrency), opts) as lg:
        lg.expect("ready", 180)
        for conc in args.concurrency:
            lg.send(f"acked {conc} {args.warmup}")
            lg.expect("acked", args.warmup + 60)
            store_before, wall_before = store_cpu_seconds(store), time.monotonic()
            result = run_acked(lg, server, conc, args.publish_duration)
            store_cpu = store_cpu_seconds(store) - store_before
            result["store_util"] = store_cpu / (time.monotonic() - wall_before)
            result.pop("raw", None)
            out[str(conc)] = result
    return out


def run_publish(store: str, db_url: str | None, workdir: Path, args: argparse.Namespace) -> Json:
    """Acked publishes on one bosbase node of ``store`` at ``db_url`` (``None``: SQLite)."""
    with nodes(1, db_url, workdir, cpu=args.server_cpu or None, workers=args.node_workers) as [
        server
    ]:
        return measure_publish(server, store, args)


def run_publish_reference(db_url: str, workdir: Path, args: argparse.Namespace) -> Json:
    """The same load against ``baselines/pg_group_commit.py``, on the same CPU."""
    store = "postgres"
    opts = ServerOptions(cpu=args.server_cpu or None, db_url=db_url)
    with Server(SERVER_KINDS["pg-group-commit"], opts, workdir) as server:
        return measure_publish(server, store, args)


# --------------------------------------------------------------------------- commit


COMMIT_RUNS: tuple[tuple[str, str, list[str]], ...] = (
    ("postgres", "group commit", []),
    ("postgres", "each alone", ["--max-batch", "1"]),
    ("sqlite", "group commit", []),
)


def run_commit_path(db_url: str | None, extra: list[str], args: argparse.Namespace) -> Json:
    """``bench.commit`` in a process of its own, on ``--server-cpu``, per publisher count."""
    out: Json = {}
    for conc in args.concurrency:
        cmd = [
            *taskset_prefix(args.server_cpu or None),
            sys.executable,
            "-m",
            "bench.commit",
            "--concurrency",
            str(conc),
            "--duration",
            str(args.publish_duration),
            "--warmup",
            str(args.warmup),
            "--payload",
            str(args.payload),
            *(["--db", db_url] if db_url else []),
            *extra,
        ]
        res = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=args.publish_duration + args.warmup + 120,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )
        if res.returncode != 0:
            raise BenchError(f"bench.commit failed: {res.stderr[-2000:]}")
        out[str(conc)] = orjson.loads(res.stdout.strip().splitlines()[-1])
    return out


# --------------------------------------------------------------------------- main


PHASES = ("latency", "path", "xnode", "commit", "publish")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n")[0])
    p.add_argument(
        "--pg",
        default=os.environ.get("BOSBASE_PUBSUB_BENCH_PG")
        or os.environ.get("BOSBASE_PUBSUB_TEST_PG")
        or DEFAULT_PG,
        help="admin URL of the PostgreSQL server to create the benchmark databases on",
    )
    p.add_argument(
        "--nats",
        default=os.environ.get("BOSBASE_PUBSUB_BENCH_NATS")
        or os.environ.get("BOSBASE_PUBSUB_TEST_NATS")
        or DEFAULT_NATS,
        help="NATS server (JetStream on) to create the benchmark streams on, with --stores nats",
    )
    p.add_argument(
        "--stores",
        default="postgres",
        help="comma list of cluster stores, side by side in each phase: postgres, nats"
        " (the path phase is PostgreSQL's alone)",
    )
    p.add_argument("--phases", default="latency,path,xnode,commit,publish", help="comma list")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument(
        "--node-workers",
        type=int,
        default=1,
        help="processes per node (serve --workers; default 1: a node is one process)",
    )
    p.add_argument("--rate", default="1000", help="comma list of msg/s for the latency phase")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per latency run")
    p.add_argument("--subscribers", type=int, default=2, help="subscribers per node")
    p.add_argument(
        "--latency-reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="latency phase: also run Socket.IO with its PostgreSQL adapter on --nodes nodes",
    )
    p.add_argument("--drain", type=float, default=10.0, help="seconds to wait for stragglers")
    p.add_argument("--path-rates", default="5000,10000,20000,40000", help="msg/s steps")
    p.add_argument("--path-step", type=float, default=5.0, help="seconds per path step")
    p.add_argument("--path-batch", type=int, default=200, help="rows per stored transaction")
    p.add_argument(
        "--concurrency", default="1,64", help="publishers for the commit and publish phases"
    )
    p.add_argument("--publish-duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument(
        "--publish-reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="publish phase: also run the issue's reference design (asyncpg group commit)",
    )
    p.add_argument("--payload", type=int, default=64)
    p.add_argument(
        "--server-cpu",
        default="0",
        help="taskset CPUs of the publish-phase node and of the commit phase",
    )
    p.add_argument("--loadgen-cpu", default="1", help="taskset CPUs of the C load generator")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.rate = [float(x) for x in str(args.rate).split(",") if x.strip()]
    args.path_rates = [float(x) for x in str(args.path_rates).split(",") if x.strip()]
    args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    args.stores = [x.strip() for x in str(args.stores).split(",") if x.strip()]
    if not args.stores or not set(args.stores) <= {"postgres", "nats"}:
        p.error("--stores: postgres, nats")
    if not phases <= set(PHASES):
        p.error(f"--phases: {', '.join(PHASES)}")
    if not (
        1 <= args.nodes <= 8
        and 1 <= args.node_workers <= 8
        and all(0 < r <= 50_000 for r in args.rate)
        and all(0 < r <= 200_000 for r in args.path_rates)
        and 0 < args.duration <= 600
        and 0 < args.path_step <= 120
        and 1 <= args.path_batch <= 5000
        and 0 <= args.subscribers <= 100
    ):
        p.error("out of range (see --help)")
    results: Json = {}
    with managed(), tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        workdir = Path(tmp)
        if phases & {"publish", "xnode"}:
            ensure_loadgen()
        try:
            import uvloop
        except ImportError:
            asyncio.run(_run(args, phases, workdir, results))
        else:
            uvloop.run(_run(args, phases, workdir, results))
    report(args, results)
    out = write_result(
        "cluster",
        {
            "benchmark": "cluster",
            "machine": machine_info(),
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "results": results,
        },
        args.out,
    )
    print(f"\nresults: {out}")
    return 0


LATENCY_REFERENCE = "socket.io + postgres-adapter"


async def latency_run(
    kind: str, count: int, rate: float, admin: str, workdir: Path, args: argparse.Namespace
) -> Json:
    """One latency run on ``count`` fresh nodes of ``kind``: ``postgres``, ``nats``,
    ``sqlite`` (bosbase on that store) or ``socketio-pg`` (the Socket.IO baseline's
    cluster)."""
    async with contextlib.AsyncExitStack() as stack:
        db_url = None
        if kind == "socketio-pg":
            db_url = await stack.enter_async_context(fresh_database(admin))
        elif kind != "sqlite":
            db_url = await stack.enter_async_context(fresh_store(kind, args))
        if kind == "socketio-pg":
            await asyncio.to_thread(ensure_node_modules)
            servers = [
                stack.enter_context(
                    Server(
                        SERVER_KINDS["socketio-pg"], ServerOptions(cpu=None, db_url=db_url), workdir
                    )
                )
                for _ in range(count)
            ]
            wire: Wire = SOCKET_IO
        else:
            servers = stack.enter_context(nodes(count, db_url, workdir, workers=args.node_workers))
            wire = ENVELOPES
        with collector_paused():
            return await run_latency(
                servers,
                rate=rate,
                duration=args.duration,
                subscribers=args.subscribers,
                drain=args.drain,
                wire=wire,
            )


async def _run(args: argparse.Namespace, phases: set[str], workdir: Path, results: Json) -> None:
    admin = args.pg
    if "latency" in phases:
        results["latency"] = {}
        runs: list[tuple[str, int, str]] = [
            (f"{store} x{args.nodes}", args.nodes, store) for store in args.stores
        ]
        if args.latency_reference:
            runs.append((f"{LATENCY_REFERENCE} x{args.nodes}", args.nodes, "socketio-pg"))
        runs += [(f"{store} x1", 1, store) for store in (*args.stores, "sqlite")]
        for label, count, kind in runs:
            for rate in args.rate:
                print(f"[latency] {label} at {rate:,.0f} msg/s", file=sys.stderr)
                try:
                    result = await latency_run(kind, count, rate, admin, workdir, args)
                except BenchError as e:  # a baseline that cannot run here: bosbase's rows stand
                    if kind != "socketio-pg":
                        raise
                    print(f"    failed: {e}", file=sys.stderr)
                    result = {"rate": rate, "error": str(e)}
                results["latency"].setdefault(label, []).append(result)
                print(f"    {result}", file=sys.stderr)
    if "path" in phases:
        print(f"[path] {args.nodes} nodes", file=sys.stderr)
        async with fresh_database(admin) as db_url:
            await asyncio.to_thread(make_superuser, db_url)
            with (
                nodes(args.nodes, db_url, workdir, workers=args.node_workers) as servers,
                collector_paused(),
            ):
                results["path"] = await run_path(
                    servers,
                    db_url,
                    rates=args.path_rates,
                    step=args.path_step,
                    batch=args.path_batch,
                )
    if "xnode" in phases:
        results["xnode"] = {}
        for store in args.stores:
            print(f"[xnode] {store}, {args.nodes} nodes", file=sys.stderr)
            async with fresh_store(store, args) as db_url:
                with (
                    nodes(args.nodes, db_url, workdir, workers=args.node_workers) as servers,
                    collector_paused(),
                ):
                    results["xnode"][store] = await run_xnode(servers, args)
            print(f"    {results['xnode'][store]}", file=sys.stderr)
    if "commit" in phases:
        results["commit"] = {}
        commit_runs = [*COMMIT_RUNS]
        if "nats" in args.stores:
            commit_runs.insert(2, ("nats", "group commit", []))
        for store, mode, extra in commit_runs:
            label = f"{store}, {mode}"
            print(f"[commit] {label}", file=sys.stderr)
            async with contextlib.AsyncExitStack() as stack:
                commit_db: str | None = None
                if store != "sqlite":
                    commit_db = await stack.enter_async_context(fresh_store(store, args))
                result = await asyncio.to_thread(run_commit_path, commit_db, extra, args)
            results["commit"][label] = result
            print(f"    {result}", file=sys.stderr)
    if "publish" in phases:
        results["publish"] = {}
        reference_row = [PUBLISH_REFERENCE] if args.publish_reference else []
        others = [store for store in args.stores if store != "postgres"]
        for label in ["postgres", *reference_row, *others, "sqlite"]:
            print(f"[publish] {label}", file=sys.stderr)
            async with contextlib.AsyncExitStack() as stack:
                if label == PUBLISH_REFERENCE:
                    db_url = await stack.enter_async_context(fresh_database(admin))
                    try:
                        result = await asyncio.to_thread(
                            run_publish_reference, db_url, workdir, args
                        )
                    except BenchError as e:  # bosbase's own figures still stand
                        print(f"    reference failed: {e}", file=sys.stderr)
                        result = {"error": str(e)}
                elif label != "sqlite":
                    db_url = await stack.enter_async_context(fresh_store(label, args))
                    result = await asyncio.to_thread(run_publish, label, db_url, workdir, args)
                else:
                    result = await asyncio.to_thread(run_publish, "sqlite", None, workdir, args)
            results["publish"][label] = result
            print(f"    {result}", file=sys.stderr)
        reference = results["publish"].get(PUBLISH_REFERENCE, {})
        for conc, r in results["publish"]["postgres"].items():
            ref = reference.get(conc, {}).get("acks_per_s")
            r["vs_reference"] = r["acks_per_s"] / ref if ref else None


def report(args: argparse.Namespace, results: Json) -> None:
    if "latency" in results:
        print(
            f"\nLatency: open loop, {args.duration:g} s per run, {args.subscribers} subscribers"
            " per node, publishers spread over the nodes"
        )
        rows = []
        for label, runs in results["latency"].items():
            for r in runs:
                if "error" in r:
                    rows.append([label, "-", fmt(r["rate"]), "failed"])
                    continue
                for kind in ("cross_node", "same_node"):
                    lat = r[kind]
                    if not lat["count"]:
                        continue
                    rows.append(
                        [
                            label,
                            kind.replace("_", "-"),
                            fmt(r["rate"]),
                            fmt(lat["count"]),
                            fmt(lat["p50_ms"], ".2f"),
                            fmt(lat["p99_ms"], ".2f"),
                            fmt(lat["max_ms"], ".1f"),
                            fmt(r["lost"]),
                            fmt(r["duplicates"]),
                            fmt(r["reordered"]),
                            fmt(r["errors"]),
                        ]
                    )
        print_table(
            [
                "store x nodes",
                "delivery",
                "msg/s",
                "deliveries",
                "p50 ms",
                "p99 ms",
                "max ms",
                "lost",
                "dup",
                "reordered",
                "errors",
            ],
            rows,
        )
        ours = results["latency"].get(f"postgres x{args.nodes}", [])
        theirs = results["latency"].get(f"{LATENCY_REFERENCE} x{args.nodes}", [])
        for mine, ref in zip(ours, theirs, strict=False):
            if "error" in ref or not ref["cross_node"]["count"]:
                continue
            a, b = mine["cross_node"], ref["cross_node"]
            print(
                f"cross-node at {fmt(mine['rate'])} msg/s, bosbase over {LATENCY_REFERENCE}"
                f" (same run): p50 {ratio(a['p50_ms'], b['p50_ms'])},"
                f" p99 {ratio(a['p99_ms'], b['p99_ms'])}"
            )
    if "path" in results:
        print(
            f"\nCross-node path: rows stored by another writer ({args.path_batch} per"
            f" transaction), delivered by each of {args.nodes} nodes to one subscriber"
        )
        print_table(
            ["offered msg/s", "delivered/s/node", "p50 ms", "p99 ms", "max ms", "lost", "dup"],
            [
                [
                    fmt(s["rate"]),
                    fmt(s["delivered_per_s_per_node"]),
                    fmt(s["latency"]["p50_ms"], ".2f"),
                    fmt(s["latency"]["p99_ms"], ".2f"),
                    fmt(s["latency"]["max_ms"], ".1f"),
                    fmt(s["lost"]),
                    fmt(s["duplicates"]),
                ]
                for s in results["path"]
            ],
        )
    if "xnode" in results:
        print(
            f"\nEnd to end across nodes: {max(args.concurrency)} closed-loop publishers on"
            f" node 1, one subscriber on each of nodes 2..{args.nodes}"
        )
        print_table(
            [
                "store",
                "acks/s",
                "delivered/s/node",
                "p50 ms",
                "p99 ms",
                "max ms",
                "lost",
                "dup",
                "errors",
                "node 1 us/ack",
                "others us/msg",
            ],
            [
                [
                    store,
                    fmt(x["acks_per_s"]),
                    fmt(x["delivered_per_s_per_node"]),
                    fmt(x["latency"]["p50_ms"], ".2f"),
                    fmt(x["latency"]["p99_ms"], ".2f"),
                    fmt(x["latency"]["max_ms"], ".1f"),
                    fmt(x["lost"]),
                    fmt(x["duplicates"]),
                    fmt(x["errors"]),
                    fmt(x["publisher_us_per_ack"], ".1f"),
                    " / ".join(fmt(v, ".1f") for v in x["follower_us_per_message"]),
                ]
                for store, x in results["xnode"].items()
            ],
        )
    if "commit" in results:
        print(
            "\nThe commit path alone (bench.commit: commit queue and store in one process,"
            " no WebSocket, closed loop)"
        )
        alone = results["commit"].get("postgres, each alone", {})
        rows = []
        for label, by_conc in results["commit"].items():
            for conc, r in by_conc.items():
                rows.append(
                    [
                        label,
                        conc,
                        fmt(r["appends_per_s"]),
                        ratio(r["appends_per_s"], alone.get(conc, {}).get("appends_per_s"))
                        if label == "postgres, group commit"
                        else "-",
                        fmt(r["us_per_append"], ".1f"),
                        fmt(r["util"] * 100, ".0f"),
                        fmt(r["errors"]),
                    ]
                )
        print_table(
            [
                "store, commits",
                "publishers",
                "appends/s",
                "vs alone",
                "us/append",
                "CPU%",
                "errors",
            ],
            rows,
        )
    if "publish" in results:
        print("\nAcked publishes on one node (C load generator, closed loop)")
        if PUBLISH_REFERENCE in results["publish"]:
            print(
                "vs ref: bosbase on PostgreSQL over the reference design's acks/s"
                " (baselines/pg_group_commit.py, same CPU, same run)"
            )
        reference = results["publish"].get(PUBLISH_REFERENCE, {})
        postgres = results["publish"].get("postgres", {})
        rows = []
        for label, by_conc in results["publish"].items():
            if "error" in by_conc:
                rows.append([label, "", "failed"])
                continue
            for conc, r in by_conc.items():
                rows.append(
                    [
                        label,
                        conc,
                        fmt(r["acks_per_s"]),
                        ratio(r["acks_per_s"], reference.get(conc, {}).get("acks_per_s"))
                        if label == "postgres"
                        else "-",
                        ratio(r["acks_per_s"], postgres.get(conc, {}).get("acks_per_s"))
                        if label not in ("postgres", PUBLISH_REFERENCE)
                        else "-",
                        fmt(r["p50_ms"], ".2f"),
                        fmt(r["p99_ms"], ".2f"),
                        fmt(r["errors"]),
                        fmt(r["server_us_per_ack"], ".1f"),
                        fmt((r["server_util"] or 0) * 100, ".0f"),
                        fmt(r["store_util"] * 100, ".0f") if label != "sqlite" else "-",
                    ]
                )
        print_table(
            [
                "store",
                "publishers",
                "acks/s",
                "vs ref",
                "vs postgres",
                "p50 ms",
                "p99 ms",
                "errors",
                "srv us/ack",
                "srv CPU%",
                "store CPU%",
            ],
            rows,
        )


if __name__ == "__main__":
    sys.exit(main())
