"""Resume (positions, ``since``, ``replay``) and idempotent publish keys (see resume.md)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from bosbase_pubsub.server.ids import new_id

from ..conftest import BOTH_BACKENDS, SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer, http_sign_in
from ..servers import ServerProcess, WsClient, execute_many, query

pytestmark = BOTH_BACKENDS


def seq(position: str) -> int:
    return int(position.rsplit(":", 1)[1])


def epoch(position: str) -> str:
    return position.rsplit(":", 1)[0]


async def drain(client: WsClient, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    return [await client.next_message(timeout) for _ in range(count)]


async def nothing_more(client: WsClient, wait: float = 0.3) -> None:
    await asyncio.sleep(wait)
    assert client.messages.empty(), client.messages.get_nowait()


async def stored_topic(server: ServerProcess, topic: str) -> list[str]:
    sql = "SELECT id FROM _pubsub_messages WHERE topic = ? ORDER BY seq"
    rows = await query(server, sql, topic)
    return [row[0] for row in rows]


@pytest.fixture
async def server_and_token(start_server: StartServer) -> tuple[ServerProcess, str]:
    server = start_server("--publish-rate", "100000", "--publish-burst", "100000")
    return server, http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)


async def test_acks_and_messages_carry_positions_in_order(
    server_and_token: tuple[ServerProcess, str],
) -> None:
    server, token = server_and_token
    client = await WsClient.connect(server.ws_url, token=token)
    try:
        ack = await client.subscribe("pos")
        assert set(ack) == {"type", "requestId", "position"}
        acks = [await client.publish("pos", n) for n in range(5)]
        messages = await drain(client, 5)
        assert [m["position"] for m in messages] == [a["position"] for a in acks]
        seqs = [seq(a["position"]) for a in acks]
        assert seqs == sorted(set(seqs))
        assert seq(ack["position"]) < seqs[0]
        assert {epoch(a["position"]) for a in acks} == {epoch(ack["position"])}
        # Subscribing again is a no-op: no replay, no replay status.
        again = await client.request("subscribe", topic="pos", since=ack["position"])
        assert again["type"] == "subscribed"
        assert "replay" not in again
        await nothing_more(client)
    finally:
        await client.close()


async def test_resume_replays_exactly_what_was_missed_while_live_publishes_race(
    server_and_token: tuple[ServerProcess, str],
) -> None:
    server, token = server_and_token
    publisher = await WsClient.connect(server.ws_url, token=token)
    try:
        first = [await publisher.publish("resume", n) for n in range(20)]
        for n in range(5):
            await publisher.publish("elsewhere", n)
        since = first[4]["position"]
        stop = asyncio.Event()

        async def keep_publishing() -> int:
            n = 100
            while not stop.is_set():
                await publisher.publish("resume", n)
                n += 1
            return n

        racing = asyncio.create_task(keep_publishing())
        await asyncio.sleep(0.05)
        subscriber = await WsClient.connect(server.ws_url)
        try:
            ack = await subscriber.request("subscribe", topic="resume", since=since)
            assert ack["type"] == "subscribed"
            assert ack["replay"] == "complete"
            assert ack["position"] == since
            await asyncio.sleep(0.3)
            stop.set()
            await racing
            expected = await stored_topic(server, "resume")
            expected = expected[expected.index(first[4]["id"]) + 1 :]
            received = await drain(subscriber, len(expected))
            assert [m["id"] for m in received] == expected
            positions = [seq(m["position"]) for m in received]
            assert positions == sorted(set(positions))
            await nothing_more(subscriber)
        finally:
            await subscriber.close()
    finally:
        await publisher.close()


async def test_a_position_of_another_topic_is_a_valid_starting_point(
    server_and_token: tuple[ServerProcess, str],
) -> None:
    server, token = server_and_token
    publisher = await WsClient.connect(server.ws_url, token=token)
    subscriber = await WsClient.connect(server.ws_url)
    try:
        before = await publisher.publish("b", "before")
        mark = await publisher.publish("a", "mark")
        after = [await publisher.publish("b", n) for n in range(3)]
        ack = await subscriber.request("subscribe", topic="b", since=mark["position"])
        assert ack["replay"] == "complete"
        received = await drain(subscriber, 3)
        assert [m["id"] for m in received] == [a["id"] for a in after]
        assert before["id"] not in {m["id"] for m in received}
        live = await publisher.publish("b", "live")
        assert (await subscriber.next_message())["id"] == live["id"]
        await nothing_more(subscriber)
    finally:
        await publisher.close()
        await subscriber.close()


@pytest.mark.parametrize("kind", ["other epoch", "garbage", "beyond newest"])
async def test_an_unknown_position_replays_nothing_and_goes_live(
    server_and_token: tuple[ServerProcess, str], kind: str
) -> None:
    server, token = server_and_token
    publisher = await WsClient.connect(server.ws_url, token=token)
    subscriber = await WsClient.connect(server.ws_url)
    try:
        old = await publisher.publish("u", "old")
        since = {
            "other epoch": "someotherdb:1",
            "garbage": "not a position",
            "beyond newest": f"{epoch(old['position'])}:{seq(old['position']) + 1000}",
        }[kind]
        ack = await subscriber.request("subscribe", topic="u", since=since)
        assert ack["type"] == "subscribed"
        assert ack["replay"] == "unknown"
        assert seq(ack["position"]) >= seq(old["position"])
        live = await publisher.publish("u", "live")
        message = await subscriber.next_message()
        assert message["id"] == live["id"]
        await nothing_more(subscriber)
    finally:
        await publisher.close()
        await subscriber.close()


async def test_a_pruned_position_says_so_and_replays_what_is_left(
    start_server: StartServer,
) -> None:
    server = start_server()
    server.stop()
    await execute_many(
        server,
        'INSERT INTO _pubsub_messages (id, topic, payload, origin, "createdBy", created)'
        " VALUES (?, 'p', '1', 'elsewhere', NULL, '2000-01-01 00:00:00.000Z')",
        [(new_id(),) for _ in range(10)],
    )
    server = start_server("--prune-interval", "1s", data_dir=server.data_dir)
    server.wait_for_log("pruned 10 messages")
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    client = await WsClient.connect(server.ws_url, token=token)
    try:
        first = await client.publish("p", "first")
        kept = await client.publish("p", "kept")
        # A position from before the pruned messages (as a client long gone would hold).
        since = f"{epoch(first['position'])}:{seq(first['position']) - 11}"
        ack = await client.request("subscribe", topic="p", since=since)
        assert ack["replay"] == "pruned"
        # What is still stored after it is replayed, in order.
        assert [m["id"] for m in await drain(client, 2)] == [first["id"], kept["id"]]
        await nothing_more(client)
        # A position after everything pruned is complete again.
        other = await WsClient.connect(server.ws_url)
        ack = await other.request("subscribe", topic="p", since=first["position"])
        assert ack["replay"] == "complete"
        assert [m["id"] for m in await drain(other, 1)] == [kept["id"]]
        await other.close()
    finally:
        await client.close()


async def test_a_key_stores_and_delivers_a_publish_once(
    server_and_token: tuple[ServerProcess, str],
) -> None:
    server, token = server_and_token
    publisher = await WsClient.connect(server.ws_url, token=token)
    subscriber = await WsClient.connect(server.ws_url)
    try:
        await subscriber.subscribe("k")
        first = await publisher.request("publish", topic="k", data=1, key="key-1")
        again = await publisher.request("publish", topic="k", data=2, key="key-1")
        assert first["type"] == again["type"] == "published"
        assert {f: again[f] for f in ("id", "created", "position")} == {
            f: first[f] for f in ("id", "created", "position")
        }
        # Two publishes with one key in one batch, and a third key-less one.
        acks = await asyncio.gather(
            publisher.request("publish", topic="k", data=3, key="key-2"),
            publisher.request("publish", topic="k", data=4, key="key-2"),
            publisher.request("publish", topic="k", data=5),
        )
        assert acks[0]["id"] == acks[1]["id"]
        assert acks[2]["id"] != acks[0]["id"]
        received = await drain(subscriber, 3)
        assert [m["data"] for m in received] == [1, 3, 5]
        await nothing_more(subscriber)
        assert len(await stored_topic(server, "k")) == 3
        too_long = await publisher.request("publish", topic="k", data=6, key="x" * 129)
        assert too_long == {
            "type": "error",
            "requestId": too_long["requestId"],
            "message": "publish key is too long (at most 128 characters)",
        }
        # HTTP publish takes the key too, and shares it with the WebSocket.
        async with aiohttp.ClientSession() as session:
            bodies = []
            for _ in range(2):
                async with session.post(
                    server.url + "/api/pubsub/publish",
                    data=json.dumps({"topic": "k", "data": 7, "key": "key-1"}),
                    headers={"Authorization": token},
                ) as response:
                    assert response.status == 200
                    bodies.append(await response.json())
        assert bodies[0] == bodies[1]
        assert bodies[0]["id"] == first["id"]
        await nothing_more(subscriber)
    finally:
        await publisher.close()
        await subscriber.close()


BACKLOG = 100_000


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def insert_backlog(server: ServerProcess, topic: str, count: int, payload: str) -> None:
    """``count`` rows on ``topic``, straight into the (stopped) server's store."""
    data = json.dumps(payload)
    if server.db_url is None:
        sql = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO _pubsub_messages (id, topic, payload, origin, createdBy, created)"
            " SELECT 'b' || i, ?, ?, 'elsewhere', NULL, strftime('%Y-%m-%d %H:%M:%fZ')"
            " FROM n"
        )
    else:
        sql = (
            'INSERT INTO _pubsub_messages (id, topic, payload, origin, "createdBy", created)'
            " SELECT 'b' || i, ?, ?::json, 'elsewhere', NULL,"
            " to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD HH24:MI:SS.MS\"Z\"')"
            " FROM generate_series(1, ?::int) AS i"
        )
    params = (count, topic, data) if server.db_url is None else (topic, data, count)
    await execute_many(server, sql, [params])


