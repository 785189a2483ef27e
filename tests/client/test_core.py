"""The I/O-free core on its own: no event loop, no socket, no clock.

Each test plays the server by hand: it reads the frames the core wants to
send, and feeds it the frames a server would answer with.
"""

from __future__ import annotations

import random
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bosbase_pubsub import protocol
from bosbase_pubsub.client._config import Reconnect, Timeouts, backoff
from bosbase_pubsub.client._core import (
    CloseSocket,
    Connected,
    Deliver,
    Disconnected,
    Event,
    Gap,
    PubSubCore,
    Rejected,
    Resolved,
    ServerNotice,
    State,
    SubscriptionLost,
)
from bosbase_pubsub.client._exceptions import (
    AuthError,
    ClientClosed,
    ConnectionClosed,
    InvalidRequest,
    RequestTimeout,
    ServerError,
)

TIMEOUTS = Timeouts(request=10.0, connect=5.0)
RECONNECT = Reconnect(initial_delay=1.0, max_delay=8.0, factor=2.0, jitter=0.5)


def make_core(token: str = "") -> PubSubCore:
    core = PubSubCore(
        "http://127.0.0.1:8090", timeouts=TIMEOUTS, reconnect=RECONNECT, rng=random.Random(7)
    )
    if token:
        core.set_token(token, 0.0)
    return core


def sent(core: PubSubCore) -> list[dict[str, Any]]:
    return [orjson.loads(frame) for frame in core.data_to_send()]


