"""Chaos: 20,000 numbered messages reach every subscriber exactly once, in order,
while their connections are cut at random moments.

Each SDK client talks to the server through a ``ChaosProxy`` of its own; a
chaos thread cuts them at random (an orderly close of both sides, a reset as
when the client's socket is killed, or only the server's side), the
publisher's too, so that publishes in flight are resent with their keys. In
cluster mode (two nodes on one PostgreSQL database, or one NATS JetStream
stream) it also restarts a node:
the proxies first point new connections at the other node, then the node
stops (closing its WebSockets with 1001, the server's own close) and starts
again. Subscribers: a sync ``BosBase`` handler, an ``AsyncBosBase`` handler
and an ``AsyncBosBase`` stream. Each must end with exactly 1..20000.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from bosbase_pubsub import AsyncBosBase, AuthStore, BosBase, Message, ReplayGap, Timeouts

from ..client.conftest import FAST_RECONNECT
from ..conftest import BOTH_BACKENDS, SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer, http_sign_in
from ..servers import ServerProcess
from .proxy import ChaosProxy, Cut

COUNT = 20_000
WINDOW = 1_000
"""Publishes in flight at once."""
TOPIC = "chaos"
SERVE_ARGS = ("--publish-rate", "1000000", "--publish-burst", "1000000")
TIMEOUTS = Timeouts(request=30.0, connect=5.0, close=1.0)
DEADLINE = 90.0
"""Seconds the publishing and the deliveries may take in all (a hang fails, never blocks)."""
CUTS: tuple[Cut, ...] = ("fin", "rst", "server")


class Subscriber:
    """What one subscriber received: the numbers, and any incomplete-replay report."""

    def __init__(self, name: str, proxy: ChaosProxy) -> None:
        self.name = name
        self.proxy = proxy
        self.numbers: list[int] = []
        self.gaps: list[ReplayGap] = []

    def on_message(self, message: Message) -> None:
        self.numbers.append(message["data"])

    def on_gap(self, gap: ReplayGap) -> None:
        self.gaps.append(gap)

    @property
    def done(self) -> bool:
        return len(self.numbers) >= COUNT


class LoopThread:
    """An event loop in a thread of its own, for the asyncio clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def chaos(
    proxies: Sequence[ChaosProxy],
    publisher: ChaosProxy,
    stop: threading.Event,
    rng: random.Random,
    restart: Callable[[], None],
    restarts: int,
) -> None:
    """Cut connections at random until ``stop``; ``restart`` a node ``restarts`` times."""
    next_restart = time.monotonic() + 0.5
    # Each turn cuts the subscriber cut least so far among those connected (one still
    # reconnecting has nothing to cut), so that each is cut as often as the others
    # however short or slow the run; every tenth turn the publisher's connection (its
    # cuts cost resends, not deliveries; cut much more often, a loaded machine spends
    # the whole run reconnecting it). When and how each cut happens stays random.
    for turn in itertools.count():
        if stop.wait(rng.uniform(0.01, 0.08)):
            break
        if turn % 10 == 9:
            publisher.cut(rng.choice(CUTS))
            continue
        connected = [proxy for proxy in proxies if proxy.open_connections] or list(proxies)
        min(connected, key=lambda proxy: proxy.cuts).cut(rng.choice(CUTS))
        if restarts and time.monotonic() >= next_restart:
            restart()
            restarts -= 1
            next_restart = time.monotonic() + rng.uniform(0.3, 1.0)


async def publish_all(client: AsyncBosBase) -> None:
    """Publish 1..COUNT in order, ``WINDOW`` at a time (pipelined)."""
    window = asyncio.Semaphore(WINDOW)

    async def one(number: int) -> None:
        try:
            await client.pubsub.publish(TOPIC, number)
        finally:
            window.release()

    tasks = []
    for number in range(1, COUNT + 1):
        await window.acquire()
        tasks.append(asyncio.ensure_future(one(number)))
    await asyncio.gather(*tasks)


async def consume_stream(
    client: AsyncBosBase, subscriber: Subscriber, ready: asyncio.Event
) -> None:
    async with client.pubsub.stream(TOPIC, on_gap=subscriber.on_gap) as messages:
        ready.set()
        async for message in messages:
            subscriber.on_message(message)
            if subscriber.done:
                return


