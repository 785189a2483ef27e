"""The shared backend: one PostgreSQL database for any number of nodes.

Messages, accounts and the signing secrets all live in the database, so
nodes can start, stop or crash independently, and a token issued by one
node verifies on every other.

The cross-node cursor (``postgres_feed``) rests on one invariant, which
this module's writer keeps:

    Rows of ``_pubsub_messages`` become visible in ``seq`` order.

Every batch is stored by one call of the SQL function
``_pubsub_store_batch`` (``_pubsub_store`` and ``_pubsub_append`` in earlier
schema versions, kept for nodes not upgraded yet), that is one statement and
so one transaction, which (1) takes the transaction-level advisory lock
``APPEND_LOCK``, (2) inserts the batch, drawing ``seq`` from an identity
with ``CACHE 1`` (so values are handed out in the order they are drawn,
across sessions), (3) notifies the feeds (unless no other node listens:
see below), and (4) commits. PostgreSQL
releases a transaction's locks only after its commit is visible to every new
snapshot, so the next batch draws its ``seq`` values only once this one is
visible: ``seq`` order is commit order. At any moment, every row that is not
visible yet will have a larger ``seq`` than every visible one, so a reader
that has read up to ``n`` never needs to look below ``n`` again. A late
commit cannot be skipped, whatever order the nodes assigned ids and
timestamps in.

The lock is held for the insert and the commit only, server-side, in one
round trip: no node can stall the others by pausing while holding it.

Notifications only wake feeds (they never decide what is read), and one that
nobody else hears is pure cost: PostgreSQL signals the node's own feed
connection, which the node then reads and ignores, as dear as the rest of a
one-message append. So a node looks every ``LISTENERS_CHECK_INTERVAL`` for
other nodes' feed connections (by ``application_name``, ``FEED_APPLICATION``)
and sets ``NOTIFY_SETTING`` to ``off`` on its append connection while there
are none. A node that starts meanwhile is woken by its fallback poll until the
others have seen it: later, at worst, never lost.

Connections per node: one for appends (the hot path: no pool round trips),
a small pool for accounts, pruning, locks and health, and one for each feed
(it LISTENs). Every asyncpg or socket error is translated into
``StoreError`` in one place, ``translate_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace
from typing import Any

import asyncpg
import orjson

from .base import (
    AUTH_TABLES,
    AccountStore,
    AuthRecord,
    Feed,
    Message,
    Positions,
    Store,
    StoreError,
)
from .postgres_common import CHANNEL, DRIVER_ERRORS, QUERY_TIMEOUT, translate_errors
from .postgres_feed import PostgresFeed

log = logging.getLogger("bosbase_pubsub.storage.postgres")

NOTIFY_SETTING = "pubsub.notify"
"""A session setting of the append connection: ``off`` while no other node listens."""
FEED_APPLICATION = "bosbase-pubsub feed"
"""The ``application_name`` of feed connections, ``bosbase-pubsub feed <node id>``: a node
looks for the others' to know whether its notifications would wake anyone."""
LISTENERS_CHECK_INTERVAL = 1.0
"""Seconds between two looks for other nodes' feeds (a node started in between may be
woken by its fallback poll only, for up to that long)."""

CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection before giving up (the store is then unreachable)."""
RECONNECT_MIN, RECONNECT_MAX = 0.05, 1.0
"""Bounds, in seconds, of the writer's reconnect backoff; appends fail fast in between."""


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key for ``name``, the same on every node."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


SCHEMA_LOCK = lock_key("bosbase_pubsub.schema")
APPEND_LOCK = lock_key("bosbase_pubsub.append")

_SCHEMA_VERSION_PARAM = "pubsub.schemaVersion"

