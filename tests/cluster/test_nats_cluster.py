"""Several nodes on one NATS JetStream stream: every message reaches every node, once, in order.

The same checks as on PostgreSQL (``test_cluster``), with the stream as the
source of truth: three nodes publishing at once, a node killed with SIGKILL
and restarted, NATS itself restarted mid-stream (a server of the test's own:
the shared one is never touched, and its folder, streams included, goes
with it), and resuming on another node. Skipped,
saying why, when no NATS server with JetStream answers (see ``tests/nats.py``).
"""

from __future__ import annotations

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
    kill_a_node_mid_stream_and_restart_it,
    publish_on_every_node_at_once,
    restart_the_store_mid_stream,
    resume_on_the_second_node,
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
    nodes = [start_server(db_url=cluster_stream) for _ in range(3)]  # one secret, in KV

    async def stored_ids(url: str) -> list[str]:
        return [message.id for message in await stored(url)]

    received_by_each = await publish_on_every_node_at_once(nodes, cluster_stream, stored_ids)
    stream_seqs = [message.seq for message in await stored(cluster_stream)]
    for received in received_by_each:
        assert [int(m["position"].rsplit(":", 1)[1]) for m in received] == stream_seqs


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
    await resume_on_the_second_node(a, b, publisher)


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
