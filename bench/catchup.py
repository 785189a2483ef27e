"""Catch-up: how long a subscriber resuming from a position takes to receive a backlog.

    uv run python -m bench.catchup --backlogs 10000,100000
    uv run python -m bench.catchup --pg postgres://root@127.0.0.1:5432/test

For each backlog size N, on a fresh node (SQLite, or PostgreSQL with ``--pg``: a fresh
database on that server, dropped after): one message is published and its position
kept; N messages of ``--payload`` bytes are then published on the same topic (pipelined,
acked); a new connection subscribes with ``since`` = the kept position, and the time from
sending that ``subscribe`` to receiving the N-th replayed message is measured, ``--repeat``
times on the same backlog (median reported). The subscriber is a lean Python client
(aiohttp, uvloop): it counts frames without decoding them, and decodes the last one to
check that it is the newest message. Reported: seconds, messages/s, the node's CPU
seconds and its peak RSS growth during the catch-up, and the client's CPU seconds (it
shares the machine: when it is the bottleneck, its CPU is close to the elapsed time).
The node is pinned to ``--server-cpu`` (default 0), this process runs where it likes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from .cluster import DEFAULT_PG, fresh_database, make_superuser
from .common import (
    SERVER_KINDS,
    Json,
    Server,
    ServerOptions,
    fmt,
    machine_info,
    managed,
    median,
    print_table,
    write_result,
)

TOPIC = "catchup"


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def connect(session: aiohttp.ClientSession, server: Server) -> Any:
    url = f"ws://127.0.0.1:{server.port}/api/pubsub"
    ws = await session.ws_connect(
        url, headers={"Authorization": server.token or ""}, max_msg_size=0
    )
    ready = await ws.receive_json(timeout=10)
    assert ready["type"] == "ready", ready
    return ws


async def publish_backlog(ws: Any, count: int, payload: str, window: int = 1000) -> str:
    """Publish ``count`` messages, ``window`` in flight; return the last one's position."""
    sent = acked = 0
    last = ""
    while acked < count:
        while sent < count and sent - acked < window:
            await ws.send_str(
                json.dumps(
                    {"type": "publish", "topic": TOPIC, "requestId": f"p{sent}", "data": payload}
                )
            )
            sent += 1
        frame = json.loads((await ws.receive(timeout=30)).data)
        if frame["type"] == "published":
            acked += 1
            last = frame["position"]
        elif frame["type"] == "error":
            raise RuntimeError(frame)
    return last


async def catch_up(server: Server, since: str, count: int, newest: str) -> Json:
    """Subscribe from ``since``; time until ``count`` messages came; check the last."""
    peak = server.rss()
    baseline = peak
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.wait(0.02):
            with contextlib.suppress(OSError):
                peak = max(peak, server.rss())

    watcher = threading.Thread(target=watch, daemon=True)
    async with aiohttp.ClientSession() as session:
        ws = await connect(session, server)
        watcher.start()
        cpu0, client0 = server.cpu(), client_cpu()
        started = time.perf_counter()
        await ws.send_str(
            json.dumps({"type": "subscribe", "topic": TOPIC, "requestId": "s", "since": since})
        )
        ack = json.loads((await ws.receive(timeout=30)).data)
        assert ack.get("replay") == "complete", ack
        received = 0
        last = ""
        while received < count:
            msg = await ws.receive(timeout=60)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"connection ended after {received} messages: {msg}")
            received += 1
            last = msg.data
        elapsed = time.perf_counter() - started
        cpu1, client1 = server.cpu(), client_cpu()
        stop.set()
        watcher.join()
        await ws.close()
    position = json.loads(last)["position"]
    if position != newest:
        raise RuntimeError(f"the last replayed message is {position}, not {newest}")
    return {
        "seconds": elapsed,
        "msgs_per_s": count / elapsed,
        "server_cpu_s": cpu1 - cpu0,
        "client_cpu_s": client1 - client0,
        "rss_growth_mb": (peak - baseline) / 2**20,
    }


@contextlib.asynccontextmanager
async def node(db_url: str | None, workdir: Path, cpu: str | None) -> AsyncIterator[Server]:
    extra = ["--db", db_url] if db_url else []
    if db_url:
        make_superuser(db_url)
    server = Server(SERVER_KINDS["bosbase"], ServerOptions(cpu=cpu, extra_args=extra), workdir)
    with server:
        yield server


async def run_size(args: argparse.Namespace, count: int, workdir: Path) -> Json:
    payload = "x" * args.payload
    db: contextlib.AbstractAsyncContextManager[str | None]
    db = fresh_database(args.pg) if args.pg else contextlib.nullcontext(None)
    async with db as db_url, node(db_url, workdir, args.server_cpu or None) as server:
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, server)
            since = await publish_backlog(ws, 1, payload)
            newest = await publish_backlog(ws, count, payload)
            await ws.close()
        runs = [await catch_up(server, since, count, newest) for _ in range(args.repeat)]
    keys = runs[0].keys()
    return {
        "backlog": count,
        "runs": runs,
        **{key: median([run[key] for run in runs]) for key in keys},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backlogs", default="10000,100000", help="comma list of backlog sizes")
    p.add_argument("--payload", type=int, default=100, help="bytes of each message's data")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--server-cpu", default="0", help="taskset CPU list for the node ('' = none)")
    p.add_argument(
        "--pg",
        nargs="?",
        const=DEFAULT_PG,
        default=None,
        help=f"run on PostgreSQL: an admin URL (default {DEFAULT_PG}); without it, SQLite",
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.backlogs.split(",") if s.strip()]
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    results: list[Json] = []
    with managed(), tempfile.TemporaryDirectory(prefix="bench-catchup-") as folder:
        for count in sizes:
            results.append(asyncio.run(run_size(args, count, Path(folder))))
    store = "PostgreSQL" if args.pg else "SQLite"
    print_table(
        ["store", "backlog", "seconds", "msgs/s", "node CPU s", "node RSS +MB", "client CPU s"],
        [
            [
                store,
                f"{r['backlog']:,}",
                fmt(r["seconds"], ".2f"),
                fmt(r["msgs_per_s"]),
                fmt(r["server_cpu_s"], ".2f"),
                fmt(r["rss_growth_mb"], ".1f"),
                fmt(r["client_cpu_s"], ".2f"),
            ]
            for r in results
        ],
    )
    path = write_result(
        "catchup",
        {
            "machine": machine_info(),
            "store": store,
            "payload": args.payload,
            "repeat": args.repeat,
            "results": results,
        },
        args.out,
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
