"""Acked appends through the node's commit path alone: no WebSocket, no HTTP.

    uv run python -m bench.commit --db postgres://root@127.0.0.1:5432/DB --concurrency 64

``--concurrency`` publishers in this one process each submit a message to the node's
own ``CommitQueue`` on its own store (``open_store``: PostgreSQL with ``--db``, else a
SQLite file in a temporary folder), wait for the callback that would send its ack
(it runs only after the commit), and submit the next. Reported: acked appends/s and
this process's CPU microseconds per append. ``--max-batch 1`` commits every publish
alone, the baseline that group commit is measured against.

This isolates what a publish costs the store and the commit queue from what its
frames cost the WebSocket server; ``bench.cluster --phases commit`` runs it beside
``bench.publish``-style figures. It prints one JSON object; the database must exist
(``bench.cluster`` creates a fresh one).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
from pathlib import Path

import orjson

from bosbase_pubsub.server.commits import CommitQueue
from bosbase_pubsub.server.ids import new_id, now_created
from bosbase_pubsub.server.metrics import Metrics
from bosbase_pubsub.server.storage import Message, Store, open_store

from .common import Json


class NoSubscribers:
    """The commit queue's deliverer: nobody subscribes, as in ``bench.publish``."""

    def deliver(self, messages: list[Message]) -> None:
        pass


def _settle(
    done: asyncio.Future[BaseException | None], _stored: Message, error: BaseException | None
) -> None:
    """The commit queue's callback: where the node would send the ack (or the error)."""
    done.set_result(error)


async def measure(store: Store, args: argparse.Namespace) -> Json:
    queue = CommitQueue(store, NoSubscribers(), Metrics(), max_batch=args.max_batch)
    loop = asyncio.get_running_loop()
    data = orjson.dumps({"x": "a" * max(0, args.payload - 8)})
    acked = 0
    stopping = False
    failures: list[str] = []
    deadline = time.monotonic() + args.warmup + args.duration + 60

    async def publisher() -> None:
        nonlocal acked
        while not stopping and time.monotonic() < deadline:
            done: asyncio.Future[BaseException | None] = loop.create_future()
            message = Message(
                id=new_id(),
                topic="bench",
                data=data,
                created=now_created(),
                origin="bench",
                created_by="bench",
            )
            queue.submit(message, functools.partial(_settle, done))
            error = await done
            if error is not None:
                failures.append(str(error))
                return
            acked += 1

    publishers = [loop.create_task(publisher()) for _ in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    acked_before, wall_before, cpu_before = acked, time.perf_counter(), time.process_time()
    await asyncio.sleep(args.duration)
    appends = acked - acked_before
    wall = time.perf_counter() - wall_before
    cpu = time.process_time() - cpu_before
    stopping = True
    await asyncio.gather(*publishers)
    await queue.drain()
    return {
        "concurrency": args.concurrency,
        "max_batch": args.max_batch,
        "appends_per_s": appends / wall,
        "appends": appends,
        "us_per_append": cpu / appends * 1e6 if appends else None,
        "util": cpu / wall,
        "errors": len(failures),
        "first_error": failures[0] if failures else "",
    }


async def run(args: argparse.Namespace) -> Json:
    with tempfile.TemporaryDirectory(prefix="bench-commit-") as folder:
        store = open_store(args.db, Path(folder))
        await store.open()
        try:
            return await measure(store, args)
        finally:
            await store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.commit", description=__doc__.split("\n")[0])
    p.add_argument("--db", default=None, help="PostgreSQL URL (default: a SQLite file)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=2000, help="1: every publish commits alone")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--payload", type=int, default=64, help="bytes of JSON data per message")
    args = p.parse_args(argv)
    if not (
        1 <= args.concurrency <= 10_000
        and 1 <= args.max_batch <= 100_000
        and 0 < args.duration <= 600
        and 0 <= args.warmup <= 60
    ):
        p.error("out of range (see --help)")
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