def run_chaos(
    nodes: Sequence[ServerProcess],
    *,
    restarts: int,
    seed: int,
) -> None:
    rng = random.Random(seed)
    token = http_sign_in(nodes[0].url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    port_of = {node: int(node.url.rsplit(":", 1)[1]) for node in nodes}
    first = port_of[nodes[0]]
    proxies = [ChaosProxy(first).start() for _ in range(3)]
    publisher_proxy = ChaosProxy(port_of[nodes[-1]]).start()
    everything = [*proxies, publisher_proxy]
    subscribers = [
        Subscriber("sync handler", proxies[0]),
        Subscriber("async handler", proxies[1]),
        Subscriber("async stream", proxies[2]),
    ]
    loop = LoopThread()
    sync_client = BosBase(proxies[0].url, timeout=TIMEOUTS, reconnect=FAST_RECONNECT)
    async_clients = [
        AsyncBosBase(proxy.url, timeout=TIMEOUTS, reconnect=FAST_RECONNECT) for proxy in proxies[1:]
    ]
    publisher = AsyncBosBase(
        publisher_proxy.url, auth_store=AuthStore(token), timeout=TIMEOUTS, reconnect=FAST_RECONNECT
    )
    stop = threading.Event()
    restarted: list[int] = []

    def restart() -> None:
        # New connections go to another node; then this one goes away and comes back.
        victim = nodes[len(restarted) % len(nodes)]
        other = nodes[(len(restarted) + 1) % len(nodes)]
        for proxy in everything:
            proxy.retarget(port_of[other])
        victim.restart()
        restarted.append(port_of[victim])

    try:
        sync_client.pubsub.subscribe(TOPIC, subscribers[0].on_message, on_gap=subscribers[0].on_gap)
        loop.run(
            async_clients[0].pubsub.subscribe(
                TOPIC, subscribers[1].on_message, on_gap=subscribers[1].on_gap
            )
        )

        async def start_stream() -> Any:
            ready = asyncio.Event()
            task = asyncio.ensure_future(consume_stream(async_clients[1], subscribers[2], ready))
            await asyncio.wait_for(ready.wait(), 10)
            return task

        loop.run(start_stream())
        cutter = threading.Thread(
            target=chaos,
            args=(proxies, publisher_proxy, stop, rng, restart, restarts),
            daemon=True,
        )
        started = time.monotonic()
        cutter.start()
        loop.run(publish_all(publisher), timeout=DEADLINE)
        published = time.monotonic() - started
        # The chaos goes on while the subscribers catch up, and stops for the last stretch.
        catch_up = time.monotonic() + 1.0
        while time.monotonic() < catch_up and not all(s.done for s in subscribers):
            time.sleep(0.05)
        stop.set()
        cutter.join(30)
        deadline = started + DEADLINE
        while not all(s.done for s in subscribers) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # anything extra (a duplicate) would show now
        elapsed = time.monotonic() - started
    except BaseException:
        for node in nodes:
            print("=== node", node.url, "\n" + "\n".join(node.logs[-80:]))
        raise
    finally:
        stop.set()
        sync_client.close()
        for client in [*async_clients, publisher]:
            loop.run(client.close())
        loop.stop()
        for proxy in everything:
            proxy.close()

    report = ", ".join(
        f"{s.name}: {len(s.numbers)} messages, {s.proxy.cuts} cuts, {s.proxy.accepted} connections"
        for s in subscribers
    )
    print(
        f"seed {seed}: published in {published:.1f}s, delivered in {elapsed:.1f}s; {report};"
        f" publisher: {publisher_proxy.cuts} cuts; node restarts: {len(restarted)}"
    )
    expected = list(range(1, COUNT + 1))
    failures = []
    for subscriber in subscribers:
        try:
            check(subscriber, expected, seed)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures)
    assert len(restarted) == restarts


def check(subscriber: Subscriber, expected: list[int], seed: int) -> None:
    assert subscriber.gaps == [], subscriber.name
    if subscriber.numbers != expected:
        seen = set(subscriber.numbers)
        missing = [n for n in expected if n not in seen]
        doubles = len(subscriber.numbers) - len(seen)
        wrong = next(
            (
                i
                for i, (a, b) in enumerate(zip(subscriber.numbers, expected, strict=False))
                if a != b
            ),
            None,
        )
        around = [] if wrong is None else subscriber.numbers[max(0, wrong - 3) : wrong + 5]
        raise AssertionError(
            f"{subscriber.name}: {len(subscriber.numbers)} messages, {len(missing)} missing"
            f" (first {missing[:5]}), {doubles} doubles, out of order at {wrong}:"
            f" {around}; seed {seed}"
        )
    assert subscriber.proxy.cuts >= 3, f"{subscriber.name} was hardly cut"


def seed() -> int:
    return int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))


@pytest.fixture
def chaos_seed() -> int:
    """Random each run (printed with the result); ``CHAOS_SEED`` replays one."""
    return seed()


@BOTH_BACKENDS
def test_every_subscriber_gets_every_message_once_in_order_through_cuts(
    start_server: StartServer, chaos_seed: int
) -> None:
    server = start_server(*SERVE_ARGS)
    run_chaos([server], restarts=1, seed=chaos_seed)


@pytest.mark.parametrize("backend", ["postgres", "nats"], indirect=True)
def test_every_subscriber_gets_every_message_once_in_order_through_node_restarts(
    start_server: StartServer, chaos_seed: int
) -> None:
    first = start_server(*SERVE_ARGS)
    assert first.db_url is not None
    second = start_server(*SERVE_ARGS, db_url=first.db_url)
    run_chaos([first, second], restarts=2, seed=chaos_seed)
