"""Fresh NATS JetStream stores for the cluster benchmark, and the NATS server's CPU.

A benchmark store is a stream (and its KV buckets) named ``bench_<random>`` on the
``--nats`` server, deleted afterwards, so runs never collide with each other, with
the tests, or with a deployment's own ``_pubsub_messages`` stream.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

from .common import CLK_TCK

DEFAULT_NATS = "nats://127.0.0.1:4222"


def _bench_stream(url: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}stream=bench_{secrets.token_hex(4)}"


async def _drop(url: str) -> None:
    from bosbase_pubsub.server.storage.jetstream_common import delete_store, parse_url

    if not parse_url(url).stream.startswith("bench_"):
        raise ValueError(f"not a benchmark stream: {url}")
    await delete_store(url)


@contextlib.asynccontextmanager
async def fresh_stream(server_url: str) -> AsyncIterator[str]:
    """A store URL on ``server_url`` whose stream and buckets nobody else uses; deleted on exit."""
    url = _bench_stream(server_url)
    try:
        yield url
    finally:
        await _drop(url)


def process_cpu_seconds(name: str) -> float:
    """utime+stime of every local process called ``name`` (0 when none runs here)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] != name:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK
