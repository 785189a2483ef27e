"""Resuming a subscription from a position: replay from the store, then go live.

See ``docs/reference/resume.md`` for the protocol. The steps, per subscribe
that carries ``since``:

1. (synchronously, in the request's step) the hub registers the subscription
   as catching up and the node's delivered position ``live_from`` is taken:
   every message after it will reach the hub, and is held for this
   subscription; every message up to it is in the store already;
2. the store says whether ``since`` is known and whether retention deleted
   messages after it; the ``subscribed`` ack goes out;
3. the store's messages of the topic with ``since < seq <= live_from`` are
   written in pages of ``REPLAY_PAGE``, each only once the subscriber's
   outbound buffer is below half of its limit (so a backlog of any size
   costs one page of memory, and the event loop serves everyone between
   pages);
4. the held messages after the replay are written and the subscription
   joins the live set, in one synchronous step: no gap, no duplicate.

A pattern subscription replays the same way: the store walks the messages
after ``since`` whose topic starts with the pattern's literal prefix, and
the pattern is matched here, with the same function the live path uses.

A ``since`` ahead of this node (a position another node handed out, which
this node has not delivered yet) is waited for: held messages up to it are
dropped. A store failure during the replay closes the connection with 1011:
the client resumes again from the last position it saw.
"""

from __future__ import annotations

import asyncio
import logging

from .. import protocol
from ..topics import is_pattern_key, key_topic, literal_prefix, matches, split
from .hub import CatchUp, Hub, Subscriber, encode_text_frame
from .metrics import Metrics
from .storage import Store, StoreError

log = logging.getLogger("bosbase_pubsub.resume")

REPLAY_PAGE = 1000
"""Messages read from the store, and written, at a time."""
CATCH_UP_TIMEOUT = 10.0
"""Seconds to wait for this node to deliver up to a ``since`` another node handed out."""
CLOSE_INTERNAL_ERROR = 1011


async def drained(subscriber: Subscriber, threshold: int) -> bool:
    """Wait until ``subscriber``'s outbound buffer holds at most ``threshold`` bytes.

    False when the socket closed meanwhile.
    """
    delay = 0.001
    transport = subscriber.transport
    while True:
        if subscriber.closed or transport.is_closing():
            return False
        if transport.get_write_buffer_size() <= threshold:
            return True
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def catch_up(
    *,
    store: Store,
    hub: Hub,
    metrics: Metrics,
    catch_up: CatchUp,
    since: int,
    live_from: int,
    request_id: str,
) -> None:
    """Acknowledge, replay and switch ``catch_up`` to live (steps 2 to 4 above)."""
    subscriber, topic = catch_up.subscriber, catch_up.topic
    try:
        positions = await store.positions()
        if since > positions.newest:
            catch_up.after = live_from
            subscriber.send(
                protocol.subscribed_frame(
                    request_id, hub.position_text(live_from), protocol.REPLAY_UNKNOWN
                )
            )
            hub.finish_catch_up(catch_up)
            return
        pruned = since < positions.pruned_through
        status = protocol.REPLAY_PRUNED if pruned else protocol.REPLAY_COMPLETE
        catch_up.after = max(since, live_from)
        subscriber.send(protocol.subscribed_frame(request_id, hub.position_text(since), status))
        threshold = hub.outbound_limit // 2
        cursor = since
        # ``topic`` is the subscription's key: a pattern's is marked (``topics``).
        pattern = split(key_topic(topic)) if is_pattern_key(topic) else None
        prefix = literal_prefix(key_topic(topic)) if pattern is not None else topic
        while cursor < live_from:
            if pattern is None:
                page = rows = await store.read_topic(topic, cursor, live_from, REPLAY_PAGE)
            else:
                page = await store.read_prefix(prefix, cursor, live_from, REPLAY_PAGE)
                rows = [m for m in page if matches(pattern, m.topic.split("/"))]
            if not page:
                break
            epoch = hub.epoch
            frames = b"".join(
                encode_text_frame(
                    protocol.message_frame(m.id, m.topic, m.data, m.created, f"{epoch}:{m.seq}")
                )
                for m in rows
            )
            if frames and not subscriber.write(frames):
                return
            metrics.delivered += len(rows)
            cursor = page[-1].seq
            if len(page) < REPLAY_PAGE or not await drained(subscriber, threshold):
                break
        if since > hub.position:
            try:
                await asyncio.wait_for(hub.reached(since), CATCH_UP_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("node still behind position %d after %g s", since, CATCH_UP_TIMEOUT)
        if await drained(subscriber, threshold):
            hub.finish_catch_up(catch_up)
    except StoreError as error:
        log.warning("closing %s: replay from the store failed: %s", subscriber.peer, error)
        hub.unsubscribe(subscriber, [topic])
        subscriber.close(CLOSE_INTERNAL_ERROR, "replay failed, resume again", grace=1.0)
