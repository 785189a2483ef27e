"""Acked publishes through PostgreSQL with group commit: the issue's reference design.

"We measured 6,200/s committing each publish alone and 33,000/s with group commit,
asyncpg, one multi-row insert per batch." This is that design, minimal, so that
``bench.cluster``'s publish phase can run it beside bosbase on the same machine in the
same invocation. A benchmark reference, not a product: no auth, no subscriptions, no
fan-out, no resume.

- aiohttp (+ uvloop when installed) WebSocket endpoint ``/api/pubsub``; speaks just
  enough of the envelope protocol for ``bench/loadgen/wsload.c --proto env``: ``ready``
  on connect, ``publish`` -> ``published``, anything else -> ``error``. A token (header or
  query parameter) is ignored.
- One writer coroutine. Publishes queue; whenever the writer is free it takes everything
  queued (at most 2000) and stores it as ONE multi-row ``INSERT ... SELECT * FROM
  unnest(...)`` on one asyncpg connection, outside any transaction block, so the statement
  commits alone (``synchronous_commit`` left at the server's setting). No timer: a lone
  publish is written at once. Every publish of the batch is acked after the commit.

Usage: python bench/baselines/pg_group_commit.py --port PORT --db POSTGRES_URL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import asyncpg
import orjson
from aiohttp import WSMsgType, web

SCHEMA = """
CREATE TABLE IF NOT EXISTS _pubsub_messages (
    seq     BIGSERIAL PRIMARY KEY,
    id      TEXT NOT NULL,
    topic   TEXT NOT NULL,
    payload JSON NOT NULL,
    created TEXT NOT NULL
)"""
INSERT = """
INSERT INTO _pubsub_messages (id, topic, payload, created)
SELECT * FROM unnest($1::text[], $2::text[], $3::json[], $4::text[])"""
MAX_BATCH = 2000
_ID_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789"
_TO_ID = bytes(_ID_CHARS[i % len(_ID_CHARS)] for i in range(256))


class Publish(NamedTuple):
    ws: web.WebSocketResponse
    request_id: Any
    id: str
    topic: str
    payload: str
    created: str


def _created() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


async def _send(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionError):  # the client left meanwhile
        await ws.send_str(orjson.dumps(frame).decode())


async def writer(conn: asyncpg.Connection, queue: asyncio.Queue[Publish]) -> None:
    while True:
        batch = [await queue.get()]
        while len(batch) < MAX_BATCH and not queue.empty():
            batch.append(queue.get_nowait())
        try:
            await conn.execute(
                INSERT,
                [p.id for p in batch],
                [p.topic for p in batch],
                [p.payload for p in batch],
                [p.created for p in batch],
            )
        except (asyncpg.PostgresError, OSError) as e:
            for p in batch:
                await _send(p.ws, {"type": "error", "requestId": p.request_id, "message": str(e)})
            continue
        for p in batch:
            ack = {"requestId": p.request_id, "id": p.id, "topic": p.topic, "created": p.created}
            await _send(p.ws, {"type": "published", **ack})


def build_app(db_url: str) -> web.Application:
    app = web.Application()
    queue: asyncio.Queue[Publish] = asyncio.Queue()

    async def storage(_app: web.Application) -> AsyncIterator[None]:
        conn = await asyncpg.connect(db_url)
        await conn.execute(SCHEMA)
        task = asyncio.create_task(writer(conn, queue))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await conn.close()

    async def pubsub(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await _send(ws, {"type": "ready", "clientId": secrets.token_hex(8)})
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            try:
                env = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                env = None
            request_id = env.get("requestId") if isinstance(env, dict) else None
            topic = env.get("topic") if isinstance(env, dict) else None
            if not (isinstance(env, dict) and env.get("type") == "publish" and topic):
                error = {"requestId": request_id, "message": "invalid message format"}
                await _send(ws, {"type": "error", **error})
                continue
            mid = os.urandom(15).translate(_TO_ID).decode()
            payload = orjson.dumps(env.get("data")).decode()
            queue.put_nowait(Publish(ws, request_id, mid, str(topic), payload, _created()))
        return ws

    app.cleanup_ctx.append(storage)
    app.router.add_get("/api/pubsub", pubsub)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8094)
    parser.add_argument("--db", required=True, help="postgres://... (the table is created)")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    web.run_app(build_app(args.db), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
