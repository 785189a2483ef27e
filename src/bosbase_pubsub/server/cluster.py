"""Cross-node delivery: this node's subscribers get what the other nodes store.

A store that several nodes share offers a ``Feed`` (see ``storage.base``);
the ``Follower`` reads it and hands other nodes' messages to the hub.

Invariants:

* Every message another node stores after this node started reaches
  ``Hub.deliver`` exactly once, in the store's commit order, so one
  publisher's messages arrive in the order they were acknowledged. (The
  feed guarantees order and exactly-once; see ``storage.postgres_feed``.)
* A message this node stored is never delivered by the follower: the commit
  queue delivered it right after its commit. The follower skips rows whose
  ``origin`` is this node.
* When the store fails, the follower keeps the feed's position and retries
  with capped, jittered exponential backoff; once the store answers again
  it catches up, so nothing stored meanwhile is lost or repeated. Until
  then the node reports itself degraded (``/api/health`` answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator

from .commits import Deliverer
from .storage import Feed, StoreError

log = logging.getLogger("bosbase_pubsub.cluster")


def backoff(*, initial: float = 0.05, factor: float = 2.0, maximum: float = 2.0) -> Iterator[float]:
    """Delays in seconds between reconnect attempts: jittered, growing to ``maximum``.

    Each delay is drawn between half and all of the current step, so nodes
    that lost the store together do not reconnect in lockstep.
    """
    step = initial
    while True:
        yield step * random.uniform(0.5, 1.0)
        step = min(step * factor, maximum)


class Follower:
    """Reads a ``Feed`` and delivers other nodes' messages to this node's hub.

    Call ``start`` (which raises ``StoreError`` if the store is unreachable)
    before serving, and ``stop`` when shutting down.
    """

    def __init__(self, feed: Feed, hub: Deliverer, *, node_id: str) -> None:
        self._feed = feed
        self._hub = hub
        self._node_id = node_id
        self._task: asyncio.Task[None] | None = None
        self.degraded = False
        """True while the feed is failing (the node misses other nodes' messages)."""
        self.received = 0
        """Messages from other nodes delivered to the hub so far."""

    async def start(self) -> None:
        """Open the feed at the newest stored message and start following it."""
        await self._feed.open()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop following and close the feed. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._feed.close()

    async def _run(self) -> None:
        delays = backoff()
        node_id = self._node_id
        while True:
            try:
                batch = await self._feed.next_batch()
            except StoreError as error:
                if not self.degraded:
                    log.warning("lost the feed of other nodes' messages: %s; reconnecting", error)
                self.degraded = True
                await asyncio.sleep(next(delays))
                continue
            if self.degraded:
                log.info("feed of other nodes' messages restored")
                self.degraded = False
                delays = backoff()
            others = [message for message in batch if message.origin != node_id]
            if others:
                self.received += len(others)
                try:
                    self._hub.deliver(others)
                except Exception:  # a bug in fan-out must not stop cross-node delivery
                    log.exception("delivering %d messages from other nodes failed", len(others))