def frame(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def of_type(events: list[Event], kind: type) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


def connect(core: PubSubCore, now: float = 0.0, client_id: str = "c1") -> list[dict[str, Any]]:
    """Open a connection and answer ``ready``; returns what the core then sent."""
    assert core.connect_at is not None
    assert core.connect_at <= now
    core.start_connecting(now)
    core.receive(frame(type="ready", clientId=client_id), now)
    return sent(core)


def ack_subscribes(core: PubSubCore, frames: list[dict[str, Any]], now: float = 0.0) -> None:
    for envelope in frames:
        if envelope["type"] == "subscribe":
            core.receive(frame(type="subscribed", requestId=envelope["requestId"]), now)


# --- connecting -----------------------------------------------------------------------


def test_a_new_core_is_idle_and_wants_no_connection() -> None:
    core = make_core()
    assert core.state is State.IDLE
    assert core.connect_at is None
    assert core.next_deadline() is None
    assert not core.is_connected


def test_a_request_asks_for_a_connection_and_nothing_is_sent_before_ready() -> None:
    core = make_core(token="tok")
    request_id = core.publish("chat", {"a": 1}, 1.0)
    assert core.state is State.WAITING
    assert core.connect_at == 1.0
    handshake = core.start_connecting(1.0)
    assert handshake.url == "ws://127.0.0.1:8090/api/pubsub"
    headers = dict(handshake.headers)
    assert headers["Authorization"] == "tok"
    assert headers["User-Agent"].startswith("bosbase-pubsub-python")
    assert core.data_to_send() == []
    core.receive(frame(type="ready", clientId="abc"), 1.1)
    [publish] = sent(core)
    key = publish.pop("key")
    assert re.fullmatch(r"[0-9a-f]{32}", key)  # a fresh idempotency key per publish
    assert publish == {
        "type": "publish",
        "topic": "chat",
        "requestId": request_id,
        "data": {"a": 1},
    }
    assert core.client_id == "abc"
    assert core.is_connected  # no topic to re-subscribe: open at once


def test_https_becomes_wss_and_a_path_prefix_is_kept() -> None:
    core = PubSubCore("https://example.com/base", timeouts=TIMEOUTS, reconnect=RECONNECT)
    core.publish("t", 1, 0.0)
    assert core.start_connecting(0.0).url == "wss://example.com/base/api/pubsub"


def test_requests_are_pipelined_and_replies_matched_by_request_id_in_any_order() -> None:
    core = make_core()
    first = core.publish("a", 1, 0.0)
    connect(core)
    second = core.publish("b", 2, 0.0)
    third = core.publish("c", 3, 0.0)
    assert [f["requestId"] for f in sent(core)] == [second, third]
    ack = {"id": "m3", "topic": "c", "created": "2026-01-01 00:00:00.000Z"}
    core.receive(frame(type="published", requestId=third, **ack), 0.1)
    core.receive(frame(type="published", requestId=first, id="m1", topic="a", created="x"), 0.1)
    core.receive(frame(type="error", requestId=second, message="payload too large"), 0.1)
    events = core.events_received()
    resolved = {e.request_id: e.value for e in of_type(events, Resolved)}
    assert resolved[third] == ack
    assert resolved[first] == {"id": "m1", "topic": "a", "created": "x"}
    [rejected] = of_type(events, Rejected)
    assert rejected.request_id == second
    assert type(rejected.error) is ServerError
    assert rejected.error.message == "payload too large"
    assert core.pending == 0


def test_authentication_required_is_an_auth_error() -> None:
    core = make_core()
    request_id = core.publish("a", 1, 0.0)
    connect(core)
    core.receive(frame(type="error", requestId=request_id, message=protocol.ERR_AUTH_REQUIRED), 0)
    [rejected] = of_type(core.events_received(), Rejected)
    assert isinstance(rejected.error, AuthError)
    assert str(rejected.error) == "authentication required to publish"


def test_late_replies_and_unknown_frames_are_ignored() -> None:
    core = make_core()
    core.publish("a", 1, 0.0)
    connect(core)
    core.events_received()
    for raw in (b"not json", b"[1,2]", frame(type="published", requestId="nope"), frame(type="x")):
        core.receive(raw, 0.0)
    assert core.events_received() == []
    core.receive(frame(type="error", message="invalid message format"), 0.0)
    assert core.events_received() == [ServerNotice("invalid message format")]


# --- subscriptions --------------------------------------------------------------------


def test_subscribe_delivers_to_every_listener_of_the_topic_only() -> None:
    core = make_core()
    _, request_id = core.subscribe("chat", "h1", 0.0)
    assert request_id is not None
    frames = connect(core)
    assert frames == [{"type": "subscribe", "topic": "chat", "requestId": request_id}]
    assert not core.is_connected  # not before the subscription is confirmed
    core.receive(frame(type="subscribed", requestId=request_id), 0.0)
    assert core.is_connected
    _, again = core.subscribe("chat", "h2", 0.0)
    assert again is None  # already subscribed: no request, no wait
    core.events_received()
    message = {"type": "message", "id": "m1", "topic": "chat", "data": [1], "created": "t"}
    core.receive(orjson.dumps(message), 0.0)
    core.receive(frame(type="message", id="m2", topic="elsewhere", data=1, created="t"), 0.0)
    [deliver] = core.events_received()
    assert isinstance(deliver, Deliver)
    assert deliver.message == {"id": "m1", "topic": "chat", "data": [1], "created": "t"}
    assert [listener.handler for listener in deliver.listeners] == ["h1", "h2"]


def test_the_last_listener_removed_unsubscribes_the_topic() -> None:
    core = make_core()
    first, _ = core.subscribe("chat", "h1", 0.0)
    ack_subscribes(core, connect(core))
    second, _ = core.subscribe("chat", "h2", 0.0)
    core.remove_listener(first, 0.0)
    assert not first.active
    assert sent(core) == []
    core.remove_listener(second, 0.0)
    [unsubscribe] = sent(core)
    assert unsubscribe["type"] == "unsubscribe"
    assert unsubscribe["topic"] == "chat"
    assert core.topics == []
    core.receive(frame(type="message", id="m", topic="chat", data=1, created="t"), 0.0)
    assert of_type(core.events_received(), Deliver) == []


def test_unsubscribe_without_a_topic_leaves_every_topic() -> None:
    core = make_core()
    a, _ = core.subscribe("a", "h", 0.0)
    b, _ = core.subscribe("b", "h", 0.0)
    ack_subscribes(core, connect(core))
    core.unsubscribe(None, 0.0)
    [frame_] = sent(core)
    assert frame_["type"] == "unsubscribe"
    assert "topic" not in frame_
    assert not a.active
    assert not b.active
    assert core.topics == []


def test_a_refused_subscribe_removes_its_listener() -> None:
    core = make_core()
    listener, request_id = core.subscribe("t", "h", 0.0)
    connect(core)
    core.receive(frame(type="error", requestId=request_id, message="too many subscriptions"), 0)
    [rejected] = of_type(core.events_received(), Rejected)
    assert rejected.error.message == "too many subscriptions"
    assert not listener.active
    assert core.topics == []
    assert core.is_connected


def test_topics_are_trimmed_and_an_empty_one_is_refused_before_sending() -> None:
    core = make_core()
    core.subscribe("  spaced  ", "h", 0.0)
    assert core.topics == ["spaced"]
    with pytest.raises(InvalidRequest, match=r"^topic must be set$"):
        core.subscribe("   ", "h", 0.0)
    with pytest.raises(InvalidRequest, match=r"^topic must be set$"):
        core.publish("", 1, 0.0)


def test_without_positions_nothing_is_resumed_nor_deduplicated() -> None:
    # An official server sends no ``position``: the client behaves as before.
    core = make_core()
    core.subscribe("t", "h", 0.0)
    ack_subscribes(core, connect(core))
    for message_id in ("m1", "m1"):
        core.receive(frame(type="message", id=message_id, topic="t", data=1, created="c"), 0)
    delivered = of_type(core.events_received(), Deliver)
    assert [d.message for d in delivered] == [
        {"id": "m1", "topic": "t", "data": 1, "created": "c"}
    ] * 2
    assert core._topics["t"].position is None
    core.connection_lost(None, 1.0)
    assert core.connect_at is not None
    [again] = connect(core, core.connect_at)
    assert "since" not in again


# --- publishing -----------------------------------------------------------------------


def test_body_is_merged_into_the_envelope_but_cannot_override_its_fields() -> None:
    core = make_core()
    core.publish("t", {"x": 1}, 0.0, body={"meta": {"k": "v"}})
    [envelope] = connect(core)
    assert envelope["meta"] == {"k": "v"}
    assert envelope["data"] == {"x": 1}
    for key in ("type", "topic", "data", "requestId", "key"):
        with pytest.raises(InvalidRequest, match=key):
            core.publish("t", 1, 0.0, body={key: "x"})


def test_payloads_are_checked_with_the_servers_own_messages() -> None:
    core = make_core()
    with pytest.raises(InvalidRequest, match=r"^payload too large$"):
        core.publish("t", "x" * (protocol.MAX_PAYLOAD_BYTES + 1), 0.0)
    with pytest.raises(InvalidRequest, match=r"^payload must be valid JSON$"):
        core.publish("t", {1, 2}, 0.0)
    assert core.pending == 0


def test_integers_beyond_64_bits_stay_exact_both_ways() -> None:
    big = 2**70 + 1
    core = make_core()
    core.subscribe("t", "h", 0.0)
    core.publish("t", [big], 0.0)
    frames = core.data_to_send()
    assert frames == []
    core.start_connecting(0.0)
    core.receive(frame(type="ready", clientId="c"), 0.0)
    publish = next(f for f in core.data_to_send() if b'"publish"' in f)
    assert str(big).encode() in publish
    core.receive(b'{"type":"message","id":"m","topic":"t","data":[%d],"created":"c"}' % big, 0)
    [deliver] = of_type(core.events_received(), Deliver)
    assert deliver.message["data"] == [big]


def test_a_publish_ack_waits_for_the_publishers_own_message() -> None:
    core = make_core()
    core.subscribe("t", "h", 0.0)
    ack_subscribes(core, connect(core))
    core.events_received()
    request_id = core.publish("t", 1, 0.0)
    core.receive(frame(type="published", requestId=request_id, id="m1", topic="t", created="c"), 0)
    assert core.events_received() == []  # held: the message follows the ack
    core.receive(frame(type="message", id="m1", topic="t", data=1, created="c"), 0.0)
    deliver, resolved = core.events_received()
    assert isinstance(deliver, Deliver)
    assert resolved == Resolved(request_id, {"id": "m1", "topic": "t", "created": "c"})


def test_a_held_ack_is_answered_anyway_if_its_message_never_comes() -> None:
    core = make_core()
    core.subscribe("t", "h", 0.0)
    ack_subscribes(core, connect(core))
    request_id = core.publish("t", 1, 0.0)
    core.receive(frame(type="published", requestId=request_id, id="m1", topic="t", created="c"), 0)
    core.events_received()
    deadline = core.next_deadline()
    assert deadline is not None
    assert deadline <= 2.0
    core.tick(deadline)
    assert of_type(core.events_received(), Resolved)[0].request_id == request_id


# --- timeouts -------------------------------------------------------------------------


def test_a_request_without_a_connection_times_out_naming_the_last_error() -> None:
    core = make_core()
    request_id = core.publish("t", 1, 0.0, timeout=3.0)
    core.start_connecting(0.0)
    core.connection_failed(ConnectionClosed("could not connect: Connection refused"), 0.1)
    assert core.next_deadline() is not None
    core.tick(2.9)
    assert of_type(core.events_received(), Rejected) == []
    core.tick(3.0)
    [rejected] = of_type(core.events_received(), Rejected)
    assert rejected.request_id == request_id
    assert isinstance(rejected.error, RequestTimeout)
    assert isinstance(rejected.error, TimeoutError)
    assert "no connection to the server within 3s" in str(rejected.error)
    assert "Connection refused" in str(rejected.error)


def test_a_publish_sent_then_cut_off_times_out_saying_it_may_be_stored() -> None:
    core = make_core()
    first = core.publish("t", 0, 0.0)
    connect(core)
    core.receive(
        frame(type="published", requestId=first, id="x", topic="t", created="c", position="E:1"),
        0.0,
    )
    core.events_received()
    cut_off = core.publish("t", 1, 0.0, timeout=3.0)
    sent(core)
    core.connection_lost(None, 1.0)  # queued to be resent: no connection comes back
    core.connection_failed(ConnectionClosed("could not connect: Connection refused"), 1.1)
    core.tick(3.0)
    [rejected] = of_type(core.events_received(), Rejected)
    assert rejected.request_id == cut_off
    assert isinstance(rejected.error, RequestTimeout)
    assert "may or may not have been stored (resend it with the same key)" in str(rejected.error)
    assert "no connection to the server" not in str(rejected.error)


def test_a_sent_request_without_a_reply_times_out() -> None:
    core = make_core()
    request_id = core.publish("t", 1, 0.0)
    connect(core)
    core.tick(10.0)
    [rejected] = of_type(core.events_received(), Rejected)
    assert rejected.request_id == request_id
    assert str(rejected.error) == "no reply from the server within 10s"


def test_no_ready_in_time_closes_the_attempt_and_backs_off() -> None:
    core = make_core()
    core.subscribe("t", "h", 0.0)
    core.start_connecting(0.0)
    core.tick(5.0)
    assert CloseSocket(1000, "connect timeout") in core.events_received()
    core.connection_lost(None, 5.1)
    assert core.state is State.WAITING
    assert core.last_error is not None
    assert "did not get ready within 5s" in str(core.last_error)
    assert core.connect_at is not None
    assert 5.6 <= core.connect_at <= 6.1


def test_cancel_forgets_the_request_and_the_listener_of_a_subscribe() -> None:
    core = make_core()
    listener, request_id = core.subscribe("t", "h", 0.0)
    assert request_id is not None
    core.cancel(request_id, 0.0)
    assert core.pending == 0
    assert not listener.active
    assert core.topics == []


# --- losing the connection ------------------------------------------------------------


def test_after_a_loss_topics_are_subscribed_again_and_only_then_connected() -> None:
    core = make_core()
    core.subscribe("a", "h", 0.0)
    core.subscribe("b", "h", 0.0)
    ack_subscribes(core, connect(core))
    assert core.is_connected
    core.connection_lost(None, 1.0, code=1001, reason="server shutting down")
    [lost] = of_type(core.events_received(), Disconnected)
    assert isinstance(lost.error, ConnectionClosed)
    assert lost.error.code == 1001
    assert lost.established
    assert not core.is_connected
    assert core.connect_at is not None
    assert lost.retry_in is not None
    assert core.connect_at == 1.0 + lost.retry_in
    frames = connect(core, core.connect_at, client_id="c2")
    assert sorted(f["topic"] for f in frames) == ["a", "b"]
    assert not core.is_connected
    core.receive(frame(type="subscribed", requestId=frames[0]["requestId"]), 2.0)
    assert not core.is_connected
    core.receive(frame(type="subscribed", requestId=frames[1]["requestId"]), 2.0)
    assert core.is_connected
    assert Connected("c2") in core.events_received()


def test_a_publish_in_flight_fails_but_a_queued_one_waits_for_the_next_connection() -> None:
    core = make_core()
    in_flight = core.publish("t", 1, 0.0)
    connect(core)
    core.connection_lost(None, 1.0)
    queued = core.publish("t", 2, 1.5)
    [rejected] = of_type(core.events_received(), Rejected)
    assert rejected.request_id == in_flight
    assert isinstance(rejected.error, ConnectionClosed)
    assert "may or may not have been stored" in str(rejected.error)
    assert core.connect_at is not None
    [again] = connect(core, core.connect_at)
    assert again["requestId"] == queued
    assert again["data"] == 2


def test_a_subscribe_in_flight_is_sent_again_on_the_next_connection() -> None:
    core = make_core()
    listener, request_id = core.subscribe("t", "h", 0.0)
    connect(core)
    core.connection_lost(None, 1.0)
    assert of_type(core.events_received(), Rejected) == []
    assert core.connect_at is not None
    [again] = connect(core, core.connect_at)
    assert again["requestId"] == request_id  # no duplicate re-subscribe
    core.receive(frame(type="subscribed", requestId=request_id), 5.0)
    assert Resolved(request_id, None) in core.events_received()
    assert listener.active
    assert core.is_connected


def test_a_refused_re_subscribe_drops_the_topic_and_says_so() -> None:
    core = make_core()
    listener, _ = core.subscribe("t", "h", 0.0)
    ack_subscribes(core, connect(core))
    core.connection_lost(None, 1.0)
    assert core.connect_at is not None
    [again] = connect(core, core.connect_at)
    core.receive(frame(type="error", requestId=again["requestId"], message="no more"), 3.0)
    [lost] = of_type(core.events_received(), SubscriptionLost)
    assert lost.topic == "t"
    assert lost.error.message == "no more"
    assert not listener.active
    assert core.is_connected


def test_reconnect_delays_grow_with_jitter_up_to_the_cap_and_restart_once_connected() -> None:
    core = make_core()
    core.subscribe("t", "h", 0.0)
    now = 0.0
    delays = []
    for _ in range(6):
        core.start_connecting(now)
        core.connection_failed(ConnectionClosed("refused"), now)
        assert core.connect_at is not None
        delays.append(core.connect_at - now)
        now = core.connect_at
    bounds = [1, 2, 4, 8, 8, 8]
    for delay, cap in zip(delays, bounds, strict=True):
        assert cap / 2 <= delay <= cap
    frames = connect(core, now)
    ack_subscribes(core, frames, now)
    core.connection_lost(None, now)
    assert core.connect_at is not None
    assert core.connect_at - now <= 1.0


def test_nothing_subscribed_and_nothing_pending_means_no_reconnect() -> None:
    core = make_core()
    request_id = core.publish("t", 1, 0.0)
    connect(core)
    core.receive(frame(type="published", requestId=request_id, id="m", topic="t", created="c"), 0)
    core.connection_lost(None, 1.0)
    assert core.state is State.IDLE
    assert core.connect_at is None
    core.publish("t", 2, 2.0)
    assert core.connect_at == 2.0


def test_backoff_is_pure_and_bounded() -> None:
    policy = Reconnect(initial_delay=0.5, max_delay=4.0, factor=3.0, jitter=1.0)
    first = backoff(policy, random.Random(1))
    second = backoff(policy, random.Random(1))
    a = [next(first) for _ in range(8)]
    assert a == [next(second) for _ in range(8)]
    for delay, cap in zip(a, [0.5, 1.5, 4, 4, 4, 4, 4, 4], strict=True):
        assert 0 <= delay <= cap
    steady = backoff(Reconnect(initial_delay=1, max_delay=4, jitter=0), None)
    assert [next(steady) for _ in range(4)] == [1, 2, 4, 4]


# --- identity and handshake changes ---------------------------------------------------


def test_a_new_token_reconnects_after_the_publishes_in_flight_are_acked() -> None:
    core = make_core()
    core.subscribe("t", "h", 0.0)
    ack_subscribes(core, connect(core))
    in_flight = core.publish("other", 1, 1.0)
    sent(core)
    core.set_token("new-token", 1.0)
    assert of_type(core.events_received(), CloseSocket) == []  # drains first
    waiting = core.publish("other", 2, 1.0)
    assert core.data_to_send() == []  # held for the new connection
    core.receive(
        frame(type="published", requestId=in_flight, id="m1", topic="other", created="c"), 1.1
    )
    events = core.events_received()
    assert Resolved(in_flight, {"id": "m1", "topic": "other", "created": "c"}) in events
    assert CloseSocket(1000, "reconnecting with a new identity") in events
    core.connection_lost(None, 1.2, code=1000)
    lost = of_type(core.events_received(), Disconnected)
    assert lost == [Disconnected(None, 0.0, True)]
    assert core.connect_at == 1.2  # at once, no back-off
    handshake = core.start_connecting(1.2)
    assert dict(handshake.headers)["Authorization"] == "new-token"
    core.receive(frame(type="ready", clientId="c2"), 1.3)
    frames = sent(core)
    assert [f["type"] for f in frames] == ["subscribe", "publish"]
    assert frames[1]["requestId"] == waiting


def connect_to_ours(core: PubSubCore, now: float = 0.0) -> list[dict[str, Any]]:
    """``connect`` to a server with the extensions (its ``ready`` names a position)."""
    core.start_connecting(now)
    core.receive(frame(type="ready", clientId="c1", position="e:0"), now)
    return sent(core)


def test_a_new_token_goes_to_our_server_on_the_open_socket_before_later_frames() -> None:
    core = make_core(token="old")
    core.subscribe("t", "h", 0.0)
    ack_subscribes(core, connect_to_ours(core))
    core.events_received()
    core.set_token("fresh", 1.0)
    publish_id = core.publish("t", 1, 1.0)
    [auth] = sent(core)  # the publish waits: it must act with the identity the token gives
    assert auth == {"type": "auth", "requestId": auth["requestId"], "token": "fresh"}
    core.receive(
        frame(type="authenticated", requestId=auth["requestId"], recordId="u1", expires=9), 1.1
    )
    [publish] = sent(core)
    assert publish["requestId"] == publish_id  # then on the same socket
    assert core.server_renews_tokens is True
    assert of_type(core.events_received(), CloseSocket) == []  # no reconnect
    assert core.is_connected
    assert core.pending == 1  # only the publish is left
    # A later reconnect carries the new token in its handshake.
    core.connection_lost(None, 2.0, code=1006)
    core.tick(5.0)
    assert dict(core.start_connecting(5.0).headers)["Authorization"] == "fresh"


def test_a_request_made_after_a_refused_token_goes_on_the_reconnect_not_the_old_identity() -> None:
    core = make_core(token="old")
    core.subscribe("t", "h", 0.0)
    ack_subscribes(core, connect_to_ours(core))
    core.events_received()
    core.set_token("not-a-token", 1.0)
    publish_id = core.publish("t", 1, 1.0)
    [auth] = sent(core)
    core.receive(
        frame(type="error", requestId=auth["requestId"], message="invalid or expired auth token"),
        1.1,
    )
    assert sent(core) == []  # not on the socket that still has the old identity
    assert CloseSocket(1000, "reconnecting with a new identity") in core.events_received()
    core.connection_lost(None, 1.2)
    handshake = core.start_connecting(1.2)
    assert dict(handshake.headers)["Authorization"] == "not-a-token"
    core.receive(frame(type="ready", clientId="c2", position="e:0"), 1.3)
    assert publish_id in [f.get("requestId") for f in sent(core)]


@pytest.mark.parametrize(
    ("answer", "renews_later"),
    [
        ("unsupported pubsub message type", False),  # an official or older server
        ("invalid or expired auth token", None),
        (None, None),  # no answer in time
    ],
)
def test_a_refused_auth_frame_hands_the_token_over_with_a_reconnect(
    answer: str | None, renews_later: bool | None
) -> None:
    core = make_core(token="old")
    core.subscribe("t", "h", 0.0)
    ack_subscribes(core, connect_to_ours(core))
    core.events_received()
    core.set_token("fresh", 1.0)
    [auth] = sent(core)
    if answer is None:
        core.tick(1.0 + TIMEOUTS.request)
    else:
        core.receive(frame(type="error", requestId=auth["requestId"], message=answer), 1.1)
    events = core.events_received()
    assert CloseSocket(1000, "reconnecting with a new identity") in events
    assert of_type(events, Rejected) == []  # nobody waited for it
    assert core.server_renews_tokens is renews_later
    core.connection_lost(None, 12.0, code=1000)
    assert dict(core.start_connecting(12.0).headers)["Authorization"] == "fresh"
    core.receive(frame(type="ready", clientId="c2", position="e:0"), 12.0)
    ack_subscribes(core, sent(core), 12.0)
    core.events_received()
    core.set_token("newer", 13.0)
    if renews_later is False:
        assert sent(core) == []  # known not to take it: straight to a reconnect
        assert CloseSocket(1000, "reconnecting with a new identity") in core.events_received()
    else:
        assert [f["type"] for f in sent(core)] == ["auth"]


def test_a_subscription_the_server_withdraws_is_lost_with_its_listeners() -> None:
    core = make_core(token="t")
    listener, _ = core.subscribe("inbox", "h", 0.0)
    ack_subscribes(core, connect_to_ours(core))
    core.events_received()
    core.receive(frame(type="error", topic="inbox", message="forbidden by the topic rules"), 1.0)
    [lost] = of_type(core.events_received(), SubscriptionLost)
    assert lost.topic == "inbox"
    assert str(lost.error) == "forbidden by the topic rules"
    assert core.topics == []
    assert not listener.active
    # A later message on it is not delivered; another error without a topic is a notice.
    core.receive(frame(type="message", topic="inbox", id="m", data=1), 1.1)
    core.receive(frame(type="error", message="something else"), 1.2)
    events = core.events_received()
    assert of_type(events, Deliver) == []
    assert of_type(events, ServerNotice) == [ServerNotice("something else")]


def test_a_token_change_while_connecting_reconnects_at_ready() -> None:
    core = make_core(token="old")
    core.subscribe("t", "h", 0.0)
    core.start_connecting(0.0)
    core.set_token("", 0.1)  # signed out meanwhile
    core.receive(frame(type="ready", clientId="c"), 0.2)
    assert CloseSocket(1000, "reconnecting with a new identity") in core.events_received()
    assert core.data_to_send() == []
    core.connection_lost(None, 0.3)
    handshake = core.start_connecting(0.3)
    assert "Authorization" not in dict(handshake.headers)


def test_query_and_headers_go_into_the_handshake_and_only_new_values_reconnect() -> None:
    core = make_core()
    core.update_handshake({"room": "1"}, {"X-App": "demo"}, 0.0)
    core.publish("t", 1, 0.0)
    handshake = core.start_connecting(0.0)
    assert handshake.url.endswith("/api/pubsub?room=1")
    assert dict(handshake.headers)["X-App"] == "demo"
    core.receive(frame(type="ready", clientId="c"), 0.0)
    core.events_received()
    core.update_handshake({"room": "1"}, None, 0.0)
    assert of_type(core.events_received(), CloseSocket) == []
    core.update_handshake({"room": "2"}, None, 0.0)
    assert of_type(core.events_received(), CloseSocket) == []  # the publish is in flight
    core.receive(frame(type="published", requestId="1", id="m", topic="t", created="c"), 0)
    assert of_type(core.events_received(), CloseSocket) != []
    with pytest.raises(InvalidRequest):
        core.update_handshake({"n": 1}, None, 0.0)  # type: ignore[dict-item]


# --- disconnect and close -------------------------------------------------------------


def test_disconnect_fails_what_waits_drops_subscriptions_and_closes() -> None:
    core = make_core()
    listener, _ = core.subscribe("t", "h", 0.0)
    ack_subscribes(core, connect(core))
    waiting = core.publish("t", 1, 0.0)
    assert core.is_connected
    core.disconnect(0.5)
    assert not core.is_connected  # at once, not when the socket has closed
    events = core.events_received()
    [rejected] = of_type(events, Rejected)
    assert rejected.request_id == waiting
    assert str(rejected.error) == "disconnected by the client"
    assert CloseSocket(1000, "client disconnected") in events
    assert not listener.active
    core.connection_lost(None, 0.6)
    assert core.state is State.IDLE
    assert core.connect_at is None


def test_close_fails_everything_with_client_closed_and_refuses_later_calls() -> None:
    core = make_core()
    core.subscribe("t", "h", 0.0)
    connect(core)
    core.close(0.5)
    events = core.events_received()
    assert all(isinstance(e.error, ClientClosed) for e in of_type(events, Rejected))
    assert CloseSocket(1000, "client closed") in events
    core.connection_lost(None, 0.6)
    assert core.state is State.CLOSED
    with pytest.raises(ClientClosed):
        core.publish("t", 1, 1.0)
    with pytest.raises(ClientClosed):
        core.subscribe("t", "h", 1.0)
    core.close(1.0)  # idempotent


# --- robustness -----------------------------------------------------------------------

json_values = st.recursive(  # orjson writes 64-bit integers
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        st.dictionaries(
            st.sampled_from(["type", "topic", "id", "requestId", "data", "message", "clientId"]),
            json_values,
        ).map(orjson.dumps),
    )
)
def test_no_frame_from_the_server_makes_the_core_raise(raw: bytes) -> None:
    core = make_core()
    core.subscribe("t", "h", 0.0)
    core.publish("t", 1, 0.0)
    core.start_connecting(0.0)
    core.receive(frame(type="ready", clientId="c"), 0.0)
    for _ in range(2):
        core.receive(raw, 0.0)
    core.events_received()
    core.tick(100.0)