# Schema version 3: a batch travels as two JSON documents rather than seven arrays (asyncpg
# encodes arrays element by element, the costliest part of an append on the
# node), and comes back as one row; (topic, created) gave way to (topic, seq).
_MIGRATION_3 = f"""
DROP INDEX IF EXISTS idx_pubsub_messages_topic_created;
-- p_rows: [{{"i": id, "t": topic, "b": createdBy, "c": created, "k": key}}, ...];
-- p_payloads: [data, ...] in the same order (json_array_elements keeps each
-- element's text as sent). Stores the batch like _pubsub_store and returns one
-- row: the first and last seq stored (the stored inputs got consecutive values
-- in input order), and for each input not stored (its (createdBy, key) was
-- stored before, or by an earlier input of the batch) its position n (from 1)
-- with either the earlier row's seq, id and created, or the owning input's n.
CREATE OR REPLACE FUNCTION _pubsub_store_batch(
    p_origin TEXT, p_rows JSON, p_payloads JSON, p_keyed BOOLEAN
) RETURNS TABLE (
    o_first BIGINT, o_last BIGINT, o_dup_n BIGINT[], o_dup_owner BIGINT[],
    o_dup_seq BIGINT[], o_dup_id TEXT[], o_dup_created TEXT[]
) LANGUAGE plpgsql AS $fn$
BEGIN
    -- Released after the commit is visible: seq order is commit order. Every
    -- append holds it, so no other transaction can store the same key meanwhile.
    PERFORM pg_advisory_xact_lock({APPEND_LOCK});
    IF NOT p_keyed THEN
        RETURN QUERY
        WITH inserted AS (
            INSERT INTO _pubsub_messages (id, topic, payload, origin, "createdBy", created)
            SELECT r.i, r.t, d.v, p_origin, r.b, r.c
            FROM ROWS FROM (json_to_recordset(p_rows) AS (i TEXT, t TEXT, b TEXT, c TEXT))
                WITH ORDINALITY AS r(i, t, b, c, n)
            JOIN json_array_elements(p_payloads) WITH ORDINALITY AS d(v, n) ON d.n = r.n
            ORDER BY r.n
            RETURNING seq
        )
        SELECT min(seq), max(seq), NULL::BIGINT[], NULL::BIGINT[], NULL::BIGINT[],
            NULL::TEXT[], NULL::TEXT[]
        FROM inserted;
    ELSE
        RETURN QUERY
        WITH input AS (
            SELECT r.n, r.i, r.t, r.b, r.c, d.v,
                CASE WHEN r.b IS NULL THEN NULL ELSE r.k END AS k
            FROM ROWS FROM (json_to_recordset(p_rows) AS (i TEXT, t TEXT, b TEXT, c TEXT, k TEXT))
                WITH ORDINALITY AS r(i, t, b, c, k, n)
            JOIN json_array_elements(p_payloads) WITH ORDINALITY AS d(v, n) ON d.n = r.n
        ), owner AS (
            -- The first input of the batch with the same (createdBy, key).
            SELECT i.n, CASE WHEN i.k IS NULL THEN i.n
                ELSE min(i.n) OVER (PARTITION BY i.b, i.k) END AS first
            FROM input i
        ), earlier AS (
            SELECT i.n, m.seq, m.id, m.created FROM input i JOIN _pubsub_messages m
                ON m."createdBy" = i.b AND m."publishKey" = i.k
        ), inserted AS (
            INSERT INTO _pubsub_messages
                (id, topic, payload, origin, "createdBy", created, "publishKey")
            SELECT i.i, i.t, i.v, p_origin, i.b, i.c, i.k
            FROM input i JOIN owner o ON o.n = i.n
            WHERE o.first = i.n AND NOT EXISTS (SELECT 1 FROM earlier e WHERE e.n = i.n)
            ORDER BY i.n
            RETURNING seq
        )
        SELECT (SELECT min(seq) FROM inserted), (SELECT max(seq) FROM inserted),
            array_agg(o.n ORDER BY o.n),
            array_agg(CASE WHEN e.n IS NULL THEN o.first END ORDER BY o.n),
            array_agg(e.seq ORDER BY o.n), array_agg(e.id ORDER BY o.n),
            array_agg(e.created ORDER BY o.n)
        FROM owner o LEFT JOIN earlier e ON e.n = o.n
        WHERE o.first <> o.n OR e.n IS NOT NULL;
    END IF;
    PERFORM pg_notify('{CHANNEL}', p_origin);
END
$fn$;
"""

_NOTIFY_ALWAYS = f"    PERFORM pg_notify('{CHANNEL}', p_origin);\n"
_NOTIFY_UNLESS_OFF = f"""    -- Off while no other node's feed listens (see PostgresStore).
    IF current_setting('{NOTIFY_SETTING}', true) IS DISTINCT FROM 'off' THEN
        PERFORM pg_notify('{CHANNEL}', p_origin);
    END IF;
"""
assert _MIGRATION_3.count(_NOTIFY_ALWAYS) == 1

