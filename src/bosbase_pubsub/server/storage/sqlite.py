"""The embedded backend: one SQLite file in WAL mode, used from one thread.

sqlite3 blocks, so every statement runs on a single dedicated worker thread
that owns the only connection; the event loop awaits it. One writer is all
SQLite allows anyway, and group commit (``server.commits``) hands it whole
batches, so the thread is never the bottleneck for long.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .base import (
    AUTH_TABLES,
    AccountStore,
    AuthRecord,
    DuplicateRecordError,
    Message,
    Positions,
    Store,
    StoreError,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _pubsub_messages (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT NOT NULL,
    topic     TEXT NOT NULL,
    payload   TEXT NOT NULL,
    origin    TEXT NOT NULL,
    createdBy TEXT,
    created   TEXT NOT NULL,
    publishKey TEXT
);
CREATE TABLE IF NOT EXISTS _params (
    id    TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
""" + "".join(
    f"""
CREATE TABLE IF NOT EXISTS {table} (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL,
    password        TEXT NOT NULL,
    tokenKey        TEXT NOT NULL,
    verified        INTEGER NOT NULL DEFAULT 0,
    emailVisibility INTEGER NOT NULL DEFAULT 0,
    name            TEXT NOT NULL DEFAULT '',
    created         TEXT NOT NULL,
    updated         TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_{table}_email ON {table} (email COLLATE NOCASE);
"""
    for table in AUTH_TABLES
)

# Run after _SCHEMA, once the publishKey column exists (older files lack it).
_SCHEMA_RESUME = """
CREATE INDEX IF NOT EXISTS idx_pubsub_messages_topic_seq ON _pubsub_messages (topic, seq);
-- Superseded by (topic, seq) and by pruning in seq order; earlier versions
-- created them, and each cost every insert.
DROP INDEX IF EXISTS idx_pubsub_messages_topic_created;
DROP INDEX IF EXISTS idx_pubsub_messages_created;
CREATE UNIQUE INDEX IF NOT EXISTS idx_pubsub_messages_publish_key
    ON _pubsub_messages (createdBy, publishKey) WHERE publishKey IS NOT NULL;
"""

PRUNED_THROUGH_PARAM = "pubsub.prunedThrough"

# The oldest rows by seq, up to the first one not older than the cutoff (see Store.prune).
_PRUNE = """
WITH oldest AS (SELECT seq, created FROM _pubsub_messages ORDER BY seq LIMIT ?)
DELETE FROM _pubsub_messages WHERE seq IN (
    SELECT seq FROM oldest WHERE seq < coalesce(
        (SELECT min(seq) FROM oldest WHERE created >= ?), 9223372036854775807))
RETURNING seq
"""

_MESSAGE_COLUMNS = "seq, id, topic, payload, origin, createdBy, created, publishKey"


def _message(row: tuple[object, ...]) -> Message:
    seq, message_id, topic, payload, origin, created_by, created, key = row
    return Message(
        id=str(message_id),
        topic=str(topic),
        data=str(payload).encode(),
        created=str(created),
        origin=str(origin),
        created_by=None if created_by is None else str(created_by),
        seq=int(seq),  # type: ignore[call-overload]
        key=None if key is None else str(key),
    )


_RECORD_COLUMNS = "id, email, password, tokenKey, verified, emailVisibility, name, created, updated"
_IDS_PER_QUERY = 500
"""Record ids per query of ``token_keys`` (SQLite allows 32,766 parameters; fewer keep it quick)."""


