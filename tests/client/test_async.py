"""``AsyncBosBase`` (asyncio) against real server processes: the sync tests' twins."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets.asyncio.server

from bosbase_pubsub import (
    AsyncBosBase,
    AuthError,
    AuthStore,
    ClientClosed,
    ConnectionClosed,
    InvalidRequest,
    Message,
    ReplayGap,
    RequestTimeout,
    ServerError,
    Timeouts,
)

from ..chaos.proxy import ChaosProxy
from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer, http_sign_in
from ..servers import ServerProcess
from .conftest import FAST_RECONNECT, JSON_VALUES, TIMEOUTS, closed_port, open_sockets


def make_client(url: str, token: str = "", **options: Any) -> AsyncBosBase:
    options.setdefault("timeout", TIMEOUTS)
    options.setdefault("reconnect", FAST_RECONNECT)
    return AsyncBosBase(url, auth_store=AuthStore(token), **options)


@pytest.fixture
async def client(shared_server: ServerProcess, superuser_token: str) -> AsyncIterator[AsyncBosBase]:
    async with make_client(shared_server.url, superuser_token) as client:
        yield client


@pytest.fixture
async def anonymous(shared_server: ServerProcess) -> AsyncIterator[AsyncBosBase]:
    async with make_client(shared_server.url) as client:
        yield client


class AsyncInbox:
    """An ``async`` handler that collects messages."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        async def enough() -> None:
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), timeout)
        return list(self.messages)

    @property
    def data(self) -> list[Any]:
        return [message["data"] for message in self.messages]