_MIGRATIONS: tuple[str, ...] = (
    # 1: messages, accounts, and the append function.
    """
CREATE TABLE IF NOT EXISTS _pubsub_messages (
    -- CACHE 1 matters: a cache would let a session hand out values it drew
    -- earlier, and seq order would no longer be commit order.
    seq         BIGINT GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    -- Random 15-character ids, unique in practice; like the SQLite schema, not
    -- indexed (an index would cost every insert and nothing reads by id).
    id          TEXT NOT NULL,
    topic       TEXT NOT NULL,
    payload     JSON NOT NULL,
    origin      TEXT NOT NULL,
    "createdBy" TEXT,
    created     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_pubsub_messages_created ON _pubsub_messages (created);
CREATE INDEX IF NOT EXISTS idx_pubsub_messages_topic_created
    ON _pubsub_messages (topic, created);
"""
    + "".join(
        f"""
CREATE TABLE IF NOT EXISTS {table} (
    id                TEXT PRIMARY KEY,
    email             TEXT NOT NULL,
    password          TEXT NOT NULL,
    "tokenKey"        TEXT NOT NULL,
    verified          BOOLEAN NOT NULL DEFAULT FALSE,
    "emailVisibility" BOOLEAN NOT NULL DEFAULT FALSE,
    name              TEXT NOT NULL DEFAULT '',
    created           TEXT NOT NULL,
    updated           TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_{table}_email ON {table} (lower(email));
"""
        for table in AUTH_TABLES
    )
    + f"""
CREATE OR REPLACE FUNCTION _pubsub_append(
    p_ids TEXT[], p_topics TEXT[], p_payloads TEXT[], p_origins TEXT[],
    p_creators TEXT[], p_created TEXT[]
) RETURNS VOID LANGUAGE plpgsql AS $fn$
BEGIN
    -- Released after the commit is visible: seq order is commit order.
    PERFORM pg_advisory_xact_lock({APPEND_LOCK});
    INSERT INTO _pubsub_messages (id, topic, payload, origin, "createdBy", created)
        SELECT u.id, u.topic, u.payload::json, u.origin, u.creator, u.created
        FROM unnest(p_ids, p_topics, p_payloads, p_origins, p_creators, p_created)
            WITH ORDINALITY AS u(id, topic, payload, origin, creator, created, n)
        ORDER BY u.n;
    -- The payload names the storing node (never the messages): nodes ignore their own.
    PERFORM pg_notify('{CHANNEL}', p_origins[1]);
END
$fn$;
""",
    # 2: resume (positions, replay by topic) and idempotent publish keys.
    f"""
ALTER TABLE _pubsub_messages ADD COLUMN IF NOT EXISTS "publishKey" TEXT;
CREATE INDEX IF NOT EXISTS idx_pubsub_messages_topic_seq ON _pubsub_messages (topic, seq);
CREATE UNIQUE INDEX IF NOT EXISTS idx_pubsub_messages_publish_key
    ON _pubsub_messages ("createdBy", "publishKey") WHERE "publishKey" IS NOT NULL;
-- Like _pubsub_append, and returns, per input in order, the stored row's seq, id
-- and created: its own, or the first one's when its (createdBy, key) was stored
-- before or earlier in the batch (that input is then not stored again).
CREATE OR REPLACE FUNCTION _pubsub_store(
    p_ids TEXT[], p_topics TEXT[], p_payloads TEXT[], p_origins TEXT[],
    p_creators TEXT[], p_created TEXT[], p_keys TEXT[]
) RETURNS TABLE (o_n BIGINT, o_seq BIGINT, o_id TEXT, o_created TEXT)
LANGUAGE plpgsql AS $fn$
BEGIN
    -- Released after the commit is visible: seq order is commit order. Every
    -- append holds it, so no other transaction can store the same key meanwhile.
    PERFORM pg_advisory_xact_lock({APPEND_LOCK});
    IF p_keys IS NULL THEN
        RETURN QUERY
        WITH inserted AS (
            INSERT INTO _pubsub_messages (id, topic, payload, origin, "createdBy", created)
            SELECT u.id, u.topic, u.payload::json, u.origin, u.creator, u.created
            FROM unnest(p_ids, p_topics, p_payloads, p_origins, p_creators, p_created)
                WITH ORDINALITY AS u(id, topic, payload, origin, creator, created, n)
            ORDER BY u.n
            RETURNING seq
        )
        -- Drawn in input order under the lock: consecutive, ascending.
        SELECT row_number() OVER (ORDER BY seq), seq, NULL::TEXT, NULL::TEXT
        FROM inserted ORDER BY seq;
    ELSE
        RETURN QUERY
        WITH input AS (
            SELECT u.*, CASE WHEN u.creator IS NULL THEN NULL ELSE u.key END AS k
            FROM unnest(p_ids, p_topics, p_payloads, p_origins, p_creators, p_created, p_keys)
                WITH ORDINALITY AS u(id, topic, payload, origin, creator, created, key, n)
        ), owner AS (
            SELECT i.n, CASE WHEN i.k IS NULL THEN i.n
                ELSE min(i.n) OVER (PARTITION BY i.creator, i.k) END AS first
            FROM input i
        ), earlier AS (
            SELECT i.n, m.seq, m.id, m.created FROM input i JOIN _pubsub_messages m
                ON m."createdBy" = i.creator AND m."publishKey" = i.k
        ), inserted AS (
            INSERT INTO _pubsub_messages
                (id, topic, payload, origin, "createdBy", created, "publishKey")
            SELECT i.id, i.topic, i.payload::json, i.origin, i.creator, i.created, i.k
            FROM input i JOIN owner o ON o.n = i.n
            WHERE o.first = i.n AND NOT EXISTS (SELECT 1 FROM earlier e WHERE e.n = i.n)
            ORDER BY i.n
            RETURNING seq, id, created
        )
        SELECT i.n, coalesce(e.seq, ins.seq), coalesce(e.id, ins.id),
            coalesce(e.created, ins.created)
        FROM input i
            JOIN owner o ON o.n = i.n
            JOIN input f ON f.n = o.first
            LEFT JOIN earlier e ON e.n = o.first
            LEFT JOIN inserted ins ON ins.id = f.id AND e.n IS NULL
        ORDER BY i.n;
    END IF;
    PERFORM pg_notify('{CHANNEL}', p_origins[1]);
END
$fn$;
""",
    # 3: see _MIGRATION_3.
    _MIGRATION_3,
    # 4: pruning goes by seq (the primary key), so the index on created only cost inserts.
    """
DROP INDEX IF EXISTS idx_pubsub_messages_created;
""",
    # 5: _pubsub_store_batch notifies unless the session set NOTIFY_SETTING to 'off'
    # (nodes of earlier versions never set it, and so always notify).
    _MIGRATION_3.replace(_NOTIFY_ALWAYS, _NOTIFY_UNLESS_OFF),
    # 6: the nodes' heartbeats, for the operator console (Store.report_node).
    """
CREATE TABLE IF NOT EXISTS _pubsub_nodes (
    id     TEXT PRIMARY KEY,
    report JSON NOT NULL,
    seen   TIMESTAMPTZ NOT NULL DEFAULT now()
);
""",
)
SCHEMA_VERSION = len(_MIGRATIONS)

