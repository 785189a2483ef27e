"""The embedded backend: one SQLite file in WAL mode, used from one thread.

sqlite3 blocks, so every statement runs on a single dedicated worker thread
that owns the only connection; the event loop awaits it. One writer is all
SQLite allows anyway, and group commit (``server.commits``) hands it whole
batches, so the thread is never the bottleneck for long.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .base import AccountStore, AuthRecord, DuplicateRecordError, Message, Store, StoreError

T = TypeVar("T")

AUTH_TABLES = ("users", "_superusers")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _pubsub_messages (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT NOT NULL,
    topic     TEXT NOT NULL,
    payload   TEXT NOT NULL,
    origin    TEXT NOT NULL,
    createdBy TEXT,
    created   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_pubsub_messages_created ON _pubsub_messages (created);
CREATE INDEX IF NOT EXISTS idx_pubsub_messages_topic_created
    ON _pubsub_messages (topic, created);
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

_RECORD_COLUMNS = "id, email, password, tokenKey, verified, emailVisibility, name, created, updated"


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

        def connect() -> None:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            connection = sqlite3.connect(self.path, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            connection.execute("PRAGMA busy_timeout=5000")
            connection.executescript(_SCHEMA)
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

    async def append(self, messages: Sequence[Message]) -> None:
        rows = [
            (m.id, m.topic, m.data.decode(), m.origin, m.created_by, m.created) for m in messages
        ]

        def insert(connection: sqlite3.Connection) -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(
                    "INSERT INTO _pubsub_messages (id, topic, payload, origin, createdBy, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

        try:
            await self.run(insert)
        except sqlite3.IntegrityError as error:
            raise StoreError(f"sqlite: {error}") from error

    async def prune(self, before: str, limit: int) -> int:
        def delete(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                "DELETE FROM _pubsub_messages WHERE seq IN"
                " (SELECT seq FROM _pubsub_messages WHERE created < ? ORDER BY created LIMIT ?)",
                (before, limit),
            )
            return cursor.rowcount

        return await self.run(delete)

    async def ping(self) -> None:
        await self.run(lambda connection: connection.execute("SELECT 1").fetchone())


class SqliteAccounts(AccountStore):
    """Accounts and secrets in the same SQLite file."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    @staticmethod
    def _table(collection: str) -> str:
        if collection not in AUTH_TABLES:
            raise ValueError(f"not an auth collection: {collection!r}")
        return collection

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

    async def secret(self, name: str, candidate: str) -> str:
        def read_or_store(connection: sqlite3.Connection) -> str:
            connection.execute(
                "INSERT INTO _params (id, value) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                (name, candidate),
            )
            row = connection.execute("SELECT value FROM _params WHERE id = ?", (name,)).fetchone()
            return str(row[0])

        return await self._store.run(read_or_store)
