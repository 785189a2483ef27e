"""Several nodes on one PostgreSQL database: every message reaches every node, once, in order.

Each test runs real node processes on loopback against a fresh database. The
checks are exact: every subscriber ends with exactly the messages stored on
its topic (the table is the source of truth), each once, and one publisher's
messages in the order they were acknowledged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer, make_superuser
from ..postgres import PgServer, ThrowawayCluster, find_bin_dir
from ..servers import ServerProcess, WsClient, scrape_metrics, sign_in

TOPIC = "cluster"


async def delay_commits(db_url: str, max_seconds: float) -> None:
    """Make every insert transaction wait a random time before its commit.

    The trigger runs after the rows got their ``seq`` and before the commit,
    so transactions that started together commit in a random order, unlike
    the order in which their ids and timestamps were made.
    """
    connection = await asyncpg.connect(db_url)
    try:
        await connection.execute(
            "CREATE FUNCTION _test_delay() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN PERFORM pg_sleep(random() * {max_seconds}); RETURN NULL; END $$;"
            " CREATE TRIGGER _test_delay AFTER INSERT ON _pubsub_messages"
            " FOR EACH STATEMENT EXECUTE FUNCTION _test_delay();"
        )
    finally:
        await connection.close()


async def stored(db_url: str, topic: str = TOPIC) -> list[dict[str, Any]]:
    """The rows of ``topic``, in ``seq`` order, as ``{id, origin, data}``."""
    connection = await asyncpg.connect(db_url)
    try:
        rows = await connection.fetch(
            "SELECT id, origin, payload FROM _pubsub_messages WHERE topic = $1 ORDER BY seq", topic
        )
    finally:
        await connection.close()
    return [{"id": r["id"], "origin": r["origin"], "data": r["payload"]} for r in rows]


def node_id(server: ServerProcess) -> str:
    line = server.wait_for_log(r"node \w+ ready")
    match = re.search(r"node (\w+) ready", line)
    assert match is not None
    return match.group(1)


async def health(server: ServerProcess) -> int:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(server.url + "/api/health") as response,
        ):
            return response.status
    except aiohttp.ClientError:
        return 0


async def wait_for_health(servers: Sequence[ServerProcess], status: int, timeout: float) -> None:
    async def check() -> None:
        while True:
            if all(s == status for s in await asyncio.gather(*(health(x) for x in servers))):
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(check(), timeout)


class Subscriber:
    """A WebSocket subscriber on one node that records every ``message`` frame."""

    def __init__(self, server: ServerProcess, client: WsClient) -> None:
        self.server = server
        self.client = client
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def on(cls, server: ServerProcess, topic: str = TOPIC) -> Subscriber:
        subscriber = cls(server, await WsClient.connect(server.ws_url))
        assert (await subscriber.client.subscribe(topic))["type"] == "subscribed"
        return subscriber

    def drain(self) -> None:
        while not self.client.messages.empty():
            self.received.append(self.client.messages.get_nowait())

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        async def read() -> None:
            while len(self.received) < count:
                self.received.append(await self.client.messages.get())

        self.drain()
        try:
            await asyncio.wait_for(read(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"a subscriber on {self.server.url} got {len(self.received)} of {count}"
                f" messages within {timeout} s"
            ) from None

    def ids(self) -> list[str]:
        return [m["id"] for m in self.received]


def assert_in_publisher_order(received: list[dict[str, Any]]) -> None:
    """Each publisher's messages (data ``{"p": publisher, "n": sequence}``) in ascending order."""
    last: dict[str, int] = {}
    for message in received:
        publisher, n = message["data"]["p"], message["data"]["n"]
        assert n > last.get(publisher, -1), f"publisher {publisher}: {n} after {last[publisher]}"
        last[publisher] = n


async def publish_numbered(
    client: WsClient, publisher: str, count: int, *, window: int = 10
) -> list[str]:
    """Publish ``count`` messages, ``window`` in flight at a time; return the acked ids in order."""
    acked: list[str] = []
    for start in range(0, count, window):
        replies = await asyncio.gather(
            *(
                client.publish(TOPIC, {"p": publisher, "n": n})
                for n in range(start, min(start + window, count))
            )
        )
        for reply in replies:
            assert reply["type"] == "published", reply
            acked.append(reply["id"])
    return acked