_APPEND = "SELECT * FROM _pubsub_store_batch($1, $2, $3, $4)"

PRUNED_THROUGH_PARAM = "pubsub.prunedThrough"

# The oldest rows by seq, up to the first one not older than the cutoff (see Store.prune).
_PRUNE = """
WITH oldest AS (
    SELECT seq, created FROM _pubsub_messages ORDER BY seq LIMIT $2
), deleted AS (
    DELETE FROM _pubsub_messages WHERE seq IN (
        SELECT seq FROM oldest WHERE seq < coalesce(
            (SELECT min(seq) FROM oldest WHERE created >= $1), 9223372036854775807))
    RETURNING seq
), mark AS (
    -- Resuming from below it may have missed messages ("pruned").
    INSERT INTO _params (id, value)
    SELECT $3, max(seq)::text FROM deleted HAVING count(*) > 0
    ON CONFLICT (id) DO UPDATE
        SET value = greatest(_params.value::bigint, EXCLUDED.value::bigint)::text
)
SELECT count(*) FROM deleted
"""

_MESSAGE_COLUMNS = 'seq, id, topic, payload, origin, "createdBy", created, "publishKey"'

_RECORD_COLUMNS = (
    'id, email, password, "tokenKey", verified, "emailVisibility", name, created, updated'
)


def _connection_is_broken(connection: asyncpg.Connection[Any], error: BaseException) -> bool:
    """Whether ``connection`` must be replaced after ``error`` (rather than reused)."""
    if connection.is_closed():
        return True
    # A timeout leaves the statement's outcome and the session's state unknown.
    return not isinstance(error, asyncpg.PostgresError) or isinstance(
        error, asyncpg.PostgresConnectionError
    )


