"""The PostgreSQL backend's own promises: shared schema, the feed, and its cursor invariant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import replace

import asyncpg
import pytest

from bosbase_pubsub.server.storage import Feed, Message, StoreError
from bosbase_pubsub.server.storage.postgres import (
    CHANNEL,
    NOTIFY_SETTING,
    SCHEMA_VERSION,
    PostgresStore,
)
from bosbase_pubsub.server.storage.postgres_feed import PostgresFeed

from ...postgres import free_port
from .conftest import message


@pytest.fixture
async def stores(pg_database: str) -> AsyncIterator[list[PostgresStore]]:
    """Two nodes' stores on one database."""
    opened = [PostgresStore(pg_database), PostgresStore(pg_database)]
    for store in opened:
        await store.open()
    yield opened
    for store in opened:
        await store.close()


async def feed_of(
    store: PostgresStore, *, poll_interval: float = 0.2, skip_origin: str = "reader"
) -> PostgresFeed:
    """A feed for a node named ``skip_origin`` (whose own messages it leaves out)."""
    feed = PostgresFeed(store.connect, skip_origin=skip_origin, poll_interval=poll_interval)
    await feed.open()
    return feed


async def collect(feed: Feed, count: int, timeout: float = 10.0) -> list[Message]:
    """Read the feed until ``count`` messages came (more would be a failure: see callers)."""
    received: list[Message] = []

    async def read() -> None:
        while len(received) < count:
            received.extend(await feed.next_batch())

    await asyncio.wait_for(read(), timeout)
    return received


def ids(messages: Sequence[Message]) -> list[str]:
    return [m.id for m in messages]