def test_the_backlog_warning_grows_tenfold_and_keeps_quiet() -> None:
    from bosbase_pubsub.client._core import BacklogMonitor

    monitor = BacklogMonitor()
    assert monitor.check(9_999, 0.0) is None
    assert monitor.check(10_000, 1.0) == (
        "10000 messages wait for a slow handler (they are kept in memory)"
    )
    assert monitor.check(150_000, 2.0) is None  # within the quiet minute
    assert monitor.check(150_000, 61.0) is not None
    assert monitor.check(900_000, 200.0) is None  # below the next threshold (1,000,000)
    assert monitor.check(0, 300.0) is None  # drained: starts over
    assert monitor.check(10_000, 400.0) is not None


# --- resume (docs/reference/resume.md) ------------------------------------------------


def message(topic: str, position: str, data: Any = None, id_: str = "") -> bytes:
    return frame(
        type="message",
        id=id_ or f"id{position}",
        topic=topic,
        data=data,
        created="c",
        position=position,
    )


def subscribed(request_id: str, position: str, replay: str | None = None) -> bytes:
    fields: dict[str, Any] = {"type": "subscribed", "requestId": request_id, "position": position}
    if replay is not None:
        fields["replay"] = replay
    return frame(**fields)


def delivered(core: PubSubCore) -> list[Any]:
    return [d.message["data"] for d in of_type(core.events_received(), Deliver)]


