"""``serve --workers N``: real worker processes sharing one port on PostgreSQL.

Connections spread over the workers; a message published to any of them
reaches every subscriber once, in order; a worker killed with SIGKILL is
started again and its clients resume without loss; the supervisor's SIGTERM
drains every worker (close 1001, exit 0), and its death ends them; SQLite is
refused. ``/metrics`` on any worker shows every worker.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bosbase_pubsub import AsyncBosBase, Reconnect
from bosbase_pubsub.server.workers import default_workers, usable_cpus

from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer, make_superuser
from ..servers import ServerProcess, WsClient, cli, scrape_metrics, sign_in
from .test_cluster import TOPIC, Subscriber, assert_in_publisher_order, publish_numbered, stored


@pytest.fixture
def cluster_db(pg_database: str, tmp_path: Path) -> str:
    make_superuser(tmp_path / "accounts", pg_database)
    return pg_database


def worker_pids(server: ServerProcess) -> dict[int, int]:
    """The newest pid of each worker, from the supervisor's log."""
    pids: dict[int, int] = {}
    for line in server.logs:
        match = re.search(r"worker (\d+) started \(pid (\d+)\)", line)
        if match:
            pids[int(match.group(1))] = int(match.group(2))
    return pids


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def eventually(condition: Callable[[], bool], timeout: float) -> None:
    """Poll ``condition`` every 50 ms for at most ``timeout`` seconds."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)


async def connections_per_worker(server: ServerProcess) -> dict[str, float]:
    metrics = await scrape_metrics(server.url)
    return {
        name: value for name, value in metrics.items() if name.startswith("pubsub_connections{")
    }


async def test_workers_share_the_port_and_deliver_every_message_once_in_order(
    start_server: StartServer, cluster_db: str
) -> None:
    server = start_server("--workers", "2", db_url=cluster_db)
    assert "with 2 workers" in server.wait_for_log("serving on")
    token = (await sign_in(server.url, "_superusers", SUPERUSER_EMAIL, SUPERUSER_PASSWORD))["token"]
    subscribers = [await Subscriber.on(server) for _ in range(16)]
    publishers = [await WsClient.connect(server.ws_url, token=token) for _ in range(4)]
    try:
        # The kernel spread the connections; any worker's /metrics shows both.
        per_worker = await connections_per_worker(server)
        assert set(per_worker) == {
            'pubsub_connections{worker="1"}',
            'pubsub_connections{worker="2"}',
        }
        assert sum(per_worker.values()) == 20
        assert min(per_worker.values()) > 0, per_worker
        metrics = await scrape_metrics(server.url)
        assert (
            metrics['pubsub_worker_up{worker="1"}'] == metrics['pubsub_worker_up{worker="2"}'] == 1
        )

        acked = await asyncio.gather(
            *(publish_numbered(client, f"p{i}", 50) for i, client in enumerate(publishers))
        )
        rows = await stored(cluster_db)
        assert {row["id"] for row in rows} == {i for ids in acked for i in ids}
        for subscriber in subscribers:
            await subscriber.wait_for(len(rows))
        await asyncio.sleep(0.3)  # time for a duplicate to show up, if any would
        for subscriber in subscribers:
            subscriber.drain()
            assert subscriber.ids() == [row["id"] for row in rows]  # once each, in seq order
            assert_in_publisher_order(subscriber.received)
    finally:
        for client in publishers:
            await client.close()
    # SIGTERM to the supervisor: every worker drains, closing its sockets with 1001.
    assert server.stop() == 0
    for subscriber in subscribers:
        await asyncio.wait_for(subscriber.client.closed.wait(), 10)
        assert subscriber.client.ws.close_code == 1001
        await subscriber.client.session.close()
    assert "shutting down 2 workers" in server.log_text()


async def test_a_killed_worker_is_restarted_and_its_clients_resume_without_loss(
    start_server: StartServer, cluster_db: str
) -> None:
    server = start_server("--workers", "2", db_url=cluster_db)
    fast = Reconnect(initial_delay=0.05, max_delay=0.3)
    publisher = AsyncBosBase(server.url, reconnect=fast)
    subscribers = [AsyncBosBase(server.url, reconnect=fast) for _ in range(8)]
    received: list[list[dict[str, Any]]] = [[] for _ in subscribers]
    try:
        await publisher.collection("_superusers").auth_with_password(
            SUPERUSER_EMAIL, SUPERUSER_PASSWORD
        )
        for inbox, client in zip(received, subscribers, strict=True):
            await client.pubsub.subscribe(TOPIC, inbox.append)
        assert min((await connections_per_worker(server)).values()) > 0
        victim, pid = next(iter(worker_pids(server).items()))
        acked: list[str] = []
        for n in range(300):
            if n == 100:
                os.kill(pid, signal.SIGKILL)  # mid-stream
            # The SDK resends a publish lost with its worker (same key: stored once).
            acked.append((await publisher.pubsub.publish(TOPIC, {"p": "one", "n": n}))["id"])
            await asyncio.sleep(0.002)
        server.wait_for_log(rf"worker {victim} \(pid {pid}\) exited with code -9; restarting")
        assert worker_pids(server)[victim] != pid  # started again

        rows = await stored(cluster_db)
        assert [row["id"] for row in rows] == acked  # each publish stored once, in order
        await eventually(lambda: all(len(inbox) >= len(rows) for inbox in received), 30)
        await asyncio.sleep(0.3)
        for inbox in received:
            assert [m["id"] for m in inbox] == acked  # no gap, no duplicate, in order
    finally:
        for client in [publisher, *subscribers]:
            await client.close()


async def test_the_workers_end_when_their_supervisor_is_killed(
    start_server: StartServer, cluster_db: str
) -> None:
    server = start_server("--workers", "auto", db_url=cluster_db)
    pids = list(worker_pids(server).values())
    assert len(pids) == usable_cpus()  # auto on PostgreSQL: one per CPU it may use
    server.kill()  # SIGKILL: no chance to stop them
    await eventually(lambda: not any(running(pid) for pid in pids), 15)
    assert not any(running(pid) for pid in pids), "a worker outlived its supervisor"


def test_auto_counts_the_cpus_the_server_may_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pinned to one core (taskset -c 0, a cpuset) on a bigger machine: one process.
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_workers("postgres://db") == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert default_workers("postgresql://db") == 3
    assert default_workers(None) == 1  # SQLite: one process


def test_workers_are_refused_on_sqlite(tmp_path: Path) -> None:
    result = cli("serve", "--workers", "2", "--dir", str(tmp_path / "pb_data"))
    assert result.returncode == 2
    assert "--workers 2 needs a PostgreSQL or NATS store" in result.stderr
