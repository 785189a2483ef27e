"""Group commit: publishes that arrive close together share one transaction.

Invariants:

* No publish is acknowledged before the transaction holding it committed:
  ``on_stored`` runs only after ``Store.append`` returned.
* The writer commits as soon as it is free. While one batch commits, new
  publishes queue; the next batch is everything queued by then (at most
  ``max_batch``). A lone publisher never waits for a batch to fill.
* Batches commit one at a time, in arrival order, so a connection's
  messages are stored, acknowledged and delivered in the order it sent them.
  The next batch is sent to the store as soon as the previous one committed,
  before that one's acks and deliveries go out: the store works on it while
  this node writes to its sockets. (Its transaction starts after the previous
  one committed, so ``seq`` and delivery order still follow arrival order.)
* Acks go out before the batch is fanned out (the contract: ``published``,
  then ``message``).
* A publish whose key was stored before (or earlier in its batch) is acked
  with the first message (same id, created and position) and not fanned out
  again: ``on_stored`` gets that first message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from .metrics import Metrics
from .storage import Message, Store, StoreError

log = logging.getLogger("bosbase_pubsub.commits")

OnStored = Callable[[Message, BaseException | None], None]
"""Called once per publish: with the stored message (its ``seq`` set) and ``None``
after its commit, or with the submitted message and the error."""


class Deliverer(Protocol):
    def deliver(self, messages: list[Message]) -> None: ...


class CommitQueue:
    """Queues publishes and commits them in batches through one writer task."""

    def __init__(
        self,
        store: Store,
        hub: Deliverer,
        metrics: Metrics,
        *,
        max_batch: int = 2000,
        max_pending: int = 100_000,
    ) -> None:
        self._store = store
        self._hub = hub
        self._metrics = metrics
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: list[tuple[Message, OnStored]] = []
        self._writer: asyncio.Task[None] | None = None
        self._appending: asyncio.Task[list[Message] | Exception] | None = None
        self._unreported = 0
        """Batches sent to the store and not yet reported (acked and delivered, or failed)."""
        self.degraded = False
        """True after a failed commit, until one succeeds."""

    @property
    def depth(self) -> int:
        """Publishes queued and not yet sent to the store (the operator console shows it)."""
        return len(self._pending)

    @property
    def committing(self) -> bool:
        """True from a batch's sending to the store until it has been reported.

        Not only while the store works on it: between the store's answer and the
        report, the feed may already return the batch's messages as markers
        (JetStream pushes them at once), and they must then hold the others'
        messages after them back (see ``cluster.Sequencer``).
        """
        return self._unreported > 0

    def submit(self, message: Message, on_stored: OnStored) -> None:
        """Queue ``message``; ``on_stored`` runs once it committed or failed."""
        if len(self._pending) >= self._max_pending:
            # The store cannot keep up (or is down): refuse rather than grow.
            on_stored(message, StoreError("too many publishes waiting for the store"))
            return
        self._pending.append((message, on_stored))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def drain(self) -> None:
        """Wait until every queued publish has committed or failed."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    def _take(self) -> list[tuple[Message, OnStored]]:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        return batch

    def _start(self, batch: list[tuple[Message, OnStored]]) -> None:
        messages = [message for message, _ in batch]
        self._unreported += 1
        self._appending = asyncio.get_running_loop().create_task(self._append(messages))

    async def _append(self, messages: list[Message]) -> list[Message] | Exception:
        started = time.perf_counter()
        try:
            stored = await self._store.append(messages)
        except Exception as error:
            return error
        self._metrics.observe_commit(time.perf_counter() - started, len(messages))
        return stored

    async def _write(self) -> None:
        try:
            batch = self._take()
            self._start(batch)
            while self._appending is not None:
                outcome = await self._appending
                following = self._take()
                if following:
                    self._start(following)
                    await asyncio.sleep(0)  # let it reach the store before the acks go out
                else:
                    self._appending = None
                self._report(batch, outcome)
                if self._appending is None and self._pending:
                    # Queued while reporting (an ack callback can publish).
                    following = self._take()
                    self._start(following)
                batch = following
        finally:
            self._writer = None

    def _report(
        self, batch: list[tuple[Message, OnStored]], outcome: list[Message] | Exception
    ) -> None:
        """Ack every publish of a finished batch, then deliver the new messages."""
        try:
            self._report_outcome(batch, outcome)
        finally:
            self._unreported -= 1

    def _report_outcome(
        self, batch: list[tuple[Message, OnStored]], outcome: list[Message] | Exception
    ) -> None:
        if isinstance(outcome, Exception):
            if not self.degraded:
                log.error("store failed to commit %d messages: %s", len(batch), outcome)
            self.degraded = True
            self._metrics.publish_failures += len(batch)
            _notify(batch, outcome)
            return
        if self.degraded:
            log.info("store recovered")
            self.degraded = False
        fresh: list[Message] = []
        for (message, on_stored), result in zip(batch, outcome, strict=True):
            if result.id == message.id:
                fresh.append(result)
            _call(on_stored, result, None)
        # While the batch still counts as committing (see ``cluster.Sequencer``):
        # the next one, if any, started after it was stored.
        try:
            self._hub.deliver(fresh)
        except Exception:  # a bug in fan-out must not stop the writer (and its next batch)
            log.exception("delivering %d committed messages failed", len(fresh))


def _call(on_stored: OnStored, message: Message, error: BaseException | None) -> None:
    try:
        on_stored(message, error)
    except Exception:  # one broken callback must not cost the others their ack
        log.exception("publish callback failed for message %s", message.id)


def _notify(batch: list[tuple[Message, OnStored]], error: BaseException | None) -> None:
    for message, on_stored in batch:
        _call(on_stored, message, error)
