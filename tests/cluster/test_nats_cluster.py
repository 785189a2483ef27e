"""Several nodes on one NATS JetStream stream: every message reaches every node, once, in order.

The same checks as on PostgreSQL (``test_cluster``), with the stream as the
source of truth: three nodes publishing at once, a node killed with SIGKILL
and restarted, NATS itself restarted mid-stream (a server of the test's own:
the shared one is never touched, and its folder, streams included, goes
with it), and resuming on another node. Skipped,
saying why, when no NATS server with JetStream answers (see ``tests/nats.py``).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bosbase_pubsub.server.storage import Message
from bosbase_pubsub.server.storage.jetstream import JetStreamStore
from bosbase_pubsub.server.workers import default_workers

from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer, make_superuser
from ..nats import NatsProcess, find_nats_server, stream_url
from ..servers import ServerProcess, WsClient, cli, sign_in
from .test_cluster import (
    TOPIC,
    Subscriber,
    assert_in_publisher_order,
    kill_a_node_mid_stream_and_restart_it,
    publish_numbered,
    restart_the_store_mid_stream,
)


async def stored(url: str, topic: str = TOPIC) -> list[Message]:
    """The messages of ``topic`` in the stream, by sequence."""
    store = JetStreamStore(url)
    await store.open()
    try:
        found: list[Message] = []
        while True:
            after = found[-1].seq if found else 0
            page = await store.read_topic(topic, after, 10**12, 1000)
            if not page:
                return found
            found.extend(page)
    finally:
        await store.close()


@pytest.fixture
def cluster_stream(nats_stream: str, tmp_path: Path) -> str:
    """A fresh stream with the superuser every node's clients sign in as."""
    make_superuser(tmp_path / "accounts", nats_stream)
    return nats_stream


async def superuser_token(node: ServerProcess) -> str:
    token: str = (await sign_in(node.url, "_superusers", SUPERUSER_EMAIL, SUPERUSER_PASSWORD))[
        "token"
    ]
    return token


async def test_three_nodes_publishing_at_once_deliver_everything_once_in_order(
    start_server: StartServer, cluster_stream: str
) -> None:
    nodes = [start_server(db_url=cluster_stream) for _ in range(3)]
    token = await superuser_token(nodes[0])  # valid on every node: one secret, in KV
    subscribers = [await Subscriber.on(node) for node in nodes for _ in range(2)]
    publishers = [
        await WsClient.connect(node.ws_url, token=token) for node in nodes for _ in range(2)
    ]
    per_publisher = 100
    try:
        acked = await asyncio.gather(
            *(
                publish_numbered(client, f"p{i}", per_publisher)
                for i, client in enumerate(publishers)
            )
        )
        total = per_publisher * len(publishers)
        for subscriber in subscribers:
            await subscriber.wait_for(total)
        await asyncio.sleep(0.3)  # time for a duplicate to show up, if any would
        rows = await stored(cluster_stream)
        assert len(rows) == total
        expected = {row.id for row in rows}
        assert expected == {message_id for ids in acked for message_id in ids}
        for subscriber in subscribers:
            subscriber.drain()
            assert len(subscriber.received) == total, "a duplicate was delivered"
            # Every node delivers in stream order, whichever node stored what.
            assert subscriber.ids() == [row.id for row in rows]
            seqs = [int(m["position"].rsplit(":", 1)[1]) for m in subscriber.received]
            assert seqs == [row.seq for row in rows]
            assert_in_publisher_order(subscriber.received)
            for i, ids in enumerate(acked):
                mine = [m["id"] for m in subscriber.received if m["data"]["p"] == f"p{i}"]
                assert mine == ids
    finally:
        for client in [*publishers, *(s.client for s in subscribers)]:
            await client.close()


async def test_a_node_killed_mid_stream_and_restarted(
    start_server: StartServer, cluster_stream: str
) -> None:
    async def stored_ids(url: str) -> list[str]:
        return [message.id for message in await stored(url)]

    await kill_a_node_mid_stream_and_restart_it(
        start_server, cluster_stream, stored_ids, exact_order=True
    )


@pytest.fixture
def own_nats() -> Iterator[NatsProcess]:
    """A NATS server of this test's own, which it may stop and start (by its PID)."""
    binary = find_nats_server()
    if binary is None:
        pytest.skip("nats-server is not installed")
    server = NatsProcess(binary).start()
    try:
        yield server
    finally:
        server.destroy()


async def test_nats_restarting_mid_stream(
    start_server: StartServer, own_nats: NatsProcess, tmp_path: Path
) -> None:
    url = stream_url(own_nats.url)
    make_superuser(tmp_path / "accounts", url)

    async def stored_ids_and_origins(url: str) -> list[tuple[str, str]]:
        return [(message.id, message.origin) for message in await stored(url)]

    await restart_the_store_mid_stream(
        start_server,
        url,
        stored_ids_and_origins,
        # A clean restart (SIGTERM): what NATS acked is on its disk.
        stop_store=lambda: own_nats.stop(signal.SIGTERM),
        start_store=own_nats.start,
        down_within=15,
        up_within=30,
    )


async def test_a_client_resumes_on_another_node_from_a_position_of_the_first(
    start_server: StartServer, cluster_stream: str
) -> None:
    a, b = start_server(db_url=cluster_stream), start_server(db_url=cluster_stream)
    publisher = await WsClient.connect(a.ws_url, token=await superuser_token(a))
    on_a = await Subscriber.on(a)
    try:
        seen = await publish_numbered(publisher, "p", 20)
        await on_a.wait_for(20)
        last = on_a.received[-1]["position"]
        await on_a.client.close()
        missed = await publish_numbered(publisher, "p", 30)
        racing = asyncio.create_task(publish_numbered(publisher, "p", 50))
        on_b = Subscriber(b, await WsClient.connect(b.ws_url))
        ack = await on_b.client.request("subscribe", topic=TOPIC, since=last)
        assert ack["replay"] == "complete"
        assert ack["position"] == last
        later = await racing
        await on_b.wait_for(80)
        await asyncio.sleep(0.3)
        on_b.drain()
        assert on_b.ids() == missed + later
        assert seen[-1] not in on_b.ids()
        await on_b.client.close()
    finally:
        await publisher.close()


def test_a_malformed_url_exits_2_and_an_unreachable_server_exits_1(tmp_path: Path) -> None:
    malformed = cli("serve", "--dir", str(tmp_path), "--store", "nats://h?stream=a.b")
    assert malformed.returncode == 2
    assert "--db: invalid nats URL" in malformed.stderr
    assert "stream 'a.b'" in malformed.stderr
    from ..postgres import free_port

    unreachable = cli("serve", "--dir", str(tmp_path), "--db", f"nats://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1
    assert "error: cannot start: jetstream: cannot connect to nats://127.0.0.1" in (
        unreachable.stderr
    )
    assert "Traceback" not in unreachable.stderr


def test_workers_auto_means_one_per_cpu_on_nats() -> None:
    import os

    assert default_workers("nats://127.0.0.1:4222") == max(1, os.cpu_count() or 1)
    assert default_workers(None) == 1