async def test_nodes_starting_together_create_the_schema_once(pg_database: str) -> None:
    stores = [PostgresStore(pg_database) for _ in range(4)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        connection = await asyncpg.connect(pg_database)
        try:
            version = await connection.fetchval(
                "SELECT value FROM _params WHERE id = 'pubsub.schemaVersion'"
            )
        finally:
            await connection.close()
        assert version == str(SCHEMA_VERSION)
        # A node starting later finds the schema current and changes nothing.
        late = PostgresStore(pg_database)
        await late.open()
        await late.close()
    finally:
        for store in stores:
            await store.close()


async def test_a_cached_sequence_is_refused(pg_database: str) -> None:
    store = PostgresStore(pg_database)
    await store.open()
    await store.close()
    connection = await asyncpg.connect(pg_database)
    try:
        await connection.execute("ALTER TABLE _pubsub_messages ALTER seq SET CACHE 20")
    finally:
        await connection.close()
    with pytest.raises(StoreError, match="must have CACHE 1"):
        await PostgresStore(pg_database).open()


async def test_the_feed_starts_at_the_newest_and_returns_every_later_message_once_in_order(
    stores: list[PostgresStore],
) -> None:
    a, b = stores
    await a.append([message("before")])
    feed = await feed_of(a)
    try:
        batches = [[message(origin=node) for _ in range(n)] for node, n in [("a", 3), ("b", 1)] * 3]
        for batch in batches:
            await (a if batch[0].origin == "a" else b).append(batch)
        received = await collect(feed, 12)
        assert ids(received) == [m.id for batch in batches for m in batch]
        # Nothing more: no duplicates, and not the message stored before the feed opened.
        assert await feed.next_batch() == []
        # Every field comes back as stored, with its seq.
        assert received[0] == replace(batches[0][0], seq=received[0].seq)
        assert [m.seq for m in received] == sorted({m.seq for m in received})
    finally:
        await feed.close()


async def test_a_late_commit_is_never_skipped(
    pg_database: str, stores: list[PostgresStore]
) -> None:
    """The invariant: rows become visible in seq order, so ``seq > cursor`` skips nothing.

    Transaction X stores a row and stays open; node B stores another meanwhile.
    Without the append lock, B's row (a larger seq) would commit first, the feed
    would move past X's seq, and X's row would be lost when it committed.
    """
    _, b = stores
    feed = await feed_of(b, poll_interval=0.1)
    late, early = message(data=b'"late"', origin="x"), message(data=b'"early"', origin="b")
    x = await asyncpg.connect(pg_database)
    try:
        transaction = x.transaction()
        await transaction.start()
        await x.execute(
            "SELECT _pubsub_store_batch($1, $2, $3, false)",
            late.origin,
            f'[{{"i": "{late.id}", "t": "{late.topic}", "c": "{late.created}"}}]',
            f"[{late.data.decode()}]",
        )
        appending = asyncio.create_task(b.append([early]))
        assert await feed.next_batch() == []  # nothing is visible yet
        await asyncio.sleep(0.2)
        assert not appending.done(), "a second writer must wait for the first one's commit"
        await transaction.commit()
        await asyncio.wait_for(appending, 10)
        received = await collect(feed, 2)
        assert ids(received) == [late.id, early.id]
        assert await feed.next_batch() == []
    finally:
        await x.close()
        await feed.close()


async def test_the_feed_catches_up_after_its_connection_is_cut(
    pg_database: str, stores: list[PostgresStore]
) -> None:
    a, _ = stores
    feed = await feed_of(a)
    admin = await asyncpg.connect(pg_database)
    try:
        await a.append([message()])
        first = await collect(feed, 1)
        # Cut every connection of the nodes (as a network blip or a server restart would).
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        stored: list[Message] = []
        for n in range(10):
            batch = [message(data=str(n).encode())]
            for _ in range(50):  # the writer reconnects; an append may fail while it does
                try:
                    await a.append(batch)
                    break
                except StoreError:
                    await asyncio.sleep(0.05)
            stored.extend(batch)
        received: list[Message] = []
        failures = 0
        while len(received) < len(stored) and failures < 20:
            try:
                received.extend(await feed.next_batch())
            except StoreError:
                failures += 1
                await asyncio.sleep(0.05)
        assert ids(received) == ids(stored)
        assert first[0].id not in ids(received)
        assert await feed.next_batch() == []
    finally:
        await admin.close()
        await feed.close()


async def test_the_feed_returns_the_nodes_own_messages_as_markers(
    stores: list[PostgresStore],
) -> None:
    a, b = stores
    feed = await feed_of(a, skip_origin="a")
    try:
        own = await a.append([message(origin="a") for _ in range(3)])
        others = await b.append([message(origin="b")])
        own += await a.append([message(origin="a")])
        received = await collect(feed, 5)
        assert [m.seq for m in received] == sorted(m.seq for m in own + others)
        assert [m for m in received if m.origin != "a"] == others
        # Markers: the seq and origin of our own rows, nothing else.
        assert {(m.id, m.topic, m.data) for m in received if m.origin == "a"} == {("", "", b"")}
        await asyncio.sleep(0.3)
        assert await feed.next_batch() == []
        assert feed.position == own[-1].seq
    finally:
        await feed.close()


async def test_the_feed_reads_at_once_only_after_a_full_batch(
    pg_database: str, stores: list[PostgresStore]
) -> None:
    """A read that returned less than a full batch saw every row committed before it,
    and a row committed later notifies: the feed then waits for a notification (or its
    fallback poll) instead of reading again only to find nothing."""
    a, b = stores
    reads: list[str] = []

    async def connect() -> asyncpg.Connection:
        connection = await b.connect()
        connection.add_query_logger(lambda logged: reads.append(logged.query))
        return connection

    feed = PostgresFeed(connect, skip_origin="reader", batch=2, poll_interval=30.0)
    await feed.open()
    quiet = await asyncpg.connect(pg_database)  # stores rows without notifying
    await quiet.execute("SELECT set_config($1, 'off', false)", NOTIFY_SETTING)
    try:
        unannounced = [message(origin="x") for _ in range(3)]
        for m in unannounced:
            await quiet.execute(
                "SELECT _pubsub_store_batch($1, $2, $3, false)",
                m.origin,
                f'[{{"i": "{m.id}", "t": "{m.topic}", "c": "{m.created}"}}]',
                f"[{m.data.decode()}]",
            )
        reads.clear()
        assert ids(await asyncio.wait_for(feed.next_batch(), 5)) == ids(unannounced[:2])
        # That batch was full: the rest is read at once, unannounced as it is.
        assert ids(await asyncio.wait_for(feed.next_batch(), 5)) == ids(unannounced[2:])
        assert len(reads) == 2
        waiting = asyncio.create_task(feed.next_batch())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        assert len(reads) == 2, "read again without news"
        announced = await a.append([message(origin="a")])  # this store always notifies
        assert await asyncio.wait_for(waiting, 5) == announced
        assert len(reads) == 3
    finally:
        await quiet.close()
        await feed.close()


async def test_opening_a_store_stores_nothing_and_wakes_no_one(pg_database: str) -> None:
    """The append connection is warmed up by an empty append, without notifying."""
    spy = await Notifications.open(pg_database)
    store = PostgresStore(pg_database)
    try:
        await store.open()
        await asyncio.sleep(0.1)
        assert spy.heard == []
        assert (await store.positions()).newest == 0
        first = await store.append([message()])
        assert first[0].seq == 1
        await asyncio.sleep(0.1)
        assert spy.heard == ["node-a"]  # a store not following a feed always notifies
    finally:
        await store.close()
        await spy.connection.close()


class Notifications:
    """A bare LISTEN connection (not a node's feed): the payloads of the notifications it hears."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.heard: list[str] = []

    @classmethod
    async def open(cls, url: str) -> Notifications:
        spy = cls(await asyncpg.connect(url))
        await spy.connection.add_listener(CHANNEL, lambda *args: spy.heard.append(args[-1]))
        return spy

    async def after(self, append: Awaitable[object]) -> bool:
        """Whether ``append`` was notified (waits a moment for the notification)."""
        before = len(self.heard)
        await append
        await asyncio.sleep(0.1)
        return len(self.heard) > before


async def test_a_node_notifies_only_while_another_nodes_feed_listens(
    pg_database: str, stores: list[PostgresStore]
) -> None:
    a, b = stores
    spy = await Notifications.open(pg_database)
    feed_a = a.feed(skip_origin="node-a")
    await feed_a.open()
    stored: list[Message] = []

    async def append() -> None:
        stored.extend(await a.append([message(origin="node-a")]))

    feed_b: Feed | None = None
    try:
        assert await spy.after(append())  # not known yet: notified
        for _ in range(50):  # within a look or two (LISTENERS_CHECK_INTERVAL)
            if not await spy.after(append()):
                break
        else:
            raise AssertionError("a node alone went on notifying")
        # Another node's feed starts: it is told again within a look or two, and in
        # the meantime its fallback poll reads what went unannounced.
        feed_b = b.feed(skip_origin="node-b")
        await feed_b.open()
        unannounced = len(stored)
        for _ in range(50):
            if await spy.after(append()):
                break
        else:
            raise AssertionError("another node's feed was never notified")
        received = await collect(feed_b, len(stored) - unannounced)
        assert ids(received) == ids(stored[unannounced:])
    finally:
        if feed_b is not None:
            await feed_b.close()
        await feed_a.close()
        await spy.connection.close()


async def test_an_append_by_a_node_of_an_earlier_version_notifies(
    pg_database: str, stores: list[PostgresStore]
) -> None:
    """Such a node never sets the session setting: the function notifies as before."""
    spy = await Notifications.open(pg_database)
    connection = await asyncpg.connect(pg_database)
    try:
        rows = '[{"i": "x23456789012345", "t": "t", "b": null, "c": "2026-01-01 00:00:00.000Z"}]'
        call = connection.fetchrow(
            "SELECT * FROM _pubsub_store_batch($1, $2, $3, false)", "old-node", rows, "[1]"
        )
        assert await spy.after(call)
        assert spy.heard[-1] == "old-node"
    finally:
        await connection.close()
        await spy.connection.close()


async def test_payloads_come_back_byte_for_byte(stores: list[PostgresStore]) -> None:
    a, _ = stores
    feed = await feed_of(a)
    try:
        # The json type keeps the text: key order, duplicate keys and number spelling.
        texts = [
            b'{"b":1,"a":[1.0,1e2,-0.0],"b":2}',
            b'"\\u00e9\\u0000"',
            b'"caf\xc3\xa9 \\" \\\\ \\n"',
            b"null",
            b"true",
            b"[]",
            b"12345678901234567890",
        ]
        # Both ways a batch is stored: without keys, and with (one of them repeated).
        plain = [message(topic="plain", data=text) for text in texts]
        keyed = [
            message(topic="keyed", data=text, created_by="u", key=f"k{n}")
            for n, text in enumerate(texts)
        ]
        keyed.append(message(topic="keyed", data=b"0", created_by="u", key="k0"))
        await a.append(plain)
        stored = await a.append(keyed)
        assert [m.data for m in await collect(feed, 2 * len(texts))] == texts + texts
        for topic in ("plain", "keyed"):
            assert [m.data for m in await a.read_topic(topic, 0, 10**9, 100)] == texts
        assert stored[-1].id == keyed[0].id
        assert stored[-1].data == keyed[0].data
    finally:
        await feed.close()


async def test_exclusive_is_held_by_one_node_at_a_time(stores: list[PostgresStore]) -> None:
    a, b = stores
    async with a.exclusive("retention") as a_holds:
        assert a_holds
        async with b.exclusive("retention") as b_holds:
            assert not b_holds
        async with b.exclusive("something else") as b_holds_other:
            assert b_holds_other
    async with b.exclusive("retention") as b_holds:
        assert b_holds


async def test_accounts_and_secrets_are_shared_by_the_nodes(stores: list[PostgresStore]) -> None:
    a, b = stores
    assert await a.accounts.secret("s", "from-a") == "from-a"
    assert await b.accounts.secret("s", "from-b") == "from-a"


async def test_an_unreachable_server_is_a_store_error() -> None:
    store = PostgresStore(f"postgres://root@127.0.0.1:{free_port()}/nothing")
    with pytest.raises(StoreError):
        await store.open()
    with pytest.raises(StoreError):
        await store.append([message()])