class PostgresStore(Store):
    """A ``Store`` on a PostgreSQL database that any number of nodes share.

    ``url`` is a libpq-style URL, ``postgres://USER:PASSWORD@HOST:PORT/DATABASE``
    (``postgresql://`` too); a password may also come from ``PGPASSWORD`` or
    ``~/.pgpass``.
    """

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self.url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[Any] | None = None
        self._writer: asyncpg.Connection[Any] | None = None
        self._writer_retry_at = 0.0
        self._writer_delay = RECONNECT_MIN
        self._writer_notifies: bool | None = None  # NOTIFY_SETTING of the append connection
        self._node_id: str | None = None  # set by feed(): this node follows the others
        self._others_listen = True  # whether another node's feed listens (unknown: yes)
        self._listeners_looked_at = -LISTENERS_CHECK_INTERVAL
        self._listeners_look: asyncio.Task[None] | None = None
        self._closed = False
        self.accounts = PostgresAccounts(self)

    # ------------------------------------------------------------------ connections

    async def connect(self, *, application_name: str = "bosbase-pubsub") -> asyncpg.Connection[Any]:
        """A new connection of its own (the caller closes it). Raises ``StoreError``."""
        with translate_errors("connect"):
            return await asyncpg.connect(
                self.url,
                timeout=CONNECT_TIMEOUT,
                command_timeout=QUERY_TIMEOUT,
                server_settings={"application_name": application_name},
            )

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        if self._pool is None or self._closed:
            raise StoreError("the store is closed")
        return self._pool

    async def open(self) -> None:
        with translate_errors("open"):
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=QUERY_TIMEOUT,
                server_settings={"application_name": "bosbase-pubsub"},
            )
        try:
            await self._migrate()
            self._writer = await self._connect_writer()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        """Create or upgrade the schema; safe when several nodes start at once."""
        with translate_errors("schema"):
            async with self.pool.acquire() as connection, connection.transaction():
                # Nodes starting together queue here; each finds the work done.
                await connection.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                await connection.execute(
                    "CREATE TABLE IF NOT EXISTS _params (id TEXT PRIMARY KEY, value TEXT NOT NULL)"
                )
                stored = await connection.fetchval(
                    "SELECT value FROM _params WHERE id = $1", _SCHEMA_VERSION_PARAM
                )
                version = int(stored) if stored is not None else 0
                if version > SCHEMA_VERSION:
                    log.warning(
                        "the database schema (version %d) is newer than this server's (%d)",
                        version,
                        SCHEMA_VERSION,
                    )
                for step in _MIGRATIONS[version:]:
                    await connection.execute(step)
                if version < SCHEMA_VERSION:
                    await connection.execute(
                        "INSERT INTO _params (id, value) VALUES ($1, $2)"
                        " ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value",
                        _SCHEMA_VERSION_PARAM,
                        str(SCHEMA_VERSION),
                    )
                    log.info("database schema at version %d", SCHEMA_VERSION)
                # The cursor is only safe if seq values are handed out in draw order.
                cache = await connection.fetchval(
                    "SELECT seqcache FROM pg_sequence WHERE seqrelid ="
                    " pg_get_serial_sequence('_pubsub_messages', 'seq')::regclass"
                )
        if cache != 1:
            raise StoreError(
                "postgres: the sequence of _pubsub_messages.seq must have CACHE 1"
                f" (it has {cache}): ALTER TABLE _pubsub_messages ALTER seq SET CACHE 1"
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        look, self._listeners_look = self._listeners_look, None
        if look is not None:
            look.cancel()
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                await asyncio.wait_for(writer.close(), CONNECT_TIMEOUT)
            writer.terminate()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT)
            except Exception:  # timed out or broken: close the sockets without a goodbye
                pool.terminate()

    async def _writer_connection(self) -> asyncpg.Connection[Any]:
        """The append connection, reconnected (with backoff) if it was lost."""
        if self._closed:
            raise StoreError("the store is closed")
        writer = self._writer
        if writer is not None and not writer.is_closed():
            return writer
        self._writer = None
        now = time.monotonic()
        if now < self._writer_retry_at:
            # Fail fast between attempts rather than queue publishes behind connects.
            raise StoreError("postgres: unreachable (reconnecting)")
        try:
            writer = await self._connect_writer()
        except StoreError:
            self._writer_retry_at = time.monotonic() + self._writer_delay
            self._writer_delay = min(self._writer_delay * 2, RECONNECT_MAX)
            raise
        self._writer_delay = RECONNECT_MIN
        self._writer_retry_at = 0.0
        if self._closed:
            writer.terminate()
            raise StoreError("the store is closed")
        self._writer = writer
        return writer

    async def _connect_writer(self) -> asyncpg.Connection[Any]:
        """A new append connection, warmed up by an empty append.

        The first call of ``_pubsub_store_batch`` on a connection costs 10 to 40 ms
        (asyncpg introspects its result types, PostgreSQL compiles the function and
        plans its insert): paid here, not by the first publish after a (re)connect.
        The empty append stores nothing and, with notifications off, wakes no one.
        """
        writer = await self.connect()
        try:
            with translate_errors("connect"):
                await writer.execute("SELECT set_config($1, 'off', false)", NOTIFY_SETTING)
                await writer.fetchrow(_APPEND, "", "[]", "[]", False)
        except BaseException:
            writer.terminate()
            raise
        self._writer_notifies = False
        return writer

    def _drop_writer(self, writer: asyncpg.Connection[Any]) -> None:
        if self._writer is writer:
            self._writer = None
        writer.terminate()

    # ------------------------------------------------------------------ messages

    async def append(self, messages: Sequence[Message]) -> list[Message]:
        keyed = any(m.key is not None and m.created_by is not None for m in messages)
        rows = orjson.dumps(
            [
                {"i": m.id, "t": m.topic, "b": m.created_by, "c": m.created, "k": m.key}
                for m in messages
            ]
        ).decode()
        payloads = orjson.dumps([orjson.Fragment(m.data) for m in messages]).decode()
        origin = messages[0].origin if messages else ""
        writer = await self._writer_connection()
        notify = self._notify_wanted()
        try:
            with translate_errors("append"):
                if notify is not self._writer_notifies:
                    await writer.execute(
                        "SELECT set_config($1, $2, false)",
                        NOTIFY_SETTING,
                        "on" if notify else "off",
                    )
                    self._writer_notifies = notify
                row = await writer.fetchrow(_APPEND, origin, rows, payloads, keyed)
        except StoreError as error:
            if error.__cause__ is not None and _connection_is_broken(writer, error.__cause__):
                self._drop_writer(writer)
            raise
        assert row is not None
        return _stored(messages, row)

    async def read_topic(self, topic: str, after: int, through: int, limit: int) -> list[Message]:
        if _holds_nul(topic):
            return []
        with translate_errors("read"):
            rows = await self.pool.fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM _pubsub_messages"
                " WHERE topic = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
                topic,
                after,
                through,
                limit,
            )
        return [_row_message(row) for row in rows]

    async def browse(self, topic: str | None, before: int | None, limit: int) -> list[Message]:
        # NULLs switch a condition off; the planner still walks (topic, seq) or the
        # primary key backwards, as each query is planned for its parameters' values.
        where = []
        params: list[object] = []
        if topic is not None:
            if _holds_nul(topic):
                return []
            params.append(topic)
            where.append(f"topic = ${len(params)}")
        if before is not None:
            params.append(before)
            where.append(f"seq < ${len(params)}")
        params.append(limit)
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM _pubsub_messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY seq DESC LIMIT ${len(params)}"
        with translate_errors("browse"):
            rows = await self.pool.fetch(sql, *params)
        return [_row_message(row) for row in rows]

    async def read_prefix(self, prefix: str, after: int, through: int, limit: int) -> list[Message]:
        if _holds_nul(prefix):
            return []
        with translate_errors("read"):
            rows = await self.pool.fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM _pubsub_messages"
                # left(), not LIKE (no escaping, any collation): the walk goes by seq.
                " WHERE seq > $1 AND seq <= $2 AND left(topic, $3) = $4 ORDER BY seq LIMIT $5",
                after,
                through,
                len(prefix),
                prefix,
                limit,
            )
        return [_row_message(row) for row in rows]

    async def positions(self) -> Positions:
        with translate_errors("positions"):
            row = await self.pool.fetchrow(
                "SELECT (SELECT coalesce(max(seq), 0) FROM _pubsub_messages),"
                " (SELECT value::bigint FROM _params WHERE id = $1)",
                PRUNED_THROUGH_PARAM,
            )
        assert row is not None
        pruned = int(row[1] or 0)
        return Positions(newest=max(int(row[0]), pruned), pruned_through=pruned)

    async def prune(self, before: str, limit: int) -> int:
        with translate_errors("prune"):
            deleted = await self.pool.fetchval(_PRUNE, before, limit, PRUNED_THROUGH_PARAM)
        return int(deleted)

    async def ping(self) -> None:
        with translate_errors("ping"):
            await self.pool.fetchval("SELECT 1")

    def feed(self, *, skip_origin: str) -> Feed:
        self._node_id = skip_origin
        name = f"{FEED_APPLICATION} {skip_origin}"
        return PostgresFeed(lambda: self.connect(application_name=name), skip_origin=skip_origin)

    # ------------------------------------------------------------------ notifications

    def _notify_wanted(self) -> bool:
        """Whether this node's next append should notify: while another node's feed listens.

        A notification nobody else hears still costs PostgreSQL a signal to, and a
        wake-up of, this node's own feed connection (and this node the reading of
        it), about as much as the rest of a one-message append. Unknown means yes.
        """
        if self._node_id is None:  # not following (no node id known): keep notifying
            return True
        now = time.monotonic()
        if self._listeners_look is None and now >= (
            self._listeners_looked_at + LISTENERS_CHECK_INTERVAL
        ):
            self._listeners_looked_at = now
            self._listeners_look = asyncio.get_running_loop().create_task(
                self._look_for_listeners()
            )
        return self._others_listen

    async def _look_for_listeners(self) -> None:
        try:
            with translate_errors("listeners"):
                self._others_listen = bool(
                    await self.pool.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
                        " WHERE datname = current_database()"
                        " AND starts_with(application_name, $1) AND application_name <> $2)",
                        f"{FEED_APPLICATION} ",
                        f"{FEED_APPLICATION} {self._node_id}",
                    )
                )
        except StoreError:
            self._others_listen = True
        finally:
            self._listeners_look = None

    # ------------------------------------------------------------------ nodes

    async def report_node(self, node_id: str, report: bytes) -> None:
        with translate_errors("report node"):
            await self.pool.execute(
                "INSERT INTO _pubsub_nodes (id, report, seen) VALUES ($1, $2, now())"
                " ON CONFLICT (id) DO UPDATE SET report = EXCLUDED.report, seen = now()",
                node_id,
                report.decode(),
            )
            # Nodes that stopped without a goodbye (killed) leave a row behind.
            await self.pool.execute(
                "DELETE FROM _pubsub_nodes WHERE seen < now() - interval '1 hour'"
            )

    async def forget_node(self, node_id: str) -> None:
        with translate_errors("forget node"):
            await self.pool.execute("DELETE FROM _pubsub_nodes WHERE id = $1", node_id)

    async def node_reports(self, within: float) -> dict[str, bytes]:
        with translate_errors("node reports"):
            rows = await self.pool.fetch(
                "SELECT id, report::text FROM _pubsub_nodes"
                " WHERE seen >= now() - make_interval(secs => $1) ORDER BY id",
                within,
            )
        return {row[0]: row[1].encode() for row in rows}

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        key = lock_key(f"bosbase_pubsub.exclusive.{name}")
        with translate_errors(f"lock {name}"):
            connection = await self.pool.acquire()
        try:
            with translate_errors(f"lock {name}"):
                held = bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", key))
            try:
                yield held
            finally:
                if held:
                    # If this fails the connection is gone, and the lock with it.
                    with contextlib.suppress(*DRIVER_ERRORS):
                        await connection.execute("SELECT pg_advisory_unlock($1)", key)
        finally:
            with contextlib.suppress(*DRIVER_ERRORS):
                await self.pool.release(connection)