@pytest.fixture
def cluster_db(pg_database: str, tmp_path: Path) -> str:
    """A fresh database with the superuser every node's clients sign in as."""
    make_superuser(tmp_path / "accounts", pg_database)
    return pg_database


async def test_every_node_delivers_every_message_once_in_publisher_order(
    start_server: StartServer, cluster_db: str
) -> None:
    nodes = [start_server(db_url=cluster_db) for _ in range(3)]
    await delay_commits(cluster_db, 0.01)

    async def stored_ids(url: str) -> list[str]:
        return [row["id"] for row in await stored(url)]

    for received in await publish_on_every_node_at_once(nodes, cluster_db, stored_ids):
        seqs = [int(m["position"].rsplit(":", 1)[1]) for m in received]
        assert seqs == sorted(set(seqs))


async def publish_on_every_node_at_once(
    nodes: Sequence[ServerProcess],
    store_url: str,
    stored_ids_of: Callable[[str], Awaitable[list[str]]],
) -> list[list[dict[str, Any]]]:
    """Two publishers and two subscribers on each node, every publisher at once: every
    subscriber gets every acked message once, in the store's order (``stored_ids_of``),
    each publisher's in the order of its acks. Returns what each subscriber received,
    for the store's own checks of the positions."""
    # A token from one node is valid on every node.
    token = (await sign_in(nodes[0].url, "_superusers", SUPERUSER_EMAIL, SUPERUSER_PASSWORD))[
        "token"
    ]
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
        ids_in_store_order = await stored_ids_of(store_url)
        assert len(ids_in_store_order) == total
        assert set(ids_in_store_order) == {message_id for ids in acked for message_id in ids}
        for subscriber in subscribers:
            subscriber.drain()
            assert len(subscriber.received) == total, "a duplicate was delivered"
            # Every node delivers in the store's order, whichever node stored what.
            assert subscriber.ids() == ids_in_store_order
            assert_in_publisher_order(subscriber.received)
            # Same order as the acks, per publisher.
            for i, ids in enumerate(acked):
                mine = [m["id"] for m in subscriber.received if m["data"]["p"] == f"p{i}"]
                assert mine == ids
        return [subscriber.received for subscriber in subscribers]
    finally:
        for client in [*publishers, *(s.client for s in subscribers)]:
            await client.close()


async def test_a_node_killed_mid_stream_and_restarted(
    start_server: StartServer, cluster_db: str
) -> None:
    async def stored_ids(url: str) -> list[str]:
        return [row["id"] for row in await stored(url)]

    await kill_a_node_mid_stream_and_restart_it(
        start_server, cluster_db, stored_ids, exact_order=False
    )


