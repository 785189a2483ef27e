"""The commit queue's ordering promises, on a real store of each backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bosbase_pubsub.server.commits import CommitQueue
from bosbase_pubsub.server.ids import new_id, now_created
from bosbase_pubsub.server.metrics import Metrics
from bosbase_pubsub.server.storage import Message, Store, open_store

from ..conftest import STORE_BACKENDS


class Recorder:
    """Logs what the queue does, in order: appends started, acks, deliveries."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events: list[tuple[str, list[str]]] = []
        self._append = store.append
        store.append = self.append  # type: ignore[method-assign]

    async def append(self, messages: Sequence[Message]) -> list[Message]:
        self.events.append(("append", [m.id for m in messages]))
        return await self._append(messages)

    def deliver(self, messages: list[Message]) -> None:
        self.events.append(("deliver", [m.id for m in messages]))

    def acked(self, message: Message, error: BaseException | None) -> None:
        assert error is None
        self.events.append(("ack", [message.id]))


@pytest.fixture(params=STORE_BACKENDS)
async def recorder(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Recorder]:
    url = "sqlite:"
    if request.param != "sqlite":
        fixture = "pg_database" if request.param == "postgres" else "nats_stream"
        url = request.getfixturevalue(fixture)
    store = open_store(url, tmp_path)
    await store.open()
    yield Recorder(store)
    await store.close()


def message() -> Message:
    return Message(new_id(), "t", b"1", now_created(), "node", None)


async def test_the_next_batch_is_sent_before_the_previous_ones_acks(recorder: Recorder) -> None:
    queue = CommitQueue(recorder.store, recorder, Metrics())
    first, second, third = message(), message(), message()
    queue.submit(first, recorder.acked)
    await asyncio.sleep(0)  # the writer takes the first batch and starts storing it
    queue.submit(second, recorder.acked)
    queue.submit(third, recorder.acked)
    await asyncio.wait_for(queue.drain(), 10)

    assert recorder.events == [
        ("append", [first.id]),
        ("append", [second.id, third.id]),  # sent before the first batch is acked
        ("ack", [first.id]),
        ("deliver", [first.id]),  # acks, then the batch's delivery
        ("ack", [second.id]),
        ("ack", [third.id]),
        ("deliver", [second.id, third.id]),
    ]
    assert first.seq < second.seq < third.seq
    assert not queue.committing


async def test_a_failing_delivery_does_not_stop_the_writer(recorder: Recorder) -> None:
    failures = [RuntimeError("fan-out bug")]

    class Failing(Recorder):
        def deliver(self, messages: list[Message]) -> None:
            super().deliver(messages)
            if failures:
                raise failures.pop()

    failing = Failing(recorder.store)
    queue = CommitQueue(recorder.store, failing, Metrics())
    first, second = message(), message()
    queue.submit(first, failing.acked)
    await asyncio.sleep(0)
    queue.submit(second, failing.acked)  # queued while the first batch commits
    await asyncio.wait_for(queue.drain(), 10)

    assert ("ack", [second.id]) in failing.events
    assert failing.events[-1] == ("deliver", [second.id])


async def test_a_batch_counts_as_committing_until_it_is_reported(recorder: Recorder) -> None:
    """Between the store's answer and the report the feed may see the batch's markers.

    They must find ``committing`` still true (see ``cluster.Sequencer``): a callback
    scheduled as the append returns runs before the writer reports the batch.
    """
    queue = CommitQueue(recorder.store, recorder, Metrics())
    seen: list[tuple[bool, int]] = []
    stored = recorder.store.append

    async def append(messages: Sequence[Message]) -> list[Message]:
        result = await stored(messages)
        deliveries = sum(1 for kind, _ in recorder.events if kind == "deliver")
        asyncio.get_running_loop().call_soon(lambda: seen.append((queue.committing, deliveries)))
        return result

    recorder.store.append = append  # type: ignore[method-assign]
    queue.submit(message(), recorder.acked)
    await asyncio.wait_for(queue.drain(), 10)
    assert seen == [(True, 0)]
    assert recorder.events[-1][0] == "deliver"
    assert not queue.committing
