"""The follower's own rules, with a scripted feed: skip our own, back off, recover."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from bosbase_pubsub.server.cluster import Follower, Sequencer, backoff
from bosbase_pubsub.server.storage import Feed, Message, StoreError


def message(origin: str, n: int) -> Message:
    return Message(f"id{n}", "t", b"1", "2000-01-01 00:00:00.000Z", origin, None, n)


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
    follower = Follower(feed, Sequencer(hub, "me"), node_id="me")
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
    follower = Follower(feed, Sequencer(hub, "me"), node_id="me")
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


class Commits:
    committing = False


def sequencer(start: int = 0) -> tuple[Sequencer, Hub, Commits]:
    hub, commits = Hub(), Commits()
    order = Sequencer(hub, "me")
    order.commits = commits  # type: ignore[assignment]
    order.start(start)
    return order, hub, commits


def delivered(hub: Hub) -> list[int]:
    return [m.seq for batch in hub.delivered for m in batch]


def test_an_own_batch_goes_out_at_once_when_nothing_is_pending_below_it() -> None:
    order, hub, _ = sequencer(start=4)
    order.deliver([message("me", 5), message("me", 6)])
    assert delivered(hub) == [5, 6]


def test_an_own_batch_waits_for_the_other_nodes_rows_below_it() -> None:
    order, hub, _ = sequencer(start=2)
    order.deliver([message("me", 5), message("me", 6)])
    assert delivered(hub) == []
    order.follow([message("other", 3), message("other", 4), message("me", 5), message("me", 6)])
    assert delivered(hub) == [3, 4, 5, 6]
    order.follow([message("other", 7)])
    assert delivered(hub) == [3, 4, 5, 6, 7]


def test_an_own_batch_with_gaps_goes_out_run_by_run() -> None:
    """On JetStream other nodes' messages may sit between a batch's (here 7)."""
    order, hub, _ = sequencer(start=4)
    order.deliver([message("me", 5), message("me", 6), message("me", 8), message("me", 9)])
    assert delivered(hub) == [5, 6]
    order.follow([message("me", 5), message("me", 6), message("other", 7)])
    assert delivered(hub) == [5, 6, 7, 8, 9]
    order.follow([message("me", 8), message("me", 9), message("other", 10)])
    assert delivered(hub) == [5, 6, 7, 8, 9, 10]


def test_markers_of_a_gapped_batch_read_before_its_report_hold_the_others_back() -> None:
    order, hub, commits = sequencer()
    commits.committing = True
    order.follow([message("me", 1), message("other", 2), message("me", 3), message("other", 4)])
    assert delivered(hub) == []
    order.deliver([message("me", 1), message("me", 3)])
    assert delivered(hub) == [1, 2, 3, 4]


def test_rows_after_an_own_row_not_reported_yet_wait_for_it() -> None:
    order, hub, commits = sequencer()
    commits.committing = True
    order.follow([message("other", 1), message("me", 2), message("other", 3)])
    assert delivered(hub) == [1]
    commits.committing = False
    order.deliver([message("me", 2)])
    assert delivered(hub) == [1, 2, 3]


def test_own_rows_of_a_failed_commit_hold_nothing_back() -> None:
    order, hub, commits = sequencer()
    commits.committing = True
    order.follow([message("other", 1), message("me", 2)])
    commits.committing = False  # the commit failed: 2 will never be reported
    order.follow([message("other", 3)])
    assert delivered(hub) == [1, 3]
