"""``BosBase`` (threads) against real server processes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets.sync.server

from bosbase_pubsub import (
    AuthError,
    AuthStore,
    BosBase,
    ClientClosed,
    ConnectionClosed,
    InvalidRequest,
    Message,
    PublishAck,
    ReplayGap,
    RequestTimeout,
    ServerError,
    Timeouts,
)

from ..chaos.proxy import ChaosProxy
from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer
from ..servers import ServerProcess
from .conftest import (
    FAST_RECONNECT,
    JSON_VALUES,
    TIMEOUTS,
    Inbox,
    client_threads,
    closed_port,
    open_sockets,
    wait_until,
)


def make_client(url: str, token: str = "", **options: Any) -> BosBase:
    options.setdefault("timeout", TIMEOUTS)
    options.setdefault("reconnect", FAST_RECONNECT)
    return BosBase(url, auth_store=AuthStore(token), **options)


@pytest.fixture
def client(shared_server: ServerProcess, superuser_token: str) -> Iterator[BosBase]:
    """A client signed in as the superuser."""
    with make_client(shared_server.url, superuser_token) as client:
        yield client


@pytest.fixture
def anonymous(shared_server: ServerProcess) -> Iterator[BosBase]:
    with make_client(shared_server.url) as client:
        yield client


def test_every_json_type_makes_the_round_trip(client: BosBase, topic: str) -> None:
    inbox = Inbox()
    client.pubsub.subscribe(topic, inbox)
    assert client.pubsub.is_connected()
    acks = [client.pubsub.publish(topic, value) for value in JSON_VALUES]
    # Read-your-writes: each publish returned after its own handler ran.
    assert inbox.data == JSON_VALUES
    for ack, message in zip(acks, inbox.messages, strict=True):
        assert set(ack) == {"id", "topic", "created", "position"}
        assert set(message) == {"id", "topic", "data", "created", "position"}
        assert (message["id"], message["topic"], message["created"], message["position"]) == (
            ack["id"],
            topic,
            ack["created"],
            ack["position"],
        )
    assert inbox.threads == {"bosbase-pubsub-dispatcher"}


def test_another_client_receives_in_order(client: BosBase, anonymous: BosBase, topic: str) -> None:
    inbox = Inbox()
    anonymous.pubsub.subscribe(topic, inbox)
    for n in range(50):
        client.pubsub.publish(topic, n)
    inbox.wait_for(50)
    assert inbox.data == list(range(50))


def test_errors_carry_the_servers_message(client: BosBase, anonymous: BosBase, topic: str) -> None:
    with pytest.raises(AuthError, match=r"^authentication required to publish$") as refused:
        anonymous.pubsub.publish(topic, 1)
    assert refused.value.status is None
    with pytest.raises(ServerError) as too_long:
        client.pubsub.publish("x" * 300, 1)
    assert too_long.value.message == "topic is too long (at most 256 characters)"
    with pytest.raises(ServerError, match=r"topic is too long"):
        client.pubsub.subscribe("y" * 300, print)
    assert client.pubsub.topics == []
    # Checked before sending, with the server's own words:
    with pytest.raises(InvalidRequest, match=r"^payload too large$"):
        client.pubsub.publish(topic, "z" * (256 * 1024))
    with pytest.raises(InvalidRequest, match=r"^topic must be set$"):
        client.pubsub.subscribe("  ", print)
    # The connection is still fine.
    assert client.pubsub.publish(topic, "still here")["topic"] == topic


def test_unsubscribe_stops_the_deliveries(client: BosBase, topic: str) -> None:
    first = Inbox()
    unsubscribe = client.pubsub.subscribe(topic, first)
    client.pubsub.publish(topic, 1)
    unsubscribe()
    unsubscribe()  # idempotent
    assert client.pubsub.topics == []
    second = Inbox()
    client.pubsub.subscribe(topic, second)
    client.pubsub.publish(topic, 2)
    assert first.data == [1]
    assert second.data == [2]
    client.pubsub.unsubscribe(topic)
    client.pubsub.subscribe(f"{topic}/a", second)
    client.pubsub.subscribe(f"{topic}/b", second)
    client.pubsub.unsubscribe()
    assert client.pubsub.topics == []


def test_many_listeners_each_get_each_message_once(client: BosBase, topic: str) -> None:
    inboxes = [Inbox() for _ in range(5)]
    for inbox in inboxes[:4]:
        client.pubsub.subscribe(topic, inbox)
    client.pubsub.subscribe(f"{topic}/other", inboxes[4])
    client.pubsub.publish(topic, "all")
    client.pubsub.publish(f"{topic}/other", "one")
    assert [inbox.data for inbox in inboxes] == [["all"]] * 4 + [["one"]]


def test_eight_threads_publish_at_once_through_one_client(
    client: BosBase, anonymous: BosBase, topic: str
) -> None:
    per_thread = 100
    inbox = Inbox()
    anonymous.pubsub.subscribe(topic, inbox)
    acks: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def publish(thread: int) -> None:
        try:
            acks[thread] = [
                client.pubsub.publish(topic, {"thread": thread, "n": n})["id"]
                for n in range(per_thread)
            ]
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    ids = [message_id for values in acks.values() for message_id in values]
    assert len(set(ids)) == 8 * per_thread
    messages = inbox.wait_for(8 * per_thread)
    for thread in range(8):
        seen = [m["data"]["n"] for m in messages if m["data"]["thread"] == thread]
        assert seen == list(range(per_thread))  # each publisher's order is kept


def test_handlers_run_on_the_dispatcher_and_a_failing_one_is_logged(
    client: BosBase, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Any] = []

    def fragile(message: Message) -> None:
        calls.append((threading.current_thread().name, message["data"]))
        if message["data"] == "boom":
            raise ValueError("handler bug")

    client.pubsub.subscribe(topic, fragile)
    with caplog.at_level(logging.ERROR, logger="bosbase_pubsub.client"):
        client.pubsub.publish(topic, "boom")
        client.pubsub.publish(topic, "after")
    assert calls == [("bosbase-pubsub-dispatcher", "boom"), ("bosbase-pubsub-dispatcher", "after")]
    assert any("failed" in record.message for record in caplog.records)
    assert any(record.exc_info and record.exc_info[0] is ValueError for record in caplog.records)


def test_a_handler_may_publish_and_subscribe(client: BosBase, topic: str) -> None:
    echoes = Inbox()
    client.pubsub.subscribe(f"{topic}/echo", echoes)

    def echo(message: Message) -> None:
        client.pubsub.publish(f"{topic}/echo", message["data"])

    client.pubsub.subscribe(topic, echo)
    client.pubsub.publish(topic, "ping")
    assert echoes.wait_for(1)[0]["data"] == "ping"


def test_query_and_headers_go_into_the_handshake(
    anonymous: BosBase, superuser_token: str, topic: str
) -> None:
    with pytest.raises(AuthError):
        anonymous.pubsub.publish(topic, 1)
    # The server reads a token from the query too: the socket reconnects with it.
    ack = anonymous.pubsub.publish(topic, 2, query={"token": superuser_token})
    assert ack["topic"] == topic
    assert anonymous.pubsub.publish(topic, 3)["topic"] == topic  # kept for later requests
    with make_client(anonymous.base_url) as other:
        ack = other.pubsub.publish(topic, 4, headers={"Authorization": superuser_token})
        assert ack["topic"] == topic


def test_body_is_merged_into_the_envelope(client: BosBase, topic: str) -> None:
    ack = client.pubsub.publish(topic, {"x": 1}, body={"meta": "ignored by this server"})
    assert ack["topic"] == topic
    with pytest.raises(InvalidRequest, match=r"envelope"):
        client.pubsub.publish(topic, 1, body={"requestId": "mine"})


def test_signing_in_upgrades_the_open_socket(shared_server: ServerProcess, topic: str) -> None:
    with make_client(shared_server.url) as client:
        inbox = Inbox()
        client.pubsub.subscribe(topic, inbox)
        first_connection = client.pubsub._core.client_id
        with pytest.raises(AuthError):
            client.pubsub.publish(topic, "anonymous")
        auth = client.collection("_superusers").auth_with_password(
            SUPERUSER_EMAIL, SUPERUSER_PASSWORD
        )
        assert client.auth_store.token == auth["token"]
        ack = client.pubsub.publish(topic, "signed in")  # nothing to do by hand
        # The new token went over the open socket (an ``auth`` frame): no reconnect.
        assert client.pubsub._core.client_id == first_connection
        assert inbox.data == ["signed in"]  # the subscription came along
        assert inbox.messages[0]["id"] == ack["id"]
        client.auth_store.clear()
        with pytest.raises(AuthError):
            client.pubsub.publish(topic, "signed out")
        # The re-subscribe resumes from a position (a store read): its ack may come
        # after the publish's refusal.
        wait_until(client.pubsub.is_connected, what="the topic to be subscribed again")


def test_delivery_resumes_after_a_server_restart(start_server: StartServer, topic: str) -> None:
    server = start_server()
    token = server_token(server)
    with make_client(server.url) as subscriber, make_client(server.url, token) as publisher:
        inbox = Inbox()
        subscriber.pubsub.subscribe(topic, inbox)
        publisher.pubsub.publish(topic, "before")
        inbox.wait_for(1)

        server.stop()
        wait_until(lambda: not subscriber.pubsub.is_connected(), what="the loss to be seen")
        # A publish while the server is down waits for it (within its timeout).
        result: dict[str, Any] = {}
        waiting = threading.Thread(
            target=lambda: result.update(ack=publisher.pubsub.publish(topic, "while down"))
        )
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive()
        server.restart()
        waiting.join(10)
        assert result["ack"]["topic"] == topic

        wait_until(subscriber.pubsub.is_connected, what="the subscriber to reconnect")
        publisher.pubsub.publish(topic, "after")
        # Published while the subscriber was away, or not: it resumes, so once each.
        wait_until(lambda: "after" in inbox.data, what="the message after the restart")
        time.sleep(0.1)
        assert inbox.data == ["before", "while down", "after"]


def test_a_slow_handler_does_not_stop_heartbeats(start_server: StartServer, topic: str) -> None:
    # The server pings every second and drops a peer silent for half of that.
    server = start_server("--heartbeat", "1s")
    token = server_token(server)
    with make_client(server.url, token) as client:
        inbox = Inbox()

        def slow(message: Message) -> None:
            if message["data"] == "slow":
                time.sleep(2.5)
            inbox(message)

        client.pubsub.subscribe(topic, slow)
        connection = client.pubsub._core.client_id
        client.pubsub.publish(topic, "slow")  # returns once the handler is done
        client.pubsub.publish(topic, "next")
        assert inbox.data == ["slow", "next"]
        assert client.pubsub._core.client_id == connection  # never reconnected


def test_a_request_never_hangs(topic: str) -> None:
    with make_client(f"http://127.0.0.1:{closed_port()}", "token") as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match=r"no connection to the server within 0.3s") as e:
            client.pubsub.publish(topic, 1, timeout=0.3)
        assert time.monotonic() - started < 2
        assert "refused" in str(e.value)

    # A server that accepts the socket, says ready, then never answers.
    def mute(ws: websockets.sync.server.ServerConnection) -> None:
        ws.send('{"type":"ready","clientId":"mute"}')
        for _ in ws:
            pass

    with websockets.sync.server.serve(mute, "127.0.0.1", 0) as mute_server:
        serving = threading.Thread(target=mute_server.serve_forever)
        serving.start()
        try:
            port = mute_server.socket.getsockname()[1]
            with make_client(f"http://127.0.0.1:{port}", "token") as client:
                with pytest.raises(RequestTimeout, match=r"^no reply from the server within 0.3s$"):
                    client.pubsub.publish(topic, 1, timeout=0.3)
                with pytest.raises(RequestTimeout):
                    client.pubsub.subscribe(topic, print, timeout=0.3)
                assert client.pubsub.topics == []
        finally:
            mute_server.shutdown()
            serving.join(5)


def test_disconnect_drops_subscriptions_and_a_later_call_reconnects(
    client: BosBase, topic: str
) -> None:
    inbox = Inbox()
    client.pubsub.subscribe(topic, inbox)
    client.pubsub.disconnect()
    wait_until(lambda: not client.pubsub.is_connected())
    assert client.pubsub.topics == []
    client.pubsub.subscribe(topic, inbox)
    client.pubsub.publish(topic, "again")
    assert inbox.data == ["again"]


def test_close_leaves_no_thread_and_no_socket(shared_server: ServerProcess, topic: str) -> None:
    threads_before = set(threading.enumerate())
    sockets_before = open_sockets()
    client = make_client(shared_server.url)
    client.collection("_superusers").auth_with_password(SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    inbox = Inbox()
    client.pubsub.subscribe(topic, inbox)
    client.pubsub.publish(topic, 1)
    # The socket, the dispatcher, and the token refresher (signed in: it has a token).
    assert len(client_threads()) == 3
    assert open_sockets() > sockets_before
    client.close()
    assert client_threads() == []
    assert set(threading.enumerate()) == threads_before
    assert open_sockets() == sockets_before
    with pytest.raises(ClientClosed):
        client.pubsub.publish(topic, 2)
    with pytest.raises(ClientClosed):
        client.collection("users").auth_refresh()
    client.close()  # idempotent


def test_close_fails_what_waits_with_client_closed(topic: str) -> None:
    client = make_client(f"http://127.0.0.1:{closed_port()}", "token")
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            client.pubsub.publish(topic, 1)
        except BaseException as error:
            errors.append(error)

    waiting = threading.Thread(target=publish)
    waiting.start()
    wait_until(lambda: client.pubsub._core.pending == 1)
    client.close()
    waiting.join(5)
    assert len(errors) == 1
    assert isinstance(errors[0], ClientClosed)
    assert client_threads() == []


def test_a_dropped_connection_fails_the_publish_in_flight_as_connection_closed(
    topic: str,
) -> None:
    def drop(ws: websockets.sync.server.ServerConnection) -> None:
        ws.send('{"type":"ready","clientId":"x"}')
        ws.recv()
        ws.close(1011, "gone")

    with websockets.sync.server.serve(drop, "127.0.0.1", 0) as drop_server:
        serving = threading.Thread(target=drop_server.serve_forever)
        serving.start()
        try:
            port = drop_server.socket.getsockname()[1]
            with make_client(f"http://127.0.0.1:{port}", "t", timeout=Timeouts(2.0)) as client:
                with pytest.raises(ConnectionClosed) as closed:
                    client.pubsub.publish(topic, 1)
                assert closed.value.code == 1011
                assert "may or may not have been stored" in str(closed.value)
        finally:
            drop_server.shutdown()
            serving.join(5)


def server_token(server: ServerProcess) -> str:
    from ..conftest import http_sign_in

    return http_sign_in(server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)


# --- resume and idempotent publish (docs/reference/resume.md) -------------------------


def test_messages_published_while_disconnected_are_replayed_once_in_order(
    shared_server: ServerProcess, superuser_token: str, topic: str
) -> None:
    port = int(shared_server.url.rsplit(":", 1)[1])
    proxy = ChaosProxy(port).start()
    try:
        with (
            make_client(proxy.url) as subscriber,
            make_client(shared_server.url, superuser_token) as publisher,
        ):
            inbox = Inbox()
            subscriber.pubsub.subscribe(topic, inbox)
            publisher.pubsub.publish(topic, 0)
            inbox.wait_for(1)
            proxy.refusing = True
            proxy.cut("rst")
            wait_until(lambda: not subscriber.pubsub.is_connected(), what="the loss to be seen")
            for number in range(1, 6):
                publisher.pubsub.publish(topic, number)
            proxy.refusing = False
            wait_until(subscriber.pubsub.is_connected, what="the subscriber to reconnect")
            publisher.pubsub.publish(topic, 6)
            inbox.wait_for(7)
            time.sleep(0.1)
            assert inbox.data == [0, 1, 2, 3, 4, 5, 6]
            assert [m["position"] for m in inbox.messages] == sorted(
                (m["position"] for m in inbox.messages), key=lambda p: int(p.rsplit(":", 1)[1])
            )
    finally:
        proxy.close()


def test_since_replays_from_a_position_and_an_unknown_one_is_reported(
    client: BosBase, anonymous: BosBase, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    acks = [client.pubsub.publish(topic, number) for number in range(3)]
    inbox = Inbox()
    gaps: list[ReplayGap] = []
    unsubscribe = anonymous.pubsub.subscribe(
        topic, inbox, since=acks[0]["position"], on_gap=gaps.append
    )
    inbox.wait_for(2)
    assert inbox.data == [1, 2]
    assert gaps == []
    with pytest.raises(InvalidRequest, match="does not subscribe to yet"):
        anonymous.pubsub.subscribe(topic, print, since=acks[0]["position"])
    unsubscribe()

    other = Inbox()
    anonymous.pubsub.subscribe(topic, other, since="not-a-position", on_gap=gaps.append)
    wait_until(lambda: bool(gaps), what="the gap to be reported")
    [gap] = gaps
    assert gap["topic"] == topic
    assert gap["replay"] == "unknown"
    assert gap["since"] == "not-a-position"
    client.pubsub.publish(topic, "live")
    other.wait_for(1)
    assert other.data == ["live"]  # nothing replayed, live goes on

    anonymous.pubsub.unsubscribe(topic)
    with caplog.at_level(logging.WARNING, logger="bosbase_pubsub.client"):
        anonymous.pubsub.subscribe(topic, print, since="not-a-position")
        wait_until(lambda: "replay unknown" in caplog.text, what="a warning without on_gap")


def test_a_publish_cut_off_before_its_ack_is_resent_and_stored_once(
    shared_server: ServerProcess, superuser_token: str, topic: str
) -> None:
    port = int(shared_server.url.rsplit(":", 1)[1])
    proxy = ChaosProxy(port).start()
    try:
        with (
            make_client(proxy.url, superuser_token) as publisher,
            make_client(shared_server.url) as subscriber,
        ):
            inbox = Inbox()
            subscriber.pubsub.subscribe(topic, inbox)
            publisher.pubsub.publish(topic, 0)  # the server shows it keeps keys
            acks: list[PublishAck] = []
            errors: list[BaseException] = []

            def publish_many(start: int) -> None:
                for number in range(start, start + 200):
                    try:
                        acks.append(publisher.pubsub.publish(topic, number))
                    except BaseException as error:
                        errors.append(error)

            threads = [threading.Thread(target=publish_many, args=(k * 1000,)) for k in (1, 2)]
            for thread in threads:
                thread.start()
            for _ in range(4):
                time.sleep(0.05)
                proxy.cut("rst")
            for thread in threads:
                thread.join(30)
            assert errors == []
            assert len(acks) == 400
            inbox.wait_for(401)
            time.sleep(0.2)
            assert len(inbox.data) == 401  # each once
            for start in (1000, 2000):  # each thread's messages in its order
                assert [n for n in inbox.data if start <= n < start + 200] == list(
                    range(start, start + 200)
                )
            assert proxy.cuts >= 1
    finally:
        proxy.close()


def test_close_stops_calling_handlers_once_it_stops_waiting_for_them(
    shared_server: ServerProcess, superuser_token: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bosbase_pubsub.client import _sync

    monkeypatch.setattr(_sync, "DRAIN_TIMEOUT", 0.3)
    calls: list[float] = []
    started = threading.Event()

    def slow(message: Message) -> None:
        calls.append(time.monotonic())
        started.set()
        time.sleep(0.5)

    client = make_client(shared_server.url, superuser_token)
    client.pubsub.subscribe(topic, slow)
    publisher = make_client(shared_server.url, superuser_token)
    try:
        for n in range(10):
            publisher.pubsub.publish(topic, n)
        assert started.wait(10)
        client.close()
        returned = time.monotonic()
        time.sleep(1.5)  # three more handler calls, were the dispatcher still going
        assert [at for at in calls if at > returned] == []
        assert len(calls) < 10
    finally:
        publisher.close()