async def eventually(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_every_json_type_makes_the_round_trip(client: AsyncBosBase, topic: str) -> None:
    inbox = AsyncInbox()
    await client.pubsub.subscribe(topic, inbox)
    assert client.pubsub.is_connected()
    acks = [await client.pubsub.publish(topic, value) for value in JSON_VALUES]
    await inbox.wait_for(len(JSON_VALUES))
    assert inbox.data == JSON_VALUES
    for ack, message in zip(acks, inbox.messages, strict=True):
        assert message["id"] == ack["id"]
        assert message["created"] == ack["created"]
        assert message["topic"] == ack["topic"] == topic


async def test_plain_and_async_handlers_and_many_listeners(
    client: AsyncBosBase, anonymous: AsyncBosBase, topic: str
) -> None:
    plain: list[Any] = []
    inboxes = [AsyncInbox() for _ in range(3)]
    await anonymous.pubsub.subscribe(topic, lambda message: plain.append(message["data"]))
    for inbox in inboxes:
        await anonymous.pubsub.subscribe(topic, inbox)
    for n in range(30):
        await client.pubsub.publish(topic, n)
    for inbox in inboxes:
        assert (await inbox.wait_for(30))[-1]["data"] == 29
        assert inbox.data == list(range(30))
    assert plain == list(range(30))


async def test_errors_carry_the_servers_message(
    client: AsyncBosBase, anonymous: AsyncBosBase, topic: str
) -> None:
    with pytest.raises(AuthError, match=r"^authentication required to publish$"):
        await anonymous.pubsub.publish(topic, 1)
    with pytest.raises(ServerError, match=r"^topic is too long \(at most 256 characters\)$"):
        await client.pubsub.publish("x" * 300, 1)
    with pytest.raises(InvalidRequest, match=r"^payload too large$"):
        await client.pubsub.publish(topic, "z" * (256 * 1024))
    assert (await client.pubsub.publish(topic, "fine"))["topic"] == topic


async def test_unsubscribe_may_be_awaited_or_not(client: AsyncBosBase, topic: str) -> None:
    first, second = AsyncInbox(), AsyncInbox()
    unsubscribe = await client.pubsub.subscribe(topic, first)
    await client.pubsub.publish(topic, 1)
    await unsubscribe()
    unsubscribe()  # not awaited: takes effect all the same (and is idempotent)
    assert client.pubsub.topics == []
    remove_second = await client.pubsub.subscribe(topic, second)
    await client.pubsub.publish(topic, 2)
    await second.wait_for(1)
    assert first.data == [1]
    assert second.data == [2]
    remove_second()
    await client.pubsub.subscribe(f"{topic}/a", second)
    await client.pubsub.unsubscribe()
    assert client.pubsub.topics == []


async def test_concurrent_publishes_are_pipelined_and_kept_in_order(
    client: AsyncBosBase, anonymous: AsyncBosBase, topic: str
) -> None:
    inbox = AsyncInbox()
    await anonymous.pubsub.subscribe(topic, inbox)

    async def publisher(task: int) -> list[str]:
        return [
            (await client.pubsub.publish(topic, {"task": task, "n": n}))["id"] for n in range(100)
        ]

    ids = await asyncio.gather(*(publisher(task) for task in range(8)))
    assert len({i for batch in ids for i in batch}) == 800
    messages = await inbox.wait_for(800)
    for task in range(8):
        assert [m["data"]["n"] for m in messages if m["data"]["task"] == task] == list(range(100))
    # All at once, without awaiting one by one:
    acks = await asyncio.gather(*(client.pubsub.publish(topic, n) for n in range(500)))
    assert len({ack["id"] for ack in acks}) == 500


async def test_stream_yields_the_messages_of_a_topic(client: AsyncBosBase, topic: str) -> None:
    async with client.pubsub.stream(topic) as messages:
        for n in range(3):
            await client.pubsub.publish(topic, n)
        seen = []
        async for message in messages:
            seen.append(message["data"])
            if len(seen) == 3:
                break
    assert seen == [0, 1, 2]
    assert client.pubsub.topics == []
    # Without ``async with``: it subscribes on the first step.
    stream = client.pubsub.stream(topic)
    reader = asyncio.ensure_future(stream.__anext__())
    await eventually(lambda: client.pubsub.topics == [topic])
    await client.pubsub.publish(topic, "x")
    assert (await reader)["data"] == "x"
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_a_stream_ends_when_the_client_disconnects(client: AsyncBosBase, topic: str) -> None:
    async with client.pubsub.stream(topic) as messages:
        await client.pubsub.disconnect()
        assert [message async for message in messages] == []


async def test_a_handler_may_await_a_publish(client: AsyncBosBase, topic: str) -> None:
    echoes = AsyncInbox()
    await client.pubsub.subscribe(f"{topic}/echo", echoes)

    async def echo(message: Message) -> None:
        await client.pubsub.publish(f"{topic}/echo", message["data"])

    await client.pubsub.subscribe(topic, echo)
    await client.pubsub.publish(topic, "ping")
    assert (await echoes.wait_for(1))[0]["data"] == "ping"


async def test_a_failing_handler_is_logged_and_delivery_goes_on(
    client: AsyncBosBase, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = AsyncInbox()

    async def fragile(message: Message) -> None:
        if message["data"] == "boom":
            raise ValueError("handler bug")
        await inbox(message)

    await client.pubsub.subscribe(topic, fragile)
    with caplog.at_level(logging.ERROR, logger="bosbase_pubsub.client"):
        await client.pubsub.publish(topic, "boom")
        await client.pubsub.publish(topic, "after")
        await inbox.wait_for(1)
    assert inbox.data == ["after"]
    assert any(record.exc_info and record.exc_info[0] is ValueError for record in caplog.records)


async def test_signing_in_upgrades_the_open_socket(
    shared_server: ServerProcess, topic: str
) -> None:
    async with make_client(shared_server.url) as client:
        inbox = AsyncInbox()
        await client.pubsub.subscribe(topic, inbox)
        with pytest.raises(AuthError):
            await client.pubsub.publish(topic, "anonymous")
        first = client.pubsub._core.client_id
        await client.collection("_superusers").auth_with_password(
            SUPERUSER_EMAIL, SUPERUSER_PASSWORD
        )
        ack = await client.pubsub.publish(topic, "signed in")
        # The new token went over the open socket (an ``auth`` frame): no reconnect.
        assert client.pubsub._core.client_id == first
        assert (await inbox.wait_for(1))[0]["id"] == ack["id"]
        # A change made from another thread is carried over to the loop.
        thread = threading.Thread(target=client.auth_store.clear)
        thread.start()
        thread.join()
        await asyncio.sleep(0.05)
        with pytest.raises(AuthError):
            await client.pubsub.publish(topic, "signed out")


async def test_delivery_resumes_after_a_server_restart(
    start_server: StartServer, topic: str
) -> None:
    server = start_server()
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    async with make_client(server.url) as subscriber, make_client(server.url, token) as publisher:
        inbox = AsyncInbox()
        await subscriber.pubsub.subscribe(topic, inbox)
        await publisher.pubsub.publish(topic, "before")
        await inbox.wait_for(1)
        await asyncio.to_thread(server.stop)
        await eventually(lambda: not subscriber.pubsub.is_connected())
        waiting = asyncio.ensure_future(publisher.pubsub.publish(topic, "while down"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await asyncio.to_thread(server.restart)
        assert (await asyncio.wait_for(waiting, 10))["topic"] == topic
        await eventually(subscriber.pubsub.is_connected)
        await publisher.pubsub.publish(topic, "after")
        # Published while the subscriber was away, or not: it resumes, so once each.
        await eventually(lambda: "after" in inbox.data)
        await asyncio.sleep(0.1)
        assert inbox.data == ["before", "while down", "after"]


async def test_a_slow_async_handler_does_not_stop_heartbeats(
    start_server: StartServer, topic: str
) -> None:
    server = start_server("--heartbeat", "1s")
    token = http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    async with make_client(server.url, token) as client:
        inbox = AsyncInbox()

        async def slow(message: Message) -> None:
            if message["data"] == "slow":
                await asyncio.sleep(2.5)
            await inbox(message)

        await client.pubsub.subscribe(topic, slow)
        connection = client.pubsub._core.client_id
        await client.pubsub.publish(topic, "slow")
        await client.pubsub.publish(topic, "next")  # acks still come while it sleeps
        await inbox.wait_for(2)
        assert inbox.data == ["slow", "next"]
        assert client.pubsub._core.client_id == connection


async def test_a_request_never_hangs(topic: str) -> None:
    async with make_client(f"http://127.0.0.1:{closed_port()}", "token") as client:
        with pytest.raises(RequestTimeout, match=r"no connection to the server within 0.3s"):
            await client.pubsub.publish(topic, 1, timeout=0.3)

    async def mute(ws: websockets.asyncio.server.ServerConnection) -> None:
        await ws.send('{"type":"ready","clientId":"mute"}')
        async for _ in ws:
            pass

    async with websockets.asyncio.server.serve(mute, "127.0.0.1", 0) as mute_server:
        port = next(iter(mute_server.sockets)).getsockname()[1]
        async with make_client(f"http://127.0.0.1:{port}", "token") as client:
            with pytest.raises(RequestTimeout, match=r"^no reply from the server within 0.3s$"):
                await client.pubsub.publish(topic, 1, timeout=0.3)


async def test_a_cancelled_call_is_forgotten(topic: str) -> None:
    async with make_client(f"http://127.0.0.1:{closed_port()}", "token") as client:
        call = asyncio.ensure_future(client.pubsub.subscribe(topic, print))
        await eventually(lambda: client.pubsub._core.pending == 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert client.pubsub._core.pending == 0
        assert client.pubsub.topics == []


async def test_a_dropped_connection_fails_the_publish_in_flight(topic: str) -> None:
    async def drop(ws: websockets.asyncio.server.ServerConnection) -> None:
        await ws.send('{"type":"ready","clientId":"x"}')
        await ws.recv()
        await ws.close(1011, "gone")

    async with websockets.asyncio.server.serve(drop, "127.0.0.1", 0) as drop_server:
        port = next(iter(drop_server.sockets)).getsockname()[1]
        async with make_client(f"http://127.0.0.1:{port}", "t", timeout=Timeouts(2.0)) as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.pubsub.publish(topic, 1)
            assert closed.value.code == 1011


async def test_close_leaves_no_task_and_no_socket(shared_server: ServerProcess, topic: str) -> None:
    tasks_before = asyncio.all_tasks()
    sockets_before = open_sockets()
    client = make_client(shared_server.url)
    await client.collection("_superusers").auth_with_password(SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    inbox = AsyncInbox()
    await client.pubsub.subscribe(topic, inbox)
    await client.pubsub.publish(topic, 1)
    assert len(asyncio.all_tasks() - tasks_before) >= 3  # connection, writer, dispatcher
    await client.close()
    await asyncio.sleep(0)  # let finished tasks be forgotten
    assert asyncio.all_tasks() == tasks_before
    assert open_sockets() == sockets_before
    with pytest.raises(ClientClosed):
        await client.pubsub.publish(topic, 2)
    await client.close()


async def test_close_fails_what_waits_with_client_closed(topic: str) -> None:
    client = make_client(f"http://127.0.0.1:{closed_port()}", "token")
    waiting = asyncio.ensure_future(client.pubsub.publish(topic, 1))
    await eventually(lambda: client.pubsub._core.pending == 1)
    await client.close()
    with pytest.raises(ClientClosed):
        await waiting


# --- resume and idempotent publish (docs/reference/resume.md) -------------------------


async def test_messages_published_while_disconnected_are_replayed_once_in_order(
    shared_server: ServerProcess, superuser_token: str, topic: str
) -> None:
    port = int(shared_server.url.rsplit(":", 1)[1])
    proxy = await asyncio.to_thread(ChaosProxy(port).start)
    try:
        async with (
            make_client(proxy.url) as subscriber,
            make_client(shared_server.url, superuser_token) as publisher,
        ):
            gaps: list[ReplayGap] = []
            async with subscriber.pubsub.stream(topic, on_gap=gaps.append) as messages:
                await publisher.pubsub.publish(topic, 0)
                first = await asyncio.wait_for(messages.__anext__(), 10)
                proxy.refusing = True
                await asyncio.to_thread(proxy.cut, "fin")
                await eventually(lambda: not subscriber.pubsub.is_connected())
                for number in range(1, 6):
                    await publisher.pubsub.publish(topic, number)
                proxy.refusing = False
                await eventually(subscriber.pubsub.is_connected)
                await publisher.pubsub.publish(topic, 6)
                rest = [await asyncio.wait_for(messages.__anext__(), 10) for _ in range(6)]
            assert [m["data"] for m in [first, *rest]] == [0, 1, 2, 3, 4, 5, 6]
            assert gaps == []
    finally:
        await asyncio.to_thread(proxy.close)


async def test_since_replays_and_an_async_on_gap_hears_of_an_unknown_position(
    client: AsyncBosBase, anonymous: AsyncBosBase, topic: str
) -> None:
    acks = [await client.pubsub.publish(topic, number) for number in range(3)]
    inbox = AsyncInbox()
    gaps: list[ReplayGap] = []

    async def on_gap(gap: ReplayGap) -> None:
        gaps.append(gap)

    unsubscribe = await anonymous.pubsub.subscribe(
        topic, inbox, since=acks[1]["position"], on_gap=on_gap
    )
    await inbox.wait_for(1)
    assert inbox.data == [2]
    await unsubscribe()
    async with anonymous.pubsub.stream(topic, since="nope", on_gap=on_gap) as messages:
        await eventually(lambda: bool(gaps))
        assert gaps[0]["replay"] == "unknown"
        await client.pubsub.publish(topic, "live")
        message = await asyncio.wait_for(messages.__anext__(), 10)
        assert message["data"] == "live"


# The sockets of the ended loop can no longer be closed (their loop is gone): Python
# warns about them, which is what the scenario is (a client never closed in time).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_close_after_the_loop_that_used_the_client_ended_is_quiet(
    shared_server: ServerProcess,
) -> None:
    async def use() -> AsyncBosBase:
        client = make_client(shared_server.url)
        await client.collection("_superusers").auth_with_password(
            SUPERUSER_EMAIL, SUPERUSER_PASSWORD
        )
        await client.pubsub.subscribe("ended/loop", lambda message: None)
        return client

    client = asyncio.run(use())  # the loop ends; the client was never closed

    async def close_twice(client: AsyncBosBase) -> None:
        await client.close()
        await client.close()
        with pytest.raises(ClientClosed):
            await client.pubsub.publish("ended/loop", 1)

    asyncio.run(close_twice(client))
    del client
    gc.collect()  # the sockets' warnings now, while this test's filters apply