async def kill_a_node_mid_stream_and_restart_it(
    start_server: StartServer,
    store_url: str,
    stored_ids_of: Callable[[str], Awaitable[list[str]]],
    *,
    exact_order: bool,
) -> None:
    """Three nodes on ``store_url``; node 0 is killed (SIGKILL) while two publishers
    publish, then restarted: it resumes from the newest message, and the watchers on
    nodes 1 and 2 get exactly what ``stored_ids_of`` says the store holds, once, each
    publisher in order (``exact_order``: also in the store's order)."""
    nodes = [start_server(db_url=store_url) for _ in range(3)]
    token = (await sign_in(nodes[1].url, "_superusers", SUPERUSER_EMAIL, SUPERUSER_PASSWORD))[
        "token"
    ]
    watchers = [await Subscriber.on(nodes[1]), await Subscriber.on(nodes[2])]
    doomed = await WsClient.connect(nodes[0].ws_url, token=token)
    survivor = await WsClient.connect(nodes[1].ws_url, token=token)
    acked: list[str] = []
    enough = asyncio.Event()

    async def publish(client: WsClient, publisher: str, count: int) -> None:
        for n in range(count):
            try:
                reply = await client.publish(TOPIC, {"p": publisher, "n": n})
            except ConnectionError:
                return  # its node was killed
            assert reply["type"] == "published", reply
            acked.append(reply["id"])
            if len(acked) >= 100:
                enough.set()
            await asyncio.sleep(0.002)

    try:
        doomed_task = asyncio.create_task(publish(doomed, "killed", 10_000))
        survivor_task = asyncio.create_task(publish(survivor, "survivor", 300))
        await asyncio.wait_for(enough.wait(), 30)
        nodes[0].kill()  # SIGKILL mid-stream
        await asyncio.wait_for(doomed_task, 15)
        await asyncio.wait_for(survivor_task, 60)

        # The restarted node resumes from the newest message: no history replayed.
        restarted = start_server(data_dir=nodes[0].data_dir, db_url=store_url)
        late = await Subscriber.on(restarted)
        again = await WsClient.connect(restarted.ws_url, token=token)
        after = await publish_numbered(survivor, "after", 20, window=5)
        after += await publish_numbered(again, "restarted", 20, window=5)
        await late.wait_for(40)
        if exact_order:
            await asyncio.sleep(0.2)
            late.drain()
            assert late.ids() == after  # nothing from before it started, nothing twice
        else:
            assert set(late.ids()) == set(after)
        assert_in_publisher_order(late.received)

        stored_ids = await stored_ids_of(store_url)
        assert set(acked) | set(after) <= set(stored_ids)
        for watcher in watchers:
            await watcher.wait_for(len(stored_ids))
            await asyncio.sleep(0.2)
            watcher.drain()
            # Exactly the stored messages (also any the killed node stored but never acked).
            if exact_order:
                assert watcher.ids() == stored_ids
            else:
                assert sorted(watcher.ids()) == sorted(stored_ids)
            assert_in_publisher_order(watcher.received)
        await again.close()
        await late.client.close()
    finally:
        await survivor.close()
        await doomed.session.close()
        for watcher in watchers:
            await watcher.client.close()


@pytest.fixture
def own_postgres() -> Iterator[ThrowawayCluster]:
    """A PostgreSQL server of this test's own, which it may stop and start."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("the PostgreSQL server binaries are not installed")
    cluster = ThrowawayCluster(bin_dir).start()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def test_postgresql_restarting_mid_stream(
    start_server: StartServer, own_postgres: ThrowawayCluster, tmp_path: Path
) -> None:
    db_url = PgServer(own_postgres.admin_url).create_database()
    make_superuser(tmp_path / "accounts", db_url)

    async def stored_ids_and_origins(url: str) -> list[tuple[str, str]]:
        return [(row["id"], row["origin"]) for row in await stored(url)]

    await restart_the_store_mid_stream(
        start_server,
        db_url,
        stored_ids_and_origins,
        stop_store=lambda: own_postgres.stop("fast"),
        start_store=own_postgres.start,
        down_within=10,
        up_within=20,
    )


async def restart_the_store_mid_stream(
    start_server: StartServer,
    store_url: str,
    stored_of: Callable[[str], Awaitable[list[tuple[str, str]]]],
    *,
    stop_store: Callable[[], object],
    start_store: Callable[[], object],
    down_within: float,
    up_within: float,
) -> None:
    """Two nodes on ``store_url`` (its superuser made already), a publisher on each;
    the store stops mid-stream and starts again. Publishes are refused while it is
    down and go on after; nothing acked is lost, and each node's subscriber gets every
    message the store holds from the other node and every acked one of its own, once,
    each publisher in order. ``stored_of`` gives the stored messages' ids and origins."""
    nodes = [start_server(db_url=store_url) for _ in range(2)]
    ids = [node_id(node) for node in nodes]
    token = (await sign_in(nodes[0].url, "_superusers", SUPERUSER_EMAIL, SUPERUSER_PASSWORD))[
        "token"
    ]
    subscribers = [await Subscriber.on(node) for node in nodes]
    publishers = [await WsClient.connect(node.ws_url, token=token) for node in nodes]
    acked: list[str] = []
    refused: list[str] = []
    stop = asyncio.Event()
    progress = asyncio.Event()

    async def publish(client: WsClient, publisher: str) -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            reply = await client.publish(TOPIC, {"p": publisher, "n": n})
            n += 1
            if reply["type"] == "published":
                acked.append(reply["id"])
                if len(acked) % 50 == 0:
                    progress.set()
            else:
                refused.append(reply["message"])
            await asyncio.sleep(0.005)

    tasks = [asyncio.create_task(publish(client, f"p{i}")) for i, client in enumerate(publishers)]
    try:
        await asyncio.wait_for(progress.wait(), 30)
        await asyncio.to_thread(stop_store)
        await wait_for_health(nodes, 503, down_within)
        refused_before = len(refused)
        await asyncio.sleep(0.3)
        assert len(refused) > refused_before, "publishes go on being refused while it is down"
        await asyncio.to_thread(start_store)
        await wait_for_health(nodes, 200, up_within)
        acked_before = len(acked)
        progress.clear()
        while len(acked) < acked_before + 100:
            await asyncio.wait_for(progress.wait(), 30)
            progress.clear()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

        assert set(refused) == {"failed to publish message"}
        rows = await stored_of(store_url)
        stored_ids = {message_id for message_id, _ in rows}
        acked_set = set(acked)
        assert acked_set <= stored_ids, "an acknowledged message was lost"
        for subscriber, own in zip(subscribers, ids, strict=True):
            # Every stored message from the other node, and every acked one from its own.
            # (A publish refused as the store went down may still have been stored: only
            # the other node delivers it.)
            must = [
                message_id
                for message_id, origin in rows
                if origin != own or message_id in acked_set
            ]
            await subscriber.wait_for(len(must))
            await asyncio.sleep(0.2)
            subscriber.drain()
            received = subscriber.ids()
            assert len(received) == len(set(received)), "a duplicate was delivered"
            assert set(must) <= set(received) <= stored_ids
            assert_in_publisher_order(subscriber.received)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in [*publishers, *(s.client for s in subscribers)]:
            await client.close()
        for node in nodes:
            node.stop()