def _row_message(row: asyncpg.Record) -> Message:
    """A message from a row of ``_MESSAGE_COLUMNS``."""
    return Message(
        id=row[1],
        topic=row[2],
        data=row[3].encode(),
        origin=row[4],
        created_by=row[5],
        created=row[6],
        seq=row[0],
        key=row[7],
    )


def _stored(messages: Sequence[Message], row: asyncpg.Record) -> list[Message]:
    """``Store.append``'s result from the row ``_pubsub_store_batch`` returned."""
    first, last, dup_n, dup_owner, dup_seq, dup_id, dup_created = row
    owners: dict[int, int] = {}  # input n -> the earlier input of the batch with its key
    earlier: dict[int, tuple[int, str, str]] = {}  # input n -> the stored row's seq, id, created
    if dup_n is not None:  # one array element per input not stored
        for n, owner, seq, message_id, created in zip(
            dup_n, dup_owner, dup_seq, dup_id, dup_created, strict=True
        ):
            if owner is not None:
                owners[n] = owner
            else:
                earlier[n] = (seq, message_id, created)
    fresh = len(messages) - len(owners) - len(earlier)
    if fresh != (0 if first is None else last - first + 1):
        # Cannot happen while every writer holds APPEND_LOCK (see the module's invariant).
        raise StoreError("postgres: append: the stored batch got non-consecutive seq values")
    stored: list[Message] = []
    next_seq = first
    for n, message in enumerate(messages, 1):
        if n in owners:
            stored.append(stored[owners[n] - 1])
        elif n in earlier:
            seq, message_id, created = earlier[n]
            stored.append(replace(message, id=message_id, created=created, seq=seq))
        else:
            message.seq = next_seq
            next_seq += 1
            stored.append(message)
    return stored


