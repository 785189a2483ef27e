"""A loopback TCP proxy that cuts the connections through it on demand.

It runs its own event loop in a thread, so that blocking code (the sync SDK
client, the test itself) can use it as well as asyncio code. Every connection
accepted on ``port`` is forwarded to the current target; ``retarget`` points
later connections elsewhere (a client that reconnects lands on another node,
at the same URL), and ``cut`` ends the open ones the way a network or a peer
would:

* ``"fin"``: both sides get an orderly TCP close with no WebSocket close
  frame, as when the server's process ends or a middlebox drops the flow;
* ``"rst"``: both sides get a reset (``SO_LINGER`` 0), as when the client's
  socket is killed;
* ``"server"``: only the server side is closed; the client learns it when the
  proxy forwards that end (the server closed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Cut = Literal["fin", "rst", "server"]
_CHUNK = 65536


class _Pair:
    __slots__ = ("client", "server")

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server


class ChaosProxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:target``; cut connections on demand."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self.cuts = 0
        self.refusing = False
        """While true, new connections are reset at once (the server looks down)."""
        self._pairs: set[_Pair] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChaosProxy:
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def open_connections(self) -> int:
        """Connections open through the proxy now (what a cut would end)."""
        return len(self._pairs)

    def retarget(self, target: int) -> None:
        """Forward the connections accepted from now on to ``target``."""
        self.target = target

    def cut(self, how: Cut) -> int:
        """End every connection open through the proxy; returns how many."""
        return self._run(self._cut(how))

    def close(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            await self._cut("rst")

        self._run(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            _abort(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target
            )
        except OSError:
            _abort(writer)
            return
        pair = _Pair(writer, upstream_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))
        finally:
            self._pairs.discard(pair)
            for side in (writer, upstream_writer):
                side.close()

    async def _cut(self, how: Cut) -> int:
        pairs = list(self._pairs)
        self._pairs.clear()
        for pair in pairs:
            if how == "rst":
                _abort(pair.client)
                _abort(pair.server)
            elif how == "fin":
                pair.client.close()
                pair.server.close()
            else:  # the server side only; the pump carries the end to the client
                pair.server.close()
        self.cuts += len(pairs)
        return len(pairs)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
