"""What only the JetStream store does: its URL, subjects, keys, two nodes on a stream, the feed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from bosbase_pubsub.server.storage import Message, StoreError, open_store
from bosbase_pubsub.server.storage.jetstream import JetStreamStore
from bosbase_pubsub.server.storage.jetstream_common import (
    DEFAULT_MAX_AGE,
    delivery_sequences,
    encode_token,
    parse_url,
    prefix_filter,
)

from ...postgres import free_port
from .conftest import message


@pytest.fixture
async def node_a(nats_stream: str) -> AsyncIterator[JetStreamStore]:
    store = JetStreamStore(nats_stream)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def node_b(nats_stream: str) -> AsyncIterator[JetStreamStore]:
    store = JetStreamStore(nats_stream)
    await store.open()
    yield store
    await store.close()


def test_the_url_names_the_server_the_stream_and_its_limits() -> None:
    default = parse_url("nats://127.0.0.1")
    assert (default.server, default.stream, default.subjects) == (
        "nats://127.0.0.1:4222",
        "_pubsub_messages",
        "_pubsub_messages",
    )
    assert default.max_age == default.duplicate_window == DEFAULT_MAX_AGE
    assert default.buckets == (
        "_pubsub_messages_accounts",
        "_pubsub_messages_nodes",
        "_pubsub_messages_locks",
    )
    custom = parse_url("nats://me:secret@nats.internal:4333?stream=chat&subjects=a.b&max_age=1h")
    assert custom.server == "nats://me:secret@nats.internal:4333"
    assert (custom.stream, custom.subjects, custom.max_age) == ("chat", "a.b", 3600.0)
    assert custom.duplicate_window == 3600.0  # never longer than messages are kept


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("nats://h:99999", "bad port"),
        ("nats://h:port", "bad port"),
        ("nats://", "no host"),
        ("nats://h/db", "no path"),
        ("nats://h?streams=x", "unknown option 'streams'"),
        ("nats://h?stream=a.b", "stream 'a.b'"),
        ("nats://h?subjects=a.*", "subjects 'a.*'"),
        ("nats://h?max_age=soon", "max_age: invalid duration"),
        ("nats://h?max_age=1h&duplicate_window=2h", "duplicate_window exceeds max_age"),
        ("nats://h?replicas=0", "replicas"),
    ],
)
def test_a_malformed_url_is_refused_saying_why(url: str, complaint: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=complaint):
        open_store(url, tmp_path)


def test_topics_become_subject_tokens_one_to_one() -> None:
    segments = ["chat", "", "a.b", "*", ">", "a b", "%", "%25", "é", "x~y"]
    tokens = [encode_token(segment) for segment in segments]
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert token
        assert not any(c in token for c in ". *>\t")
    assert prefix_filter("p", "chat/") == ("p.chat.>", True)
    assert prefix_filter("p", "") == ("p.>", True)
    assert prefix_filter("p", "chat/ro") == ("p.chat.>", False)


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.stream.consumer.1.4242.17.1733620000000000000.3",
        "$JS.ACK._.ACCHASH.stream.consumer.1.4242.17.1733620000000000000.3",
        "$JS.ACK.hub.ACCHASH.stream.consumer.2.4242.17.1733620000000000000.0.rnd",
    ],
)
def test_delivery_sequences_read_what_nats_py_reads(reply: str) -> None:
    metadata = Msg.Metadata._from_reply(reply)
    assert delivery_sequences(reply) == (metadata.sequence.stream, metadata.sequence.consumer)
    assert delivery_sequences(reply) == (4242, 17)


@pytest.mark.parametrize(
    "reply",
    ["", None, "_INBOX.abc", "$JS.ACK.too.short", "$JS.NAK.s.c.1.2.3.4.5", "$JS.ACK.s.c.1.x.3.4.5"],
)
def test_anything_else_is_not_a_delivery(reply: str | None) -> None:
    assert delivery_sequences(reply) is None


async def test_any_topic_reads_back_exactly_its_own_messages(node_a: JetStreamStore) -> None:
    topics = ["a.b", "a/b", "a", "a/", "a//b", "*", ">", "a b", "100%", "é/ü", "a/b/c"]
    stored = await node_a.append([message(topic) for topic in topics])
    for topic, one in zip(topics, stored, strict=True):
        assert [m.id for m in await node_a.read_topic(topic, 0, 10**9, 10)] == [one.id]
    under_a = await node_a.read_prefix("a/", 0, 10**9, 100)
    assert [m.topic for m in under_a] == ["a/b", "a/", "a//b", "a/b/c"]


async def test_any_key_is_a_valid_message_id_and_holds_across_nodes(
    node_a: JetStreamStore, node_b: JetStreamStore
) -> None:
    keys = ["k", "with space", "new\nline", "üñí", "a.b*>", "x" * 300]
    first = await node_a.append([message(created_by="u1", key=key) for key in keys])
    again = await node_b.append([message(created_by="u1", key=key) for key in keys])
    assert [m.id for m in again] == [m.id for m in first]
    assert [m.seq for m in again] == [m.seq for m in first]
    assert [m.created for m in again] == [m.created for m in first]
    assert (await node_b.positions()).newest == first[-1].seq


async def test_two_nodes_appending_at_once_interleave_and_lose_nothing(
    node_a: JetStreamStore, node_b: JetStreamStore
) -> None:
    feed = node_a.feed(skip_origin="node-a")
    await feed.open()
    try:

        async def write(store: JetStreamStore, origin: str) -> list[list[Message]]:
            return [
                await store.append([message(origin=origin) for _ in range(20)]) for _ in range(10)
            ]

        batches_a, batches_b = await asyncio.gather(
            write(node_a, "node-a"), write(node_b, "node-b")
        )
        seqs: list[int] = []
        for batch in [*batches_a, *batches_b]:
            batch_seqs = [m.seq for m in batch]
            assert batch_seqs == sorted(batch_seqs)  # ascending, gaps allowed
            seqs.extend(batch_seqs)
        assert sorted(seqs) == list(range(1, 401))

        # The feed of node a: b's messages in full, a's own as markers, each once, in order.
        read: list[Message] = []
        deadline = time.monotonic() + 20
        while len(read) < 400 and time.monotonic() < deadline:
            read.extend(await feed.next_batch())
        assert [m.seq for m in read] == list(range(1, 401))
        b_ids = {m.seq: m.id for batch in batches_b for m in batch}
        for m in read:
            if m.origin == "node-b":
                assert m.id == b_ids[m.seq]
            else:
                assert (m.origin, m.id, m.data) == ("node-a", "", b"")
        assert feed.position == 400
    finally:
        await feed.close()


async def test_the_feed_gets_over_a_lost_consumer_without_gap_or_repeat(
    node_a: JetStreamStore, node_b: JetStreamStore
) -> None:
    feed = node_a.feed(skip_origin="node-a")
    await feed.open()
    try:
        first = await node_b.append([message(origin="node-b") for _ in range(3)])
        assert [m.id for m in await feed.next_batch()] == [m.id for m in first]
        # The server drops the feed's consumer (as a restart of NATS would).
        for name in await node_a.manager().consumers_info(node_a.settings.stream):
            await node_a.manager().delete_consumer(node_a.settings.stream, name.name)
        meanwhile = await node_b.append([message(origin="node-b") for _ in range(5)])
        read: list[Message] = []
        failures = 0
        deadline = time.monotonic() + 20
        while len(read) < 5 and time.monotonic() < deadline:
            try:
                read.extend(await feed.next_batch())
            except StoreError:
                failures += 1
        assert [m.id for m in read] == [m.id for m in meanwhile]
        assert failures <= 1
    finally:
        await feed.close()


async def test_jetstream_drops_messages_older_than_max_age(nats_stream: str) -> None:
    store = JetStreamStore(nats_stream + "&max_age=1s")
    await store.open()
    try:
        stored = await store.append([message(), message()])
        for _ in range(50):  # JetStream expires messages about once a second
            if not (await store.stream_state()).messages:
                break
            await asyncio.sleep(0.2)
        positions = await store.positions()
        assert (positions.newest, positions.pruned_through) == (stored[-1].seq, stored[-1].seq)
        assert await store.read_topic("t", 0, 10**9, 10) == []
    finally:
        await store.close()


async def test_an_unreachable_server_fails_to_open_with_store_error() -> None:
    store = JetStreamStore(f"nats://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"cannot connect to nats://127\.0\.0\.1"):
        await store.open()
    assert time.monotonic() - started < 10
