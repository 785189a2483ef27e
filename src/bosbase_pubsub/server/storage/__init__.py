"""Storage backends behind one interface, chosen by URL scheme."""

from __future__ import annotations

from pathlib import Path

from .base import (
    AccountStore,
    AuthRecord,
    DuplicateRecordError,
    Feed,
    Message,
    Positions,
    Store,
    StoreError,
)

__all__ = [
    "AccountStore",
    "AuthRecord",
    "DuplicateRecordError",
    "Feed",
    "Message",
    "Positions",
    "Store",
    "StoreError",
    "open_store",
]


def open_store(url: str | None, data_dir: Path, *, sqlite_synchronous: str = "normal") -> Store:
    """The store for ``url``; ``None`` or ``sqlite:`` means the embedded file in ``data_dir``.

    Accepted: ``sqlite:///path/to/file.db`` (or ``sqlite:`` for ``data_dir/data.db``),
    and ``postgres://USER:PASSWORD@HOST:PORT/DATABASE`` (or ``postgresql://``) for a
    database that any number of nodes share. The returned store is not opened yet.
    Raises ``ValueError`` for any other scheme. ``sqlite_synchronous`` is SQLite's
    ``synchronous`` pragma (``normal`` or ``full``), see ``ServerConfig``.
    """
    if not url or url == "sqlite:" or url.startswith("sqlite:///"):
        from .sqlite import SqliteStore

        if url and url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite://"))
        else:
            path = data_dir / "data.db"
        return SqliteStore(path, synchronous=sqlite_synchronous.upper())
    scheme = url.split(":", 1)[0]
    if scheme in ("postgres", "postgresql"):
        from .postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL scheme {scheme!r} (expected sqlite or postgres)")
