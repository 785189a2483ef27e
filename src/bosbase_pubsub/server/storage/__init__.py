"""Storage backends behind one interface, chosen by URL scheme."""

from __future__ import annotations

from pathlib import Path

from .base import AccountStore, AuthRecord, DuplicateRecordError, Message, Store, StoreError

__all__ = [
    "AccountStore",
    "AuthRecord",
    "DuplicateRecordError",
    "Message",
    "Store",
    "StoreError",
    "open_store",
]


def open_store(url: str | None, data_dir: Path) -> Store:
    """The store for ``url``; ``None`` or ``sqlite:`` means the embedded file in ``data_dir``.

    Accepted: ``sqlite:///path/to/file.db`` (or ``sqlite:`` for ``data_dir/data.db``).
    The returned store is not opened yet.
    """
    from .sqlite import SqliteStore

    if not url or url == "sqlite:":
        return SqliteStore(data_dir / "data.db")
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url.removeprefix("sqlite://")))
    scheme = url.split(":", 1)[0]
    raise ValueError(f"unsupported database URL scheme {scheme!r} (expected sqlite)")
