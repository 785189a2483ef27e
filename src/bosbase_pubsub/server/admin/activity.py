"""What the console shows, gathered off the hot paths: per-topic activity and rates.

* ``TopicActivity`` sits between the commit queue (or the cluster's
  sequencer) and the hub, as their ``Deliverer``: it hands every batch on
  first, then counts the batch's messages per topic. One ``Counter`` per
  batch, nothing per subscriber; the topics it remembers are bounded.
* ``Sampler`` wakes once a second, turns the node's counters into rates
  (the live charts keep the last ``HISTORY`` seconds), and every
  ``REPORT_INTERVAL`` publishes this node's report to the store
  (``Store.report_node``): on PostgreSQL every node's console then lists
  every live node, with its connections and the lag of its feed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import operator
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ...protocol import format_created
from ..commits import Deliverer
from ..storage import Message, StoreError

if TYPE_CHECKING:
    from ..app import Node

log = logging.getLogger("bosbase_pubsub.admin")

HISTORY = 60
"""Seconds of publish and delivery rates the live charts show."""
REPORT_INTERVAL = 2.0
"""Seconds between two reports of this node to the store."""
REPORT_FRESHNESS = 3 * REPORT_INTERVAL
"""A node whose last report is older than this is no longer listed."""
MAX_TOPICS = 10_000
"""Topics remembered; past it the half least recently active is forgotten."""

_topic_of = operator.attrgetter("topic")


@dataclass(slots=True)
class TopicCounts:
    """One topic's deliveries on this node."""

    total: int = 0
    """Messages delivered since the node started (or the topic was forgotten)."""
    last: float = 0.0
    """Unix time of the last one."""
    per_second: int = 0
    """Messages in the last second, as the sampler last measured."""
    sampled: int = 0


class TopicActivity:
    """A ``Deliverer`` in front of the hub that counts each topic's messages."""

    def __init__(self, hub: Deliverer, *, max_topics: int = MAX_TOPICS) -> None:
        self._hub = hub
        self._max_topics = max_topics
        self.topics: dict[str, TopicCounts] = {}

    def deliver(self, messages: list[Message]) -> None:
        """Hand ``messages`` to the hub, then count them."""
        self._hub.deliver(messages)
        if not messages:
            return
        now = time.time()
        topics = self.topics
        for topic, count in collections.Counter(map(_topic_of, messages)).items():
            counts = topics.get(topic)
            if counts is None:
                counts = topics[topic] = TopicCounts()
            counts.total += count
            counts.last = now
        if len(topics) > self._max_topics:
            keep = sorted(topics.items(), key=lambda item: item[1].last)[len(topics) // 2 :]
            self.topics = dict(keep)

    def sample(self) -> None:
        """Take each topic's messages since the last call as its rate (called every second)."""
        for counts in self.topics.values():
            counts.per_second = counts.total - counts.sampled
            counts.sampled = counts.total


@dataclass
class Rates:
    """Per-second publish and delivery rates of this node, the newest last."""

    published: collections.deque[int] = field(
        default_factory=lambda: collections.deque([0] * HISTORY, HISTORY)
    )
    delivered: collections.deque[int] = field(
        default_factory=lambda: collections.deque([0] * HISTORY, HISTORY)
    )


class Sampler:
    """Once a second: rates; every ``REPORT_INTERVAL``: this node's report to the store."""

    def __init__(self, node: Node, activity: TopicActivity) -> None:
        self.node = node
        self.activity = activity
        self.rates = Rates()
        self.started = time.time()
        self.lag: int | None = None
        """Messages the store holds that this node's feed has not read (shared stores only)."""
        self._task: asyncio.Task[None] | None = None
        self._last = (0, 0)

    def start(self) -> None:
        metrics = self.node.metrics
        self._last = (metrics.published, metrics.delivered)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(StoreError):
            await self.node.store.forget_node(self.node.node_id)

    async def _run(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            self._sample()
            ticks += 1
            if ticks % int(REPORT_INTERVAL) == 0:
                try:
                    await self._report()
                except StoreError as error:  # the console shows what it has
                    log.debug("could not report this node: %s", error)
                except Exception:
                    log.exception("reporting this node failed")

    def _sample(self) -> None:
        metrics = self.node.metrics
        published, delivered = metrics.published, metrics.delivered
        self.rates.published.append(published - self._last[0])
        self.rates.delivered.append(delivered - self._last[1])
        self._last = (published, delivered)
        self.activity.sample()

    async def _report(self) -> None:
        node = self.node
        if node.follower is not None:
            newest = (await node.store.positions()).newest
            self.lag = max(0, newest - node.follower.position)
        await node.store.report_node(node.node_id, orjson.dumps(self.this_node()))

    def this_node(self) -> dict[str, Any]:
        """This node's line of the overview (and its report to the others)."""
        node = self.node
        identities = node.endpoint.identities()
        authenticated = sum(1 for identity in identities if identity is not None)
        return {
            "id": node.node_id,
            "address": node.address,
            "started": _iso(self.started),
            "connections": len(identities),
            "authenticated": authenticated,
            "anonymous": len(identities) - authenticated,
            "subscriptions": node.metrics.subscriptions,
            "topics": node.hub.topic_count,
            "position": node.hub.position,
            "feedLag": self.lag,
            "publishedPerSecond": self.rates.published[-1],
            "deliveredPerSecond": self.rates.delivered[-1],
            "commitQueue": node.commits.depth,
            "slowConsumersClosed": node.metrics.slow_consumer_closes,
            "degraded": node.commits.degraded
            or (node.follower is not None and node.follower.degraded),
        }

    async def overview(self, *, max_topics: int = 50) -> dict[str, Any]:
        """The console's overview: the nodes, connections, topics, rates and queues."""
        node = self.node
        this = self.this_node()
        nodes = [this]
        try:
            reports = await node.store.node_reports(REPORT_FRESHNESS)
        except StoreError:
            reports = {}
        for node_id, report in reports.items():
            if node_id != node.node_id:
                with contextlib.suppress(orjson.JSONDecodeError):
                    nodes.append(orjson.loads(report))
        hub = node.hub
        topics = self.activity.topics
        names = set(hub.topic_names()) | set(topics)
        rows: list[dict[str, Any]] = []
        for name in names:
            counts = topics.get(name)
            rows.append(
                {
                    "topic": name,
                    "subscribers": hub.subscriber_count(name),
                    "perSecond": counts.per_second if counts else 0,
                    "total": counts.total if counts else 0,
                    "last": _iso(counts.last) if counts and counts.last else None,
                }
            )
        rows.sort(key=lambda row: (-row["perSecond"], -row["subscribers"], row["topic"]))
        return {
            "node": node.node_id,
            "time": _iso(time.time()),
            "nodes": nodes,
            "connections": {
                "total": sum(int(n.get("connections", 0)) for n in nodes),
                "authenticated": sum(int(n.get("authenticated", 0)) for n in nodes),
                "anonymous": sum(int(n.get("anonymous", 0)) for n in nodes),
            },
            "topics": rows[:max_topics],
            "topicCount": len(rows),
            "rates": {
                "published": list(self.rates.published),
                "delivered": list(self.rates.delivered),
            },
            "published": node.metrics.published,
            "delivered": node.metrics.delivered,
            "commitQueue": node.commits.depth,
            "slowConsumersClosed": node.metrics.slow_consumer_closes,
        }


def _iso(unix: float) -> str:
    """Unix time in the contract's layout (``YYYY-MM-DD HH:MM:SS.mmmZ``)."""
    return format_created(dt.datetime.fromtimestamp(unix, dt.timezone.utc))
