"""The follower's own rules, with a scripted feed: skip our own, back off, recover."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from bosbase_pubsub.server.cluster import Follower, backoff
from bosbase_pubsub.server.storage import Feed, Message, StoreError


def message(origin: str, n: int) -> Message:
    return Message(f"id{n}", "t", b"1", "2000-01-01 00:00:00.000Z", origin, None)


class ScriptedFeed(Feed):
    """Returns (or raises) each item of ``script`` in turn, then waits forever."""

    def __init__(self, script: Sequence[Sequence[Message] | StoreError]) -> None:
        self.script = list(script)
        self.opened = self.closed = False
        self.done = asyncio.Event()

    async def open(self) -> None:
        self.opened = True

    async def next_batch(self) -> Sequence[Message]:
        if not self.script:
            self.done.set()
            await asyncio.Event().wait()
        item = self.script.pop(0)
        if isinstance(item, StoreError):
            raise item
        return item

    async def close(self) -> None:
        self.closed = True


class Hub:
    def __init__(self) -> None:
        self.delivered: list[list[Message]] = []

    def deliver(self, messages: list[Message]) -> None:
        self.delivered.append(messages)


def test_backoff_grows_jittered_up_to_its_cap() -> None:
    delays = list(itertools.islice(backoff(initial=0.1, factor=2.0, maximum=1.0), 8))
    steps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step


async def test_other_nodes_messages_reach_the_hub_and_our_own_never_do() -> None:
    feed = ScriptedFeed([[message("other", 1), message("me", 2), message("other", 3)], []])
    hub = Hub()
    follower = Follower(feed, hub, node_id="me")
    await follower.start()
    await asyncio.wait_for(feed.done.wait(), 5)
    await follower.stop()
    assert feed.opened
    assert feed.closed
    assert [[m.id for m in batch] for batch in hub.delivered] == [["id1", "id3"]]
    assert follower.received == 2


async def test_a_failing_feed_makes_the_node_degraded_until_it_answers_again() -> None:
    failure = StoreError("postgres: connection refused")
    feed = ScriptedFeed([failure, failure, [message("other", 1)]])
    hub = Hub()
    follower = Follower(feed, hub, node_id="me")
    await follower.start()
    for _ in range(100):
        if follower.degraded:
            break
        await asyncio.sleep(0.01)
    assert follower.degraded
    await asyncio.wait_for(feed.done.wait(), 5)
    assert not follower.degraded
    assert [[m.id for m in batch] for batch in hub.delivered] == [["id1"]]
    await follower.stop()