def test_a_re_subscribe_resumes_from_the_last_message_delivered() -> None:
    core = make_core()
    core.subscribe("a", "h", 0.0)
    core.subscribe("b", "h", 0.0)
    frames = connect(core)
    assert all("since" not in f for f in frames)
    core.receive(subscribed(frames[0]["requestId"], "E:10"), 0.0)
    core.receive(subscribed(frames[1]["requestId"], "E:10"), 0.0)
    core.receive(message("a", "E:11", 1), 0.0)
    core.receive(message("a", "E:13", 2), 0.0)
    assert delivered(core) == [1, 2]
    [positioned] = [d for d in [core._topics["a"]]]
    assert positioned.position == "E:13"
    core.connection_lost(None, 1.0)
    assert core.connect_at is not None
    frames = connect(core, core.connect_at)
    since = {f["topic"]: f["since"] for f in frames}
    # "b" got nothing: it resumes from where its live delivery began.
    assert since == {"a": "E:13", "b": "E:10"}
    core.receive(subscribed(frames[0]["requestId"], since[frames[0]["topic"]], "complete"), 2)
    core.receive(subscribed(frames[1]["requestId"], since[frames[1]["topic"]], "complete"), 2)
    assert core.is_connected
    assert of_type(core.events_received(), Gap) == []


