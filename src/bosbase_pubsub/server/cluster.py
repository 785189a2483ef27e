"""Cross-node delivery: this node's subscribers get what the other nodes store.

A store that several nodes share offers a ``Feed`` (see ``storage.base``);
the ``Follower`` reads it and hands other nodes' messages to the
``Sequencer``, which merges them with this node's own committed batches
(from the commit queue) and hands both to the hub in ``seq`` order.

Invariants:

* Every message stored after this node started reaches ``Hub.deliver``
  exactly once, in ``seq`` (commit, position) order, whichever node stored
  it. (The feed guarantees order and exactly-once for the others' rows; see
  ``storage.postgres_feed`` and ``storage.jetstream_feed``.)
* A message this node stored is delivered from the commit queue's batch,
  never read back: the feed returns it as a marker (``seq`` only). An own
  batch is taken as runs of consecutive seqs ``[a..b]`` (one run on
  PostgreSQL; on JetStream other nodes' messages may sit between them). A
  run goes out at once when every ``seq`` below ``a`` is known
  (``known >= a - 1``); else it waits while the feed is woken to read up to
  it (by the store's invariant, every row below ``a`` is committed by then).
  Conversely a marker the commit queue has not reported yet holds the
  others' rows after it back until it is reported, or until no commit is in
  flight any more (a batch whose commit failed, or was lost with its
  connection, is never reported; it is not delivered on this node).
* When the store fails, the follower keeps the feed's position and retries
  with capped, jittered exponential backoff; once the store answers again
  it catches up, so nothing stored meanwhile is lost or repeated. Until
  then the node reports itself degraded (``/api/health`` answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections.abc import Iterator, Sequence

from .commits import CommitQueue, Deliverer
from .storage import Feed, Message, StoreError

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


class Sequencer:
    """Merges this node's committed batches with the others' rows, in ``seq`` order.

    The commit queue calls ``deliver`` (it is its ``Deliverer``); the follower
    calls ``follow`` with each feed batch (markers included), and ``start``
    once with the feed's starting position.
    """

    def __init__(self, hub: Deliverer, node_id: str) -> None:
        self._hub = hub
        self._node_id = node_id
        self.commits: CommitQueue | None = None
        """Read for ``committing``; set once the commit queue exists."""
        self.feed: Feed | None = None
        """Woken when an own batch waits for the others' rows below it."""
        self._known = 0  # every committed seq <= this is delivered or waiting here
        self._reported = 0  # the last seq of the last own batch reported
        self._waiting: list[tuple[int, Message]] = []  # a heap, by seq
        self._own_batches: list[tuple[int, int]] = []  # own (a, b) not known-through yet
        self._unreported: set[int] = set()  # own markers read, batch not reported yet

    def start(self, position: int) -> None:
        """Every ``seq`` up to ``position`` is taken as delivered (the node starts there)."""
        self._known = max(self._known, position)
        self._reported = max(self._reported, position)

    def deliver(self, messages: list[Message]) -> None:
        """An own batch just committed (``seq`` ascending; consecutive only in runs).

        On PostgreSQL a batch's seqs are consecutive; on JetStream other nodes'
        messages may sit between them, so the batch is taken as runs of
        consecutive seqs, each going out once every seq below it is known.
        """
        if not messages:
            self._flush()
            return
        first, last = messages[0].seq, messages[-1].seq
        self._reported = max(self._reported, last)
        unreported = self._unreported
        if unreported:
            # Markers below this batch belong to batches that will never be reported.
            self._unreported = {seq for seq in unreported if seq > last}
        consecutive = last - first + 1 == len(messages)
        if consecutive and self._known >= first - 1 and not self._waiting:
            # The common case: nothing of the others' is pending below it.
            self._known = max(self._known, last)
            self._hub.deliver(messages)
            return
        for message in messages:
            heapq.heappush(self._waiting, (message.seq, message))
        self._own_batches.extend(_runs(messages))
        self._own_batches.sort()
        self._flush()
        if self._own_batches and self.feed is not None:
            self.feed.wake()

    def follow(self, batch: Sequence[Message]) -> None:
        """A feed batch, in ``seq`` order: the others' rows and our own markers."""
        node_id = self._node_id
        committing = self.commits is not None and self.commits.committing
        for message in batch:
            if message.origin == node_id:
                if message.seq > self._reported and committing:
                    self._unreported.add(message.seq)
            else:
                heapq.heappush(self._waiting, (message.seq, message))
        if batch:
            self._known = max(self._known, batch[-1].seq)
        if self._unreported and not committing:
            self._unreported.clear()  # their batch failed: they will never be reported
        self._flush()

    def _flush(self) -> None:
        # Own batches whose every lower seq is known extend what is known.
        batches = self._own_batches
        while batches and self._known >= batches[0][0] - 1:
            self._known = max(self._known, batches.pop(0)[1])
        limit = self._known
        if self._unreported:
            limit = min(limit, min(self._unreported) - 1)
        waiting = self._waiting
        ready: list[Message] = []
        while waiting and waiting[0][0] <= limit:
            ready.append(heapq.heappop(waiting)[1])
        if ready:
            self._hub.deliver(ready)


def _runs(messages: Sequence[Message]) -> list[tuple[int, int]]:
    """The runs of consecutive seqs of ``messages`` (ascending), as ``(first, last)``."""
    runs: list[tuple[int, int]] = []
    for message in messages:
        if runs and runs[-1][1] == message.seq - 1:
            runs[-1] = (runs[-1][0], message.seq)
        else:
            runs.append((message.seq, message.seq))
    return runs


class Follower:
    """Reads a ``Feed`` and delivers other nodes' messages to this node's hub.

    Call ``start`` (which raises ``StoreError`` if the store is unreachable)
    before serving, and ``stop`` when shutting down.
    """

    def __init__(self, feed: Feed, sequencer: Sequencer, *, node_id: str) -> None:
        self._feed = feed
        self._sequencer = sequencer
        sequencer.feed = feed
        self._node_id = node_id
        self._task: asyncio.Task[None] | None = None
        self.degraded = False
        """True while the feed is failing (the node misses other nodes' messages)."""
        self.received = 0
        """Messages from other nodes delivered to the hub so far."""

    @property
    def position(self) -> int:
        """The feed's position: the highest ``seq`` read (the newest stored, once started)."""
        return self._feed.position

    async def start(self) -> None:
        """Open the feed at the newest stored message and start following it."""
        await self._feed.open()
        self._sequencer.start(self._feed.position)
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
            others = sum(1 for message in batch if message.origin != node_id)
            self.received += others
            try:
                self._sequencer.follow(batch)
            except Exception:  # a bug in fan-out must not stop cross-node delivery
                log.exception("delivering %d messages from other nodes failed", others)
