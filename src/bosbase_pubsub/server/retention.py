"""Deletes messages older than the retention window, a bounded batch at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from .. import protocol
from .config import Retention
from .metrics import Metrics
from .storage import Store

log = logging.getLogger("bosbase_pubsub.retention")


async def prune_once(store: Store, retention: Retention, metrics: Metrics) -> int:
    """Delete every message older than ``retention.keep``; return how many.

    Each batch is its own short transaction, and the loop yields between
    batches, so publishes queued meanwhile commit in between. Nodes sharing
    a store prune one at a time: a node that finds another pruning skips
    this round (returns 0).
    """
    cutoff = protocol.format_created(dt.datetime.now(dt.timezone.utc) - retention.keep)
    total = 0
    async with store.exclusive("retention") as ours:
        if not ours:
            return 0
        while True:
            deleted = await store.prune(cutoff, retention.batch)
            total += deleted
            metrics.pruned += deleted
            if deleted < retention.batch:
                return total
            await asyncio.sleep(0)


async def run_retention(store: Store, retention: Retention, metrics: Metrics) -> None:
    """Prune now and then every ``retention.interval`` until cancelled."""
    while True:
        try:
            deleted = await prune_once(store, retention, metrics)
            if deleted:
                log.info("pruned %d messages older than %s", deleted, retention.keep)
        except Exception as error:  # the store may be down; try again next round
            log.warning("pruning failed: %s", error)
        await asyncio.sleep(retention.interval.total_seconds())
