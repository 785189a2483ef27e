"""The SDK core with wildcard subscriptions and subscriptions the server ends (no I/O)."""

from __future__ import annotations

import pytest

from bosbase_pubsub import protocol
from bosbase_pubsub.client._core import Deliver, ServerNotice, SubscriptionLost
from bosbase_pubsub.client._exceptions import InvalidRequest, ServerError

from .test_core import ack_subscribes, connect, frame, make_core, of_type, sent


def test_a_message_goes_to_every_matching_subscription_once_each() -> None:
    core = make_core()
    for topic, handler in (("chat/*", "one"), ("chat/**", "deep"), ("chat/a", "exact")):
        core.subscribe(topic, handler, 0.0)
    ack_subscribes(core, connect(core))
    core.events_received()
    for n, topic in enumerate(("chat/a", "chat/a/b", "chatx", "chat/b")):
        position = f"E:{n + 1}"
        core.receive(frame(type="message", id=f"m{n}", topic=topic, data=n, created="t",
                           position=position), 0.0)  # fmt: skip
    got = sorted(
        (event.message["id"], event.message["topic"], event.listeners[0].handler)
        for event in of_type(core.events_received(), Deliver)
    )
    assert got == [
        ("m0", "chat/a", "deep"),
        ("m0", "chat/a", "exact"),
        ("m0", "chat/a", "one"),
        ("m1", "chat/a/b", "deep"),
        ("m3", "chat/b", "deep"),
        ("m3", "chat/b", "one"),
    ]
    # A replay repeating a message: each subscription keeps its own position.
    core.receive(frame(type="message", id="m1", topic="chat/a/b", data=1, created="t",
                       position="E:2"), 0.0)  # fmt: skip
    assert of_type(core.events_received(), Deliver) == []


def test_an_invalid_pattern_is_refused_before_anything_is_sent() -> None:
    core = make_core()
    with pytest.raises(InvalidRequest, match=r"invalid topic pattern"):
        core.subscribe("chat/**/x", "h", 0.0)
    assert core.topics == []


def test_a_subscription_the_server_ends_is_lost_and_left() -> None:
    core = make_core()
    core.subscribe("inbox/u1", "h", 0.0)
    core.subscribe("feed", "h", 0.0)
    ack_subscribes(core, connect(core))
    core.events_received()
    core.receive(frame(type="error", topic="inbox/u1", message=protocol.ERR_FORBIDDEN), 0.0)
    [lost] = of_type(core.events_received(), SubscriptionLost)
    assert lost.topic == "inbox/u1"
    assert isinstance(lost.error, ServerError)
    assert lost.error.message == protocol.ERR_FORBIDDEN
    assert core.topics == ["feed"]
    sent(core)
    # An error naming no subscription of ours stays a notice.
    core.receive(frame(type="error", topic="other", message="x"), 0.0)
    assert of_type(core.events_received(), ServerNotice)