def test_the_resume_position_follows_deliveries_made_while_resubscribing() -> None:
    core = make_core()
    core.subscribe("a", "h", 0.0)
    ack_frames = connect(core)
    core.receive(subscribed(ack_frames[0]["requestId"], "E:1"), 0.0)
    core.connection_lost(None, 1.0)
    assert core.connect_at is not None
    [first] = connect(core, core.connect_at)
    assert first["since"] == "E:1"
    core.receive(subscribed(first["requestId"], "E:1", "complete"), 2.0)
    core.receive(message("a", "E:5", "replayed"), 2.0)
    core.connection_lost(None, 3.0)  # again, mid-replay
    assert core.connect_at is not None
    [second] = connect(core, core.connect_at)
    assert second["since"] == "E:5"


def test_a_subscribe_in_flight_is_resent_with_the_position_known_by_then() -> None:
    core = make_core()
    core.subscribe("a", "h", 0.0, since="E:3")
    [first] = connect(core)
    assert first["since"] == "E:3"
    core.connection_lost(None, 1.0)
    assert core.connect_at is not None
    [again] = connect(core, core.connect_at)
    assert again["requestId"] == first["requestId"]
    assert again["since"] == "E:3"


def test_messages_not_after_the_last_position_are_dropped() -> None:
    core = make_core()
    core.subscribe("a", "h", 0.0)
    frames = connect(core)
    core.receive(subscribed(frames[0]["requestId"], "E:10"), 0.0)
    core.receive(message("a", "E:9", "before the subscription"), 0.0)
    core.receive(message("a", "E:10", "the start itself"), 0.0)
    core.receive(message("a", "E:11", 1), 0.0)
    core.receive(message("a", "E:11", "again"), 0.0)
    core.receive(message("a", "E:12", 2), 0.0)
    core.receive(message("a", "E:2", "older"), 0.0)
    assert delivered(core) == [1, 2]
    assert core._topics["a"].position == "E:12"


