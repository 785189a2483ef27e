"""A real store of each backend: SQLite in ``tmp_path``, PostgreSQL on a fresh database,
NATS JetStream on a fresh stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bosbase_pubsub.server.ids import new_id, now_created
from bosbase_pubsub.server.storage import Message, Store, open_store

from ...conftest import STORE_BACKENDS


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL ``open_store`` gets: ``sqlite:`` (the file in ``tmp_path``), a fresh
    database, or a fresh JetStream stream."""
    if request.param == "sqlite":
        return "sqlite:"
    url: str = request.getfixturevalue(
        "pg_database" if request.param == "postgres" else "nats_stream"
    )
    return url


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(store_url, tmp_path)
    await store.open()
    yield store
    await store.close()


def message(
    topic: str = "t", data: bytes = b"1", *, origin: str = "node-a", **fields: str
) -> Message:
    """A message as a node would build it (fields may be overridden)."""
    values = {"id": new_id(), "created": now_created(), "created_by": None, "key": None, **fields}
    return Message(
        id=values["id"],
        topic=topic,
        data=data,
        created=values["created"],
        origin=origin,
        created_by=values["created_by"],
        key=values["key"],
    )
