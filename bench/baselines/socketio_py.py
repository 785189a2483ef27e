"""python-socketio fan-out baseline, served by aiohttp on uvloop (websocket transport only).

Same workload as ``socketio_server.js``: ``subscribe`` (topic, acked) joins the room,
``publish`` ({topic, data}, acked) broadcasts ``{"type": "message", ...}`` to the room.

Usage: python -m bench.baselines.socketio_py --port PORT [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
from typing import Any

import socketio  # type: ignore[import-untyped]
import uvloop
from aiohttp import web


def _created() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def build_app() -> web.Application:
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        transports=["websocket"],
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )
    app = web.Application()
    sio.attach(app)
    counter = itertools.count(1)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/api/health", health)

    @sio.on("subscribe")  # type: ignore[untyped-decorator]
    async def subscribe(sid: str, topic: Any) -> str:
        await sio.enter_room(sid, str(topic))
        return "ok"

    @sio.on("unsubscribe")  # type: ignore[untyped-decorator]
    async def unsubscribe(sid: str, topic: Any) -> str:
        await sio.leave_room(sid, str(topic))
        return "ok"

    @sio.on("publish")  # type: ignore[untyped-decorator]
    async def publish(sid: str, msg: Any) -> dict[str, str]:
        topic = str(msg.get("topic", "")) if isinstance(msg, dict) else ""
        data = msg.get("data") if isinstance(msg, dict) else None
        mid = f"m{next(counter):x}"
        created = _created()
        env = {"type": "message", "id": mid, "topic": topic, "data": data, "created": created}
        # The ack is returned (sent) when this handler returns, i.e. after the broadcast.
        await sio.emit("message", env, room=topic)
        return {"id": mid, "topic": topic, "created": created}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8093)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(build_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