def test_positions_of_another_shape_or_epoch_are_trusted_as_they_come() -> None:
    core = make_core()
    core.subscribe("a", "h", 0.0)
    frames = connect(core)
    core.receive(subscribed(frames[0]["requestId"], "E:10"), 0.0)
    core.receive(message("a", "F:3", "new epoch"), 0.0)
    core.receive(message("a", "opaque", "no shape"), 0.0)
    core.receive(message("a", "opaque", "no shape again"), 0.0)  # cannot tell: delivered
    assert delivered(core) == ["new epoch", "no shape", "no shape again"]


def test_delivered_messages_and_acks_carry_their_position() -> None:
    core = make_core()
    core.subscribe("a", "h", 0.0)
    frames = connect(core)
    core.receive(subscribed(frames[0]["requestId"], "E:1"), 0.0)
    core.events_received()
    request_id = core.publish("a", 5, 0.0)
    core.data_to_send()
    core.receive(
        frame(
            type="published", requestId=request_id, id="m", topic="a", created="c", position="E:2"
        ),
        0.0,
    )
    core.receive(message("a", "E:2", 5, id_="m"), 0.0)
    deliver, resolved = core.events_received()
    assert isinstance(deliver, Deliver)
    assert deliver.message == {
        "id": "m",
        "topic": "a",
        "data": 5,
        "created": "c",
        "position": "E:2",
    }
    assert resolved == Resolved(
        request_id, {"id": "m", "topic": "a", "created": "c", "position": "E:2"}
    )