async def test_a_large_backlog_replays_in_bounded_memory_without_stalling_others(
    start_server: StartServer,
) -> None:
    server = start_server()
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    client = await WsClient.connect(server.ws_url, token=token)
    start = await client.publish("big", "start")
    await client.close()
    server.stop()
    await insert_backlog(server, "big", BACKLOG, "x" * 1000)  # about 100 MB of frames
    server = start_server(data_dir=server.data_dir)
    publisher = await WsClient.connect(server.ws_url, token=token)
    live = await WsClient.connect(server.ws_url)
    resuming = await WsClient.connect(server.ws_url)
    try:
        await live.subscribe("live")
        baseline = rss_bytes(server.pid)
        peak = baseline
        received = 0
        replayed_at_each_round_trip: list[int] = []
        """How much of the backlog had arrived when each live round trip completed."""
        done = asyncio.Event()

        async def live_traffic() -> None:
            while not done.is_set():
                await publisher.publish("live", received)
                await live.next_message()
                replayed_at_each_round_trip.append(received)
                await asyncio.sleep(0.02)

        async def watch_memory() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_bytes(server.pid))
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(live_traffic()), asyncio.create_task(watch_memory())]
        ack = await resuming.request("subscribe", topic="big", since=start["position"])
        assert ack["replay"] == "complete"
        last = seq(start["position"])
        while received < BACKLOG:
            message = await resuming.next_message(30)
            position = seq(message["position"])
            assert position > last
            last = position
            received += 1
        done.set()
        await asyncio.gather(*tasks)
        assert message["id"] == f"b{BACKLOG}"
        await nothing_more(resuming)
        # The server never held the backlog: a page and the outbound buffer at most.
        assert peak - baseline < 60 * 1024 * 1024, (baseline, peak)
        # Live traffic went on while the backlog streamed out, instead of waiting
        # behind it: round trips completed all along the replay, not only after it.
        midway = [n for n in replayed_at_each_round_trip if BACKLOG // 10 < n < BACKLOG * 9 // 10]
        assert len(midway) >= 5, replayed_at_each_round_trip
    finally:
        for ws in (publisher, live, resuming):
            await ws.close()