class SqliteStore(Store):
    """A ``Store`` on one SQLite file (``data.db`` in the data folder)."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = path
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None
        self.accounts = SqliteAccounts(self)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` with the connection on the store's thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, work)
        except RuntimeError as error:  # the executor was shut down
            raise StoreError(str(error)) from error

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            raise StoreError("the store is closed")
        try:
            return work(self._connection)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as error:
            raise StoreError(f"sqlite: {error}") from error

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if sqlite3.sqlite_version_info < (3, 35):
            raise StoreError(f"sqlite: version 3.35 or later needed, not {sqlite3.sqlite_version}")

        def connect() -> None:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            connection = sqlite3.connect(self.path, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            connection.execute("PRAGMA busy_timeout=5000")
            connection.executescript(_SCHEMA)
            columns = {row[1] for row in connection.execute("PRAGMA table_info(_pubsub_messages)")}
            if "publishKey" not in columns:
                connection.execute("ALTER TABLE _pubsub_messages ADD COLUMN publishKey TEXT")
            connection.executescript(_SCHEMA_RESUME)
            self._connection = connection

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, connect)

    async def close(self) -> None:
        if self._connection is None:
            return

        def disconnect() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, disconnect)
        self._executor.shutdown(wait=True)

    async def append(self, messages: Sequence[Message]) -> list[Message]:
        def insert(connection: sqlite3.Connection) -> list[Message]:
            connection.execute("BEGIN IMMEDIATE")
            try:
                stored = _insert_batch(connection, messages)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return stored

        try:
            return await self.run(insert)
        except sqlite3.IntegrityError as error:
            raise StoreError(f"sqlite: {error}") from error

    async def read_topic(self, topic: str, after: int, through: int, limit: int) -> list[Message]:
        def read(connection: sqlite3.Connection) -> list[Message]:
            rows = connection.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM _pubsub_messages"
                " WHERE topic = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (topic, after, through, limit),
            ).fetchall()
            return [_message(row) for row in rows]

        return await self.run(read)

    async def browse(self, topic: str | None, before: int | None, limit: int) -> list[Message]:
        where: list[str] = []
        params: list[object] = []
        if topic is not None:
            where.append("topic = ?")
            params.append(topic)
        if before is not None:
            where.append("seq < ?")
            params.append(before)
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM _pubsub_messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"  # (topic, seq) or the rowid, walked backwards

        def read(connection: sqlite3.Connection) -> list[Message]:
            rows = connection.execute(sql, (*params, limit)).fetchall()
            return [_message(row) for row in rows]

        return await self.run(read)

    async def read_prefix(self, prefix: str, after: int, through: int, limit: int) -> list[Message]:
        def read(connection: sqlite3.Connection) -> list[Message]:
            # substr, not LIKE (no escaping) nor a range on topic (which would make the
            # planner scan the (topic, seq) index and sort): the walk goes by seq.
            rows = connection.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM _pubsub_messages"
                " WHERE seq > ? AND seq <= ? AND substr(topic, 1, ?) = ?"
                " ORDER BY seq LIMIT ?",
                (after, through, len(prefix), prefix, limit),
            ).fetchall()
            return [_message(row) for row in rows]

        return await self.run(read)

    async def positions(self) -> Positions:
        def read(connection: sqlite3.Connection) -> Positions:
            newest = connection.execute(
                "SELECT coalesce(max(seq), 0) FROM _pubsub_messages"
            ).fetchone()[0]
            row = connection.execute(
                "SELECT value FROM _params WHERE id = ?", (PRUNED_THROUGH_PARAM,)
            ).fetchone()
            pruned = int(row[0]) if row is not None else 0
            return Positions(newest=max(int(newest), pruned), pruned_through=pruned)

        return await self.run(read)

    async def prune(self, before: str, limit: int) -> int:
        def delete(connection: sqlite3.Connection) -> int:
            connection.execute("BEGIN IMMEDIATE")
            try:
                deleted = connection.execute(_PRUNE, (limit, before)).fetchall()
                if deleted:
                    # Resuming from below it may have missed messages ("pruned").
                    connection.execute(
                        "INSERT INTO _params (id, value) VALUES (?, ?) ON CONFLICT (id)"
                        " DO UPDATE SET value = max(CAST(value AS INTEGER), excluded.value)",
                        (PRUNED_THROUGH_PARAM, max(row[0] for row in deleted)),
                    )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return len(deleted)

        return await self.run(delete)

    async def ping(self) -> None:
        await self.run(lambda connection: connection.execute("SELECT 1").fetchone())


def _insert_batch(connection: sqlite3.Connection, messages: Sequence[Message]) -> list[Message]:
    """Insert ``messages`` (inside the caller's write transaction); see ``Store.append``."""
    if all(m.key is None or m.created_by is None for m in messages):
        rows: list[tuple[object, ...]] = [
            (m.id, m.topic, m.data.decode(), m.origin, m.created_by, m.created) for m in messages
        ]
        connection.executemany(
            "INSERT INTO _pubsub_messages (id, topic, payload, origin, createdBy, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        # One writer, inside its transaction: the batch got consecutive rowids.
        last = int(connection.execute("SELECT last_insert_rowid()").fetchone()[0])
        for seq, m in enumerate(messages, last - len(messages) + 1):
            m.seq = seq
        return list(messages)

    # Some publishes carry a key: each key is stored once per publisher.
    result: list[Message | int] = []  # a stored message, or the index of a new one
    fresh: list[Message] = []
    owners: dict[tuple[str, str], Message | int] = {}
    for m in messages:
        if m.key is None or m.created_by is None:
            result.append(len(fresh))
            fresh.append(m)
            continue
        owner = owners.get((m.created_by, m.key))
        if owner is None:
            row = connection.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM _pubsub_messages"
                " WHERE createdBy = ? AND publishKey = ?",
                (m.created_by, m.key),
            ).fetchone()
            if row is not None:
                owner = _message(row)
            else:
                owner = len(fresh)
                fresh.append(m)
            owners[(m.created_by, m.key)] = owner
        result.append(owner)
    if fresh:
        connection.executemany(
            "INSERT INTO _pubsub_messages"
            " (id, topic, payload, origin, createdBy, created, publishKey)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (m.id, m.topic, m.data.decode(), m.origin, m.created_by, m.created, m.key)
                for m in fresh
            ],
        )
        last = int(connection.execute("SELECT last_insert_rowid()").fetchone()[0])
        for seq, m in enumerate(fresh, last - len(fresh) + 1):
            m.seq = seq
    return [fresh[item] if isinstance(item, int) else item for item in result]