async def two_nodes_and_a_publisher_on_the_first(
    start_server: StartServer, cluster_db: str
) -> tuple[ServerProcess, ServerProcess, WsClient]:
    a, b = start_server(db_url=cluster_db), start_server(db_url=cluster_db)
    token = (await sign_in(a.url, "_superusers", SUPERUSER_EMAIL, SUPERUSER_PASSWORD))["token"]
    return a, b, await WsClient.connect(a.ws_url, token=token)


async def test_a_client_resumes_on_another_node_from_a_position_of_the_first(
    start_server: StartServer, cluster_db: str
) -> None:
    a, b, publisher = await two_nodes_and_a_publisher_on_the_first(start_server, cluster_db)
    await resume_on_the_second_node(a, b, publisher)


async def resume_on_the_second_node(
    a: ServerProcess, b: ServerProcess, publisher: WsClient
) -> None:
    """A subscriber on ``a`` leaves after 20 of ``publisher``'s messages and resumes on
    ``b`` from its last position while ``a`` goes on publishing: it gets exactly the
    messages it missed and the later ones, once, in order. Closes ``publisher``."""
    on_a = await Subscriber.on(a)
    try:
        seen = await publish_numbered(publisher, "p", 20)
        await on_a.wait_for(20)
        last = on_a.received[-1]["position"]
        await on_a.client.close()
        missed = await publish_numbered(publisher, "p", 30)
        # Resume on B while A keeps publishing: the replay and live delivery meet exactly.
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


async def test_metrics_show_what_a_node_received_from_the_others(
    start_server: StartServer, cluster_db: str
) -> None:
    a, b, publisher = await two_nodes_and_a_publisher_on_the_first(start_server, cluster_db)
    on_b = await Subscriber.on(b)
    try:
        await publish_numbered(publisher, "p", 20)
        await on_b.wait_for(20)
        last = int(on_b.received[-1]["position"].rsplit(":", 1)[1])
        on_b_metrics, on_a_metrics = await scrape_metrics(b.url), await scrape_metrics(a.url)
        assert on_b_metrics["pubsub_cluster_messages_received_total"] == 20
        assert on_b_metrics["pubsub_cluster_feed_position"] >= last
        assert on_b_metrics["pubsub_position"] >= last
        assert on_b_metrics["pubsub_cluster_feed_degraded"] == 0
        assert on_a_metrics["pubsub_cluster_messages_received_total"] == 0  # its own
        assert on_a_metrics["pubsub_position"] >= last
    finally:
        await on_b.client.close()
        await publisher.close()