def test_since_starts_a_new_topic_from_a_known_position() -> None:
    core = make_core()
    core.subscribe("a", "h", 0.0, since="E:7")
    [first] = connect(core)
    assert first == {
        "type": "subscribe",
        "topic": "a",
        "requestId": first["requestId"],
        "since": "E:7",
    }
    core.receive(subscribed(first["requestId"], "E:7", "complete"), 0.0)
    core.receive(message("a", "E:8", "replayed"), 0.0)
    assert delivered(core) == ["replayed"]
    with pytest.raises(InvalidRequest, match="does not subscribe to yet"):
        core.subscribe("a", "h2", 0.0, since="E:1")
    with pytest.raises(InvalidRequest, match="since must be a position"):
        core.subscribe("b", "h", 0.0, since="")


@pytest.mark.parametrize("replay", ["pruned", "unknown"])
def test_an_incomplete_replay_is_a_gap_event_before_the_replayed_messages(replay: str) -> None:
    core = make_core()
    listener, _ = core.subscribe("a", "h", 0.0, on_gap="g")
    frames = connect(core)
    core.receive(subscribed(frames[0]["requestId"], "E:10"), 0.0)
    core.receive(message("a", "E:11", 1), 0.0)
    core.connection_lost(None, 1.0)
    core.events_received()
    assert core.connect_at is not None
    [again] = connect(core, core.connect_at)
    core.receive(subscribed(again["requestId"], "E:50", replay), 2.0)
    core.receive(message("a", "E:60", 2), 2.0)
    events = [e for e in core.events_received() if isinstance(e, (Gap, Deliver))]
    gap, deliver = events
    assert isinstance(gap, Gap)
    assert gap.gap == {"topic": "a", "replay": replay, "since": "E:11", "position": "E:50"}
    assert gap.listeners == (listener,)
    assert listener.on_gap == "g"
    assert isinstance(deliver, Deliver)
    assert core.is_connected
    assert core._topics["a"].position == "E:60"


