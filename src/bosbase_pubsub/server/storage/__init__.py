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
    "check_store_url",
    "is_shared",
    "open_store",
]

SHARED_SCHEMES = ("postgres", "postgresql", "nats", "tls")
"""URL schemes of the stores that several nodes share (each has a ``Feed``)."""


def is_shared(url: str | None) -> bool:
    """Whether the store at ``url`` can be shared by several nodes (PostgreSQL, NATS)."""
    return bool(url) and str(url).split(":", 1)[0] in SHARED_SCHEMES


def check_store_url(url: str | None) -> None:
    """Raise ``ValueError`` saying what is wrong if ``url`` names no store ``open_store`` opens.

    Only the URL is read (no connection): for a clear usage error before starting.
    """
    if not url or url == "sqlite:" or url.startswith("sqlite:///"):
        return
    scheme = url.split(":", 1)[0]
    if scheme in ("postgres", "postgresql"):
        return
    if scheme in ("nats", "tls"):
        from .jetstream_common import parse_url

        parse_url(url)
        return
    raise ValueError(
        f"unsupported database URL scheme {scheme!r} (expected sqlite, postgres, nats or tls)"
    )


def open_store(url: str | None, data_dir: Path, *, sqlite_synchronous: str = "normal") -> Store:
    """The store for ``url``; ``None`` or ``sqlite:`` means the embedded file in ``data_dir``.

    Accepted: ``sqlite:///path/to/file.db`` (or ``sqlite:`` for ``data_dir/data.db``),
    ``postgres://USER:PASSWORD@HOST:PORT/DATABASE`` (or ``postgresql://``) for a
    database that any number of nodes share, and ``nats://HOST:PORT[?stream=NAME...]``
    (``tls://`` for TLS) for a NATS JetStream server they share (see
    ``jetstream_common.JetStreamSettings``).
    The returned store is not opened yet. Raises ``ValueError`` for any other scheme
    or a malformed URL (``check_store_url`` says the same without building a store).
    ``sqlite_synchronous`` is SQLite's ``synchronous`` pragma (``normal`` or ``full``),
    see ``ServerConfig``.
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
    if scheme in ("nats", "tls"):
        from .jetstream import JetStreamStore

        return JetStreamStore(url)
    check_store_url(url)
    raise AssertionError("check_store_url accepted a URL open_store does not open")