class PostgresAccounts(AccountStore):
    """Accounts and secrets in the shared database: every node sees the same ones."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    @staticmethod
    def _record(collection: str, row: asyncpg.Record | None) -> AuthRecord | None:
        if row is None:
            return None
        return AuthRecord(
            id=row["id"],
            collection=collection,
            email=row["email"],
            password_hash=row["password"],
            token_key=row["tokenKey"],
            verified=row["verified"],
            email_visibility=row["emailVisibility"],
            name=row["name"],
            created=row["created"],
            updated=row["updated"],
        )

    async def find_by_email(self, collection: str, email: str) -> AuthRecord | None:
        table = self._table(collection)
        if _holds_nul(email):
            return None
        with translate_errors("find account"):
            row = await self._store.pool.fetchrow(
                f"SELECT {_RECORD_COLUMNS} FROM {table} WHERE lower(email) = lower($1)", email
            )
        return self._record(collection, row)

    async def find_by_id(self, collection: str, record_id: str) -> AuthRecord | None:
        table = self._table(collection)
        if _holds_nul(record_id):
            return None
        with translate_errors("find account"):
            row = await self._store.pool.fetchrow(
                f"SELECT {_RECORD_COLUMNS} FROM {table} WHERE id = $1", record_id
            )
        return self._record(collection, row)

    async def token_keys(self, collection: str, record_ids: Iterable[str]) -> dict[str, str]:
        table = self._table(collection)
        ids = [record_id for record_id in record_ids if not _holds_nul(record_id)]
        if not ids:
            return {}
        with translate_errors("find accounts"):
            rows = await self._store.pool.fetch(
                f'SELECT id, "tokenKey" FROM {table} WHERE id = ANY($1::text[])', ids
            )
        return {row["id"]: row["tokenKey"] for row in rows}

    async def insert(self, record: AuthRecord) -> None:
        table = self._table(record.collection)
        with translate_errors("insert account"):
            await self._store.pool.execute(
                f"INSERT INTO {table} ({_RECORD_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                record.id,
                record.email,
                record.password_hash,
                record.token_key,
                record.verified,
                record.email_visibility,
                record.name,
                record.created,
                record.updated,
            )

    async def update_password(
        self, collection: str, record_id: str, password_hash: str, token_key: str, updated: str
    ) -> None:
        table = self._table(collection)
        with translate_errors("update account"):
            await self._store.pool.execute(
                f'UPDATE {table} SET password = $1, "tokenKey" = $2, updated = $3 WHERE id = $4',
                password_hash,
                token_key,
                updated,
                record_id,
            )

    async def list_records(self, collection: str, *, offset: int, limit: int) -> list[AuthRecord]:
        table = self._table(collection)
        with translate_errors("list accounts"):
            rows = await self._store.pool.fetch(
                f"SELECT {_RECORD_COLUMNS} FROM {table}"
                " ORDER BY created DESC, id DESC LIMIT $1 OFFSET $2",
                limit,
                offset,
            )
        return [record for row in rows if (record := self._record(collection, row))]

    async def count(self, collection: str) -> int:
        table = self._table(collection)
        with translate_errors("count accounts"):
            return int(await self._store.pool.fetchval(f"SELECT count(*) FROM {table}"))

    async def delete(self, collection: str, record_id: str) -> bool:
        table = self._table(collection)
        if _holds_nul(record_id):
            return False
        with translate_errors("delete account"):
            status = await self._store.pool.execute(f"DELETE FROM {table} WHERE id = $1", record_id)
        return str(status) != "DELETE 0"

    async def secret(self, name: str, candidate: str) -> str:
        with translate_errors("secret"):
            async with self._store.pool.acquire() as connection:
                # Whichever node inserts first wins (a concurrent insert waits
                # for it); the read, a statement of its own, sees the winner.
                await connection.execute(
                    "INSERT INTO _params (id, value) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    name,
                    candidate,
                )
                value = await connection.fetchval("SELECT value FROM _params WHERE id = $1", name)
        return str(value)


def _holds_nul(text: str) -> bool:
    """Whether ``text`` holds U+0000, which PostgreSQL's text cannot: no row matches it
    (the forms and the protocol refuse it on the way in), so a lookup is answered
    without asking, instead of failing as a store error."""
    return "\x00" in text
