"""The ``Store`` interface, the same tests on each backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from bosbase_pubsub.server.storage import AuthRecord, Message, Store, StoreError, open_store

from .conftest import message

FAR_FUTURE = "9999-12-31 23:59:59.999Z"


async def count(store: Store) -> int:
    """How many messages are stored (by pruning them all: the interface has no reader)."""
    return await store.prune(FAR_FUTURE, 1_000_000)


async def test_append_then_prune_in_bounded_batches(store: Store) -> None:
    old = [message(created=f"2000-01-01 00:00:0{n}.000Z") for n in range(5)]
    recent = [message(), message()]
    await store.append(old)
    await store.append(recent)
    cutoff = "2001-01-01 00:00:00.000Z"
    assert [await store.prune(cutoff, 2) for _ in range(4)] == [2, 2, 1, 0]
    assert await count(store) == 2


async def test_a_batch_is_stored_whole_or_not_at_all(store: Store) -> None:
    await store.append([message()])
    broken = Message("x" * 15, None, b"2", "2000-01-01 00:00:00.000Z", "node-a", None)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await store.append([message(), broken])
    # The store still works, and the refused batch left nothing behind.
    await store.append([message()])
    assert await count(store) == 2


async def test_ping_answers_and_a_closed_store_raises_store_error(store: Store) -> None:
    await store.ping()
    await store.close()
    with pytest.raises(StoreError):
        await store.append([message()])
    with pytest.raises(StoreError):
        await store.ping()


async def test_exclusive_lets_this_node_in_when_nobody_else_holds_it(store: Store) -> None:
    async with store.exclusive("retention") as ours:
        assert ours
    async with store.exclusive("retention") as ours:
        assert ours


async def test_feed_exists_only_where_nodes_share_the_store(store: Store, store_url: str) -> None:
    feed = store.feed(skip_origin="this-node")
    if store_url.startswith("sqlite"):
        assert feed is None
    else:
        assert feed is not None
        await feed.close()


def test_the_backend_is_chosen_by_url_scheme(tmp_path: Path) -> None:
    assert type(open_store(None, tmp_path)).__name__ == "SqliteStore"
    assert type(open_store(f"sqlite:///{tmp_path}/x.db", tmp_path)).__name__ == "SqliteStore"
    for url in ("postgres://u@h:5432/d", "postgresql://u@h/d"):
        assert type(open_store(url, tmp_path)).__name__ == "PostgresStore"
    for url in ("nats://127.0.0.1:4222", "nats://u:p@h?stream=s&max_age=1h"):
        assert type(open_store(url, tmp_path)).__name__ == "JetStreamStore"
    with pytest.raises(ValueError, match="unsupported database URL scheme 'mysql'"):
        open_store("mysql://u@h/d", tmp_path)


async def test_append_returns_consecutive_seqs_and_read_topic_pages_by_seq(store: Store) -> None:
    first = await store.append([message("a"), message("b"), message("a")])
    second = await store.append([message("a")])
    seqs = [m.seq for m in first + second]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert [m.id for m in await store.read_topic("a", 0, 10**9, 10)] == [
        first[0].id,
        first[2].id,
        second[0].id,
    ]
    assert [m.seq for m in await store.read_topic("a", seqs[0], seqs[3], 1)] == [seqs[2]]
    assert await store.read_topic("a", seqs[3], 10**9, 10) == []
    positions = await store.positions()
    assert (positions.newest, positions.pruned_through) == (seqs[3], 0)


async def test_read_prefix_walks_seq_over_the_topics_with_that_prefix(store: Store) -> None:
    topics = ["chat/a", "chat", "chatter", "chat/b/c", "other/chat/x", "chat/%", "chat/a"]
    stored = await store.append([message(topic) for topic in topics])
    seqs = [m.seq for m in stored]
    found = await store.read_prefix("chat/", 0, 10**9, 10)
    assert [m.topic for m in found] == ["chat/a", "chat/b/c", "chat/%", "chat/a"]
    assert [m.id for m in found] == [stored[i].id for i in (0, 3, 5, 6)]
    # Bounded by after, through and limit, by seq; "%" and "_" are literal (no LIKE).
    assert [m.seq for m in await store.read_prefix("chat/", seqs[0], seqs[5], 10)] == [
        seqs[3],
        seqs[5],
    ]
    assert [m.seq for m in await store.read_prefix("chat/", 0, 10**9, 2)] == [seqs[0], seqs[3]]
    assert [m.topic for m in await store.read_prefix("chat/_", 0, 10**9, 10)] == []
    assert len(await store.read_prefix("", 0, 10**9, 100)) == len(topics)


async def test_pruning_raises_pruned_through(store: Store) -> None:
    old = await store.append([message(created="2000-01-01 00:00:00.000Z") for _ in range(3)])
    recent = await store.append([message()])
    assert await store.prune("2001-01-01 00:00:00.000Z", 100) == 3
    positions = await store.positions()
    assert positions.pruned_through == old[-1].seq
    assert positions.newest == recent[0].seq
    await store.prune(FAR_FUTURE, 100)
    assert (await store.positions()).newest == recent[0].seq  # still known


async def test_pruning_deletes_a_prefix_of_the_stream(store: Store) -> None:
    """In seq order, up to the first message that is not old enough (clocks may differ)."""
    cutoff = "2001-01-01 00:00:00.000Z"
    first = await store.append([message(created="2000-01-01 00:00:00.000Z")])
    await store.append([message()])  # recent, from a node whose clock is ahead
    behind = await store.append([message(created="2000-01-01 00:00:01.000Z")])
    assert await store.prune(cutoff, 100) == 1
    assert (await store.positions()).pruned_through == first[0].seq
    # What is left is everything after the pruned position, the old message included.
    assert await count(store) == 2
    assert (await store.positions()).pruned_through == behind[0].seq


async def test_a_key_is_stored_once_per_publisher(store: Store) -> None:
    first = await store.append([message(created_by="u1", key="k")])
    batch = [
        message(created_by="u1", key="k"),  # stored before
        message(created_by="u2", key="k"),  # another publisher's key
        message(created_by="u1", key="j"),
        message(created_by="u1", key="j"),  # twice in one batch
        message(created_by="u1"),
    ]
    stored = await store.append(batch)
    assert stored[0].id == first[0].id
    assert stored[0].seq == first[0].seq
    assert stored[0].created == first[0].created
    assert [s.id == b.id for s, b in zip(stored, batch, strict=True)] == [
        False,
        True,
        True,
        False,
        True,
    ]
    assert stored[3].id == stored[2].id
    assert stored[3].seq == stored[2].seq
    fresh = [s.seq for s, b in zip(stored, batch, strict=True) if s.id == b.id]
    assert fresh == list(range(fresh[0], fresh[0] + 3))
    # Retried later, the whole batch is not stored again (its keyed ones).
    again = await store.append(
        [message(created_by="u2", key="k"), message(created_by="u1", key="j")]
    )
    assert [m.id for m in again] == [stored[1].id, stored[2].id]
    assert [m.seq for m in again] == [stored[1].seq, stored[2].seq]
    assert await count(store) == 4


async def test_browse_pages_newest_first_by_topic_and_finds_a_time(store: Store) -> None:
    times = [f"2030-01-01 00:00:{n:02d}.000Z" for n in range(7)]
    stored = await store.append(
        [message("a" if n % 2 == 0 else "b", created=times[n]) for n in range(7)]
    )
    seqs = [m.seq for m in stored]
    everything = await store.browse(None, None, 100)
    assert [m.seq for m in everything] == seqs[::-1]
    # Topic "a" holds the even ones: paging by the last seq seen, newest first.
    first = await store.browse("a", None, 2)
    assert [m.seq for m in first] == [seqs[6], seqs[4]]
    second = await store.browse("a", first[-1].seq, 2)
    assert [m.seq for m in second] == [seqs[2], seqs[0]]
    assert await store.browse("a", second[-1].seq, 2) == []
    assert second[0].data == stored[2].data
    assert second[0].created == times[2]
    # A time becomes a position to page from (the newest created at or before it).
    assert await store.position_at(times[3]) == seqs[3]
    assert await store.position_at("2030-01-01 00:00:03.500Z") == seqs[3]
    assert await store.position_at("2029-12-31 00:00:00.000Z") == 0
    assert await store.position_at("2031-01-01 00:00:00.000Z") == seqs[6]


async def test_accounts_are_listed_newest_first_counted_and_deleted(store: Store) -> None:
    accounts = store.accounts
    for n in range(3):
        await accounts.insert(
            AuthRecord(
                id=f"user{n:011d}",
                collection="users",
                email=f"u{n}@example.com",
                password_hash="x",
                token_key="k",
                verified=False,
                email_visibility=False,
                name="",
                created=f"2030-01-01 00:00:0{n}.000Z",
                updated=f"2030-01-01 00:00:0{n}.000Z",
            )
        )
    assert await accounts.count("users") == 3
    page = await accounts.list_records("users", offset=1, limit=5)
    assert [record.email for record in page] == ["u1@example.com", "u0@example.com"]
    assert await accounts.delete("users", "user00000000001")
    assert not await accounts.delete("users", "user00000000001")
    assert await accounts.find_by_id("users", "user00000000001") is None
    assert await accounts.count("users") == 2


async def test_token_keys_follow_password_changes_and_deletions(store: Store) -> None:
    accounts = store.accounts
    ids = [f"user{n:011d}" for n in range(3)]
    for n, record_id in enumerate(ids):
        await accounts.insert(
            AuthRecord(
                id=record_id,
                collection="users",
                email=f"k{n}@example.com",
                password_hash="x",
                token_key=f"key{n}",
                verified=False,
                email_visibility=False,
                name="",
                created="2030-01-01 00:00:00.000Z",
                updated="2030-01-01 00:00:00.000Z",
            )
        )
    asked = [*ids, "nobody000000000", "nul\x00id"]
    assert await accounts.token_keys("users", asked) == {
        ids[0]: "key0",
        ids[1]: "key1",
        ids[2]: "key2",
    }
    await accounts.update_password("users", ids[0], "y", "changed", "2030-01-02 00:00:00.000Z")
    assert await accounts.delete("users", ids[1])
    assert await accounts.token_keys("users", ids) == {ids[0]: "changed", ids[2]: "key2"}
    assert await accounts.token_keys("_superusers", ids) == {}
    assert await accounts.token_keys("users", []) == {}


async def test_node_reports_are_seen_until_forgotten(store: Store) -> None:
    await store.report_node("node-a", b'{"connections":3}')
    assert await store.node_reports(60) == {"node-a": b'{"connections":3}'}
    await store.report_node("node-a", b'{"connections":4}')
    assert await store.node_reports(60) == {"node-a": b'{"connections":4}'}
    await store.forget_node("node-a")
    assert await store.node_reports(60) == {}