class SqliteAccounts(AccountStore):
    """Accounts and secrets in the same SQLite file."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    @staticmethod
    def _record(collection: str, row: tuple[object, ...] | None) -> AuthRecord | None:
        if row is None:
            return None
        rid, email, password, token_key, verified, visible, name, created, updated = row
        return AuthRecord(
            id=str(rid),
            collection=collection,
            email=str(email),
            password_hash=str(password),
            token_key=str(token_key),
            verified=bool(verified),
            email_visibility=bool(visible),
            name=str(name),
            created=str(created),
            updated=str(updated),
        )

    async def find_by_email(self, collection: str, email: str) -> AuthRecord | None:
        table = self._table(collection)
        row = await self._store.run(
            lambda c: c.execute(
                f"SELECT {_RECORD_COLUMNS} FROM {table} WHERE email = ? COLLATE NOCASE",
                (email,),
            ).fetchone()
        )
        return self._record(collection, row)

    async def find_by_id(self, collection: str, record_id: str) -> AuthRecord | None:
        table = self._table(collection)
        row = await self._store.run(
            lambda c: c.execute(
                f"SELECT {_RECORD_COLUMNS} FROM {table} WHERE id = ?", (record_id,)
            ).fetchone()
        )
        return self._record(collection, row)

    async def token_keys(self, collection: str, record_ids: Iterable[str]) -> dict[str, str]:
        table = self._table(collection)
        ids = list(record_ids)
        keys: dict[str, str] = {}
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            sql = f"SELECT id, tokenKey FROM {table} WHERE id IN ({','.join('?' * len(chunk))})"

            def read(c: sqlite3.Connection, sql: str = sql, chunk: list[str] = chunk) -> list[Any]:
                return c.execute(sql, chunk).fetchall()

            keys.update((row[0], row[1]) for row in await self._store.run(read))
        return keys

    async def insert(self, record: AuthRecord) -> None:
        table = self._table(record.collection)
        values = (
            record.id,
            record.email,
            record.password_hash,
            record.token_key,
            int(record.verified),
            int(record.email_visibility),
            record.name,
            record.created,
            record.updated,
        )
        try:
            await self._store.run(
                lambda c: c.execute(
                    f"INSERT INTO {table} ({_RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
            )
        except sqlite3.IntegrityError as error:
            raise DuplicateRecordError(str(error)) from error

    async def update_password(
        self, collection: str, record_id: str, password_hash: str, token_key: str, updated: str
    ) -> None:
        table = self._table(collection)
        await self._store.run(
            lambda c: c.execute(
                f"UPDATE {table} SET password = ?, tokenKey = ?, updated = ? WHERE id = ?",
                (password_hash, token_key, updated, record_id),
            )
        )

    async def list_records(self, collection: str, *, offset: int, limit: int) -> list[AuthRecord]:
        table = self._table(collection)
        rows = await self._store.run(
            lambda c: c.execute(
                f"SELECT {_RECORD_COLUMNS} FROM {table}"
                " ORDER BY created DESC, id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        )
        return [record for row in rows if (record := self._record(collection, row))]

    async def count(self, collection: str) -> int:
        table = self._table(collection)
        row = await self._store.run(lambda c: c.execute(f"SELECT count(*) FROM {table}").fetchone())
        return int(row[0])

    async def delete(self, collection: str, record_id: str) -> bool:
        table = self._table(collection)
        cursor = await self._store.run(
            lambda c: c.execute(f"DELETE FROM {table} WHERE id = ?", (record_id,))
        )
        return cursor.rowcount > 0

    async def secret(self, name: str, candidate: str) -> str:
        def read_or_store(connection: sqlite3.Connection) -> str:
            connection.execute(
                "INSERT INTO _params (id, value) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                (name, candidate),
            )
            row = connection.execute("SELECT value FROM _params WHERE id = ?", (name,)).fetchone()
            return str(row[0])

        return await self._store.run(read_or_store)
