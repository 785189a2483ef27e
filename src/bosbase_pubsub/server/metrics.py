"""Counters for ``GET /metrics``, rendered in the Prometheus text format.

Plain integer attributes bumped on the hot paths (no locks: one event loop),
rendered only when scraped.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# Upper bounds, in seconds, of the commit latency histogram's buckets.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class FeedGauges:
    """The cross-node feed's figures at scrape time (nodes sharing a store only)."""

    received: int
    """Messages stored by other nodes and delivered on this one."""
    position: int
    """The highest ``seq`` read from the shared table."""
    degraded: bool


class Metrics:
    """The node's counters and gauges."""

    def __init__(self) -> None:
        self.connections = 0
        self.subscriptions = 0
        self.published = 0
        self.publish_failures = 0
        self.delivered = 0
        self.slow_consumer_closes = 0
        self.oversized_frame_closes = 0
        self.token_renewals = 0
        self.commits = 0
        self.commit_bucket_counts = [0] * (len(COMMIT_BUCKETS) + 1)
        self.commit_seconds_sum = 0.0
        self.pruned = 0

    def observe_commit(self, seconds: float, batch_size: int) -> None:
        self.commits += 1
        self.published += batch_size
        self.commit_seconds_sum += seconds
        self.commit_bucket_counts[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1

    def render(
        self, *, topics: int, degraded: bool, position: int, feed: FeedGauges | None = None
    ) -> str:
        """The exposition text; the keyword arguments are read at scrape time."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, value: float) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.append(f"{name} {value}")

        metric("pubsub_connections", "gauge", "Open WebSocket connections.", self.connections)
        metric("pubsub_subscriptions", "gauge", "Topic subscriptions.", self.subscriptions)
        metric("pubsub_topics", "gauge", "Topics with at least one subscriber.", topics)
        metric(
            "pubsub_messages_published_total",
            "counter",
            "Messages stored and acknowledged.",
            self.published,
        )
        metric(
            "pubsub_publish_failures_total",
            "counter",
            "Publishes answered with 'failed to publish message'.",
            self.publish_failures,
        )
        metric(
            "pubsub_messages_delivered_total",
            "counter",
            "Messages written to subscribers.",
            self.delivered,
        )
        metric(
            "pubsub_slow_consumer_closes_total",
            "counter",
            "Connections closed because their outbound buffer overflowed.",
            self.slow_consumer_closes,
        )
        metric(
            "pubsub_token_renewals_total",
            "counter",
            "Tokens replaced on open connections with an auth message.",
            self.token_renewals,
        )
        metric(
            "pubsub_messages_pruned_total",
            "counter",
            "Messages deleted by retention.",
            self.pruned,
        )
        metric("pubsub_store_degraded", "gauge", "1 while the store is failing.", int(degraded))
        metric(
            "pubsub_position",
            "gauge",
            "The seq of the last message delivered on this node (every earlier one was).",
            position,
        )
        if feed is not None:
            metric(
                "pubsub_cluster_messages_received_total",
                "counter",
                "Messages stored by other nodes and delivered on this one.",
                feed.received,
            )
            metric(
                "pubsub_cluster_feed_position",
                "gauge",
                "The highest seq this node has read from the shared table.",
                feed.position,
            )
            metric(
                "pubsub_cluster_feed_degraded",
                "gauge",
                "1 while the feed of other nodes' messages is failing.",
                int(feed.degraded),
            )

        name = "pubsub_store_commit_seconds"
        lines.append(f"# HELP {name} Time to commit one batch of published messages.")
        lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip(COMMIT_BUCKETS, self.commit_bucket_counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.commits}')
        lines.append(f"{name}_sum {self.commit_seconds_sum}")
        lines.append(f"{name}_count {self.commits}")
        return "\n".join(lines) + "\n"
