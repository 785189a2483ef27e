"""The cross-node cursor: one node follows ``_pubsub_messages`` in PostgreSQL.

Invariants:

* The cursor is one number, the highest ``seq`` read so far, and a read is
  ``seq > cursor ORDER BY seq``. That skips nothing because rows become
  visible in ``seq`` order (kept by every writer: see ``postgres``): a row
  not visible yet, however late its transaction commits, will have a larger
  ``seq`` than every row already read.
* The node's own rows advance the cursor and come back as markers (``seq``
  and ``origin`` only; their other columns are not even sent): the node
  has them already, and the markers tell it where they sit among the
  others' rows (see ``server.cluster.Sequencer``).
* LISTEN/NOTIFY only wakes the feed; rows are always read from the table.
  A notification carries the storing node's id, never messages (NOTIFY's
  payload is limited to 8,000 bytes); the node's own notifications are
  ignored. A notification may wake the feed for rows it already read (it
  then finds none), and a missed one costs at most ``poll_interval``: the
  feed reads the table at least that often anyway (the fallback poll, which
  also proves the connection alive). A node notifies only while it sees
  another node's feed connection (see ``postgres``): one that just started
  relies on its fallback poll for at most a second or so.
* A read that returned fewer rows than its limit saw every row committed
  before it began (its snapshot); a row committed later notifies after its
  commit, so after the wake-up was cleared for that read. The feed therefore
  waits for a wake-up (or the fallback poll) before reading again, rather
  than reading once more to find nothing; only after a full batch (or a
  failure) does it read again at once.
* LISTEN is issued before the starting position is read (when opening) and
  before catching up (when reconnecting), so a row committed in between is
  either read or notified.
* A failure drops the connection and keeps the cursor; the next call
  reconnects, LISTENs, and reads everything after the cursor: every row
  stored meanwhile is returned, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from .base import Feed, Message, StoreError
from .postgres_common import CHANNEL, QUERY_TIMEOUT, translate_errors

log = logging.getLogger("bosbase_pubsub.storage.postgres")

# The node's own rows ($3) come back as their seq alone (other columns NULL), for the cursor.
_READ = (
    "SELECT seq, "
    + ", ".join(
        f"CASE WHEN origin <> $3 THEN {column} END AS {column}"
        for column in ("id", "topic", "payload", "origin", '"createdBy"', "created")
    )
    + " FROM _pubsub_messages WHERE seq > $1 ORDER BY seq LIMIT $2"
)
_NEWEST = "SELECT coalesce(max(seq), 0) FROM _pubsub_messages"


class PostgresFeed(Feed):
    """Every message other nodes store after ``open``, in ``seq`` (commit) order.

    ``connect`` opens a new connection (raising ``StoreError``); the feed owns
    one at a time and reconnects on the next ``next_batch`` after a failure.
    Messages whose origin is ``skip_origin`` (this node's) are not returned.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection[Any]]],
        *,
        skip_origin: str,
        batch: int = 2000,
        poll_interval: float = 1.0,
    ) -> None:
        self._connect_to_store = connect
        self._origin = skip_origin
        self._batch = batch
        self._poll_interval = poll_interval
        self._connection: asyncpg.Connection[Any] | None = None
        self._position: int | None = None
        self._wake = asyncio.Event()
        self._read_at_once = True
        """Whether rows may be waiting unread: after opening, a full batch, or a failure."""
        self._closed = False

    @property
    def position(self) -> int:
        """The highest ``seq`` read so far (0 before ``open``)."""
        return self._position or 0

    def wake(self) -> None:
        self._wake.set()

    async def open(self) -> None:
        connection = await self._connection_or_reconnect()
        with translate_errors("feed"):
            self._position = int(await connection.fetchval(_NEWEST, timeout=QUERY_TIMEOUT))

    async def next_batch(self) -> Sequence[Message]:
        """Messages other nodes stored after the cursor, waiting up to ``poll_interval``.

        Returns an empty batch when none came within ``poll_interval`` (the
        store answered: the caller knows the feed is healthy).
        """
        if self._position is None:
            raise StoreError("the feed is not open")
        if not self._read_at_once:
            # The last read saw everything committed before it: wait for news.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            if self._closed:
                raise StoreError("the feed is closed")
        # Until a read returns: a failed reconnect or read is retried at once.
        self._read_at_once = True
        connection = await self._connection_or_reconnect()
        # Cleared before reading: a notification that arrives during the read
        # sets it again, and the next call reads at once.
        self._wake.clear()
        return await self._read(connection)

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(StoreError), translate_errors("feed close"):
                await asyncio.wait_for(connection.close(), 2.0)
            connection.terminate()

    async def _connection_or_reconnect(self) -> asyncpg.Connection[Any]:
        if self._closed:
            raise StoreError("the feed is closed")
        connection = self._connection
        if connection is not None and not connection.is_closed():
            return connection
        self._connection = None
        connection = await self._connect_to_store()
        try:
            with translate_errors("listen"):
                await connection.add_listener(CHANNEL, self._notified)
        except BaseException:
            connection.terminate()
            raise
        connection.add_termination_listener(self._terminated)
        if self._closed:
            connection.terminate()
            raise StoreError("the feed is closed")
        self._connection = connection
        return connection

    def _notified(self, _connection: object, _pid: int, _channel: str, origin: object) -> None:
        if origin != self._origin:
            self._wake.set()

    def _terminated(self, *_: object) -> None:
        # The server closed the connection: wake up to notice it and reconnect.
        self._wake.set()

    async def _read(self, connection: asyncpg.Connection[Any]) -> list[Message]:
        assert self._position is not None
        try:
            with translate_errors("feed"):
                rows = await connection.fetch(
                    _READ, self._position, self._batch, self._origin, timeout=QUERY_TIMEOUT
                )
        except StoreError:
            # The cursor is untouched: the next call reads the same rows again.
            if self._connection is connection:
                self._connection = None
            connection.terminate()
            raise
        self._read_at_once = len(rows) >= self._batch
        if not rows:
            return []
        self._position = int(rows[-1][0])
        origin = self._origin
        return [
            Message(
                id=message_id,
                topic=topic,
                data=payload.encode(),
                created=created,
                origin=row_origin,
                created_by=created_by,
                seq=seq,
            )
            if message_id is not None
            else Message("", "", b"", "", origin, None, seq)
            for seq, message_id, topic, payload, row_origin, created_by, created in rows
        ]