def test_an_unknown_since_restarts_from_the_servers_position() -> None:
    core = make_core()
    core.subscribe("a", "h", 0.0, since="other-db:99")
    [first] = connect(core)
    core.receive(subscribed(first["requestId"], "E:5", "unknown"), 0.0)
    [gap] = of_type(core.events_received(), Gap)
    assert gap.gap["replay"] == "unknown"
    assert gap.gap["since"] == "other-db:99"
    assert core._topics["a"].position == "E:5"
    core.receive(message("a", "E:6", 1), 0.0)
    assert delivered(core) == [1]


# --- idempotent publish ---------------------------------------------------------------


def show_positions(core: PubSubCore, topic: str = "p") -> None:
    """Let the server show it keeps the resume extension (a positioned ack)."""
    request_id = core.publish(topic, "probe", 0.0)
    for envelope in connect(core):
        if envelope["requestId"] == request_id:
            core.receive(
                frame(
                    type="published",
                    requestId=request_id,
                    id="x",
                    topic=topic,
                    created="c",
                    position="E:1",
                ),
                0.0,
            )
    core.events_received()
    assert core.server_resumes


def test_a_ready_frame_with_a_position_announces_the_extension() -> None:
    official = make_core()
    official.publish("t", 1, 0.0)
    official.start_connecting(0.0)
    official.receive(frame(type="ready", clientId="c1"), 0.0)
    assert not official.server_resumes
    ours = make_core()
    ours.publish("t", 1, 0.0)
    ours.start_connecting(0.0)
    ours.receive(frame(type="ready", clientId="c1", position="E:0"), 0.0)
    assert ours.server_resumes


def test_every_publish_has_its_own_key_or_the_one_given() -> None:
    core = make_core()
    core.publish("t", 1, 0.0)
    core.publish("t", 2, 0.0)
    core.publish("t", 3, 0.0, key="mine")
    keys = [f["key"] for f in connect(core)]
    assert keys[2] == "mine"
    assert len(set(keys)) == 3
    with pytest.raises(InvalidRequest, match="key must be"):
        core.publish("t", 1, 0.0, key="k" * 129)
    with pytest.raises(InvalidRequest, match="key must be"):
        core.publish("t", 1, 0.0, key="")


def test_a_publish_in_flight_is_resent_with_its_key_after_the_reconnect() -> None:
    core = make_core()
    connect_now = core.publish("t", 0, 0.0)
    connect(core)
    core.receive(
        frame(
            type="published", requestId=connect_now, id="x", topic="t", created="c", position="E:1"
        ),
        0.0,
    )
    core.events_received()
    first = core.publish("t", 1, 0.0)
    second = core.publish("t", 2, 0.0)
    frames = sent(core)
    core.connection_lost(None, 1.0)
    queued = core.publish("t", 3, 1.5)  # made while down: goes after the resent ones
    assert of_type(core.events_received(), Rejected) == []
    assert core.connect_at is not None
    again = connect(core, core.connect_at)
    assert [f["requestId"] for f in again] == [first, second, queued]
    assert [f["key"] for f in again[:2]] == [f["key"] for f in frames]
    assert [f["data"] for f in again] == [1, 2, 3]
    ack = {"id": "m1", "topic": "t", "created": "c", "position": "E:2"}
    core.receive(frame(type="published", requestId=first, **ack), 2.0)
    assert Resolved(first, ack) in core.events_received()


def test_a_resent_publish_still_times_out_at_its_first_deadline() -> None:
    core = make_core()
    show_positions(core)
    request_id = core.publish("t", 1, 0.0, timeout=3.0)
    sent(core)
    core.connection_lost(None, 1.0)
    core.tick(3.0)
    [rejected] = of_type(core.events_received(), Rejected)
    assert rejected.request_id == request_id
    assert isinstance(rejected.error, RequestTimeout)


def test_the_ack_of_a_resent_publish_delivered_before_the_loss_is_not_held() -> None:
    core = make_core()
    core.subscribe("t", "h", 0.0)
    frames = connect(core)
    core.receive(subscribed(frames[0]["requestId"], "E:1"), 0.0)
    request_id = core.publish("t", 1, 0.0)
    sent(core)
    core.receive(message("t", "E:2", 1, id_="m"), 0.0)  # stored and delivered; the ack is lost
    core.connection_lost(None, 1.0)
    core.events_received()
    assert core.connect_at is not None
    again = connect(core, core.connect_at)
    for envelope in again:
        if envelope["type"] == "subscribe":
            assert envelope["since"] == "E:2"
            core.receive(subscribed(envelope["requestId"], "E:2", "complete"), 2.0)
    core.receive(
        frame(
            type="published", requestId=request_id, id="m", topic="t", created="c", position="E:2"
        ),
        2.0,
    )
    assert Resolved(request_id, {"id": "m", "topic": "t", "created": "c", "position": "E:2"}) in (
        core.events_received()
    )


def test_frames_not_written_before_a_loss_are_not_written_on_the_next_connection() -> None:
    core = make_core()
    show_positions(core)
    first = core.publish("t", 1, 0.0)
    second = core.publish("t", 2, 0.0)  # queued for writing, never written
    core.connection_lost(None, 1.0)
    assert core.data_to_send() == []  # nothing before ``ready``
    assert core.connect_at is not None
    again = connect(core, core.connect_at)
    assert [f["requestId"] for f in again] == [first, second]
