"""Acked means stored: crashes, restarts, graceful shutdown, pruning, a failing store."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg

from bosbase_pubsub.server.ids import new_id

from ..conftest import BOTH_BACKENDS, SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer, http_sign_in
from ..servers import ServerProcess, WsClient, execute_many, query

pytestmark = BOTH_BACKENDS


async def stored_ids(server: ServerProcess) -> set[str]:
    return {row[0] for row in await query(server, "SELECT id FROM _pubsub_messages")}


@contextlib.asynccontextmanager
async def store_refusing_writes(server: ServerProcess) -> AsyncIterator[None]:
    """Make every write to the server's store fail while the block runs."""
    if server.db_url is None:
        # Another process holds the write lock longer than the server's busy timeout.
        locker = sqlite3.connect(str(server.db_path), isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            yield
            locker.execute("ROLLBACK")
        finally:
            locker.close()
        return
    connection = await asyncpg.connect(server.db_url)
    try:
        await connection.execute(
            "CREATE FUNCTION _test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;"
            " CREATE TRIGGER _test_refuse BEFORE INSERT ON _pubsub_messages"
            " FOR EACH STATEMENT EXECUTE FUNCTION _test_refuse();"
        )
        yield
        await connection.execute(
            "DROP TRIGGER _test_refuse ON _pubsub_messages; DROP FUNCTION _test_refuse();"
        )
    finally:
        await connection.close()


async def test_every_acked_message_survives_a_crash_and_restart(start_server: StartServer) -> None:
    server = start_server("--publish-rate", "100000", "--publish-burst", "100000")
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    publishers = [await WsClient.connect(server.ws_url, token=token) for _ in range(4)]
    acked: list[str] = []
    enough = asyncio.Event()

    async def publish_forever(client: WsClient) -> None:
        n = 0
        while True:
            reply = await client.publish("crash", n)
            if reply["type"] == "published":
                acked.append(reply["id"])
                if len(acked) >= 300:
                    enough.set()
            n += 1

    tasks = [asyncio.create_task(publish_forever(client)) for client in publishers]
    await asyncio.wait_for(enough.wait(), 30)
    server.kill()  # SIGKILL mid-stream: no graceful anything
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in publishers:
        await client.session.close()

    assert set(acked) <= await stored_ids(server)
    restarted = start_server(data_dir=server.data_dir)
    assert set(acked) <= await stored_ids(restarted)
    subscriber = await WsClient.connect(restarted.ws_url, token=token)
    try:
        await subscriber.subscribe("crash")
        # The node works after the crash, and does not replay history on its own.
        ack = await subscriber.publish("crash", "after")
        message = await subscriber.next_message()
        assert message["id"] == ack["id"]
    finally:
        await subscriber.close()


async def test_graceful_shutdown_closes_sockets_with_1001_and_keeps_acked_messages(
    start_server: StartServer,
) -> None:
    server = start_server()
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    client = await WsClient.connect(server.ws_url, token=token)
    acks = await asyncio.gather(*(client.publish("bye", n) for n in range(50)))
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    await asyncio.wait_for(client.closed.wait(), 15)
    assert client.ws.close_code == 1001
    await asyncio.to_thread(stopper.join)
    await client.session.close()
    assert {ack["id"] for ack in acks} <= await stored_ids(server)
    assert "stopped" in server.log_text()


async def test_a_graceful_shutdown_mid_stream_acks_every_message_it_stored(
    start_server: StartServer,
) -> None:
    server = start_server()
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    publisher = await WsClient.connect(server.ws_url, token=token)
    subscriber = await WsClient.connect(server.ws_url)
    await subscriber.subscribe("draining")
    loop = asyncio.get_running_loop()
    replies: list[asyncio.Future[dict[str, Any]]] = []
    for n in range(PIPELINED):
        replies.append(loop.create_future())
        publisher.replies[f"p{n}"] = replies[-1]
    # Every frame written before the signal, most still unread by the server or
    # waiting for their commit when it comes (the client writes nothing after).
    for n in range(PIPELINED):
        await publisher.send_raw(
            f'{{"type":"publish","topic":"draining","data":{n},"requestId":"p{n}"}}'
        )
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    await asyncio.wait_for(publisher.closed.wait(), 30)
    await asyncio.wait_for(subscriber.closed.wait(), 15)
    await asyncio.to_thread(stopper.join)
    await publisher.session.close()
    await subscriber.session.close()

    answers = [future.result() for future in replies if not future.exception()]
    # Publishes read once the shutdown began are not answered (nor stored): the
    # socket closes instead, and a client resends them elsewhere.
    assert {answer["type"] for answer in answers} == {"published"}
    assert 0 < len(answers) < PIPELINED
    acked = {answer["id"] for answer in answers}
    # Every message stored was acked, and delivered live, before the sockets closed.
    assert await stored_ids(server) == acked
    delivered = set()
    while not subscriber.messages.empty():
        delivered.add(subscriber.messages.get_nowait()["id"])
    assert delivered == acked
    assert publisher.ws.close_code == subscriber.ws.close_code == 1001


PIPELINED = 20_000


async def _insert_old_rows(server: ServerProcess, count: int, created: str) -> None:
    await execute_many(
        server,
        'INSERT INTO _pubsub_messages (id, topic, payload, origin, "createdBy", created)'
        " VALUES (?, 'old', '1', 'elsewhere', NULL, ?)",
        [(new_id(), created) for _ in range(count)],
    )


async def test_messages_past_retention_are_pruned_in_batches(start_server: StartServer) -> None:
    server = start_server()
    server.stop()
    # 5,000 rows two days old: more than one pruning batch.
    await _insert_old_rows(server, 5000, "2000-01-01 00:00:00.000Z")
    restarted = start_server("--prune-interval", "1s", data_dir=server.data_dir)
    restarted.wait_for_log("pruned 5000 messages")
    token = http_sign_in(restarted.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    client = await WsClient.connect(restarted.ws_url, token=token)
    recent = await client.publish("new", 1)
    await client.close()
    await asyncio.sleep(1.5)  # another pruning round, which must keep the recent message
    assert await stored_ids(restarted) == {recent["id"]}


async def test_retention_is_configurable(start_server: StartServer) -> None:
    server = start_server("--retention", "1s", "--prune-interval", "1s")
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    client = await WsClient.connect(server.ws_url, token=token)
    try:
        ack = await client.publish("short", 1)
        assert ack["id"] in await stored_ids(server)
        for _ in range(50):
            if ack["id"] not in await stored_ids(server):
                break
            await asyncio.sleep(0.1)
        assert ack["id"] not in await stored_ids(server)
    finally:
        await client.close()


async def test_a_store_that_fails_gets_failed_to_publish_and_nothing_is_acked(
    start_server: StartServer,
) -> None:
    server = start_server()
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    client = await WsClient.connect(server.ws_url, token=token)
    subscriber = await WsClient.connect(server.ws_url)
    try:
        await subscriber.subscribe("locked")
        async with store_refusing_writes(server):
            reply = await client.publish("locked", "lost?")
            assert reply["type"] == "error"
            assert reply["message"] == "failed to publish message"
            async with (
                aiohttp.ClientSession() as session,
                session.get(server.url + "/api/health") as response,
            ):
                assert response.status == 503
        ack = await client.publish("locked", "kept")
        assert ack["type"] == "published"
        # The refused message was neither stored nor delivered; the next one was.
        message = await subscriber.next_message()
        assert message["data"] == "kept"
        payloads = [row[0] for row in await query(server, "SELECT payload FROM _pubsub_messages")]
        assert payloads == ['"kept"']
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "/api/health") as response,
        ):
            assert response.status == 200
    finally:
        await client.close()
        await subscriber.close()
