"""Delivery CPU per message with 10,000 exact vs 10,000 pattern subscriptions (``Hub`` alone).

    uv run python -m bench.wildcards --subscriptions 10000 --messages 200000 --repeat 5

One ``Hub`` in this process, ``--subscriptions`` subscribers with one subscription
each, and ``Hub.deliver`` called with batches of ``--batch`` messages on random
topics ``room/K/chat`` (each reaches one subscriber, as a private or per-room topic
would). The workloads, each on a fresh hub:

* ``exact``: subscriber K subscribes ``room/K/chat`` (the exact-topic fast path);
* ``one``: subscriber K subscribes ``room/K/*``;
* ``deep``: subscriber K subscribes ``room/K/**``;
* ``mixed``: a third each ``room/K/*``, ``room/K/**`` and ``*/K/chat`` (two ``*``
  branches to walk at the root).

The transports are counters (``write`` adds up bytes, the buffer is always
empty): what is measured is the hub's own work per message (finding the
subscribers, building the frame once, dispatching it), without the kernel's
send, which is the same for every workload. So the ratios are the strictest
form of "matching must stay fast". Reported: this process's CPU microseconds
per delivered message (``time.process_time``), median over ``--repeat`` runs, and
each workload's ratio to ``exact``. It prints a table and one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import cast

import orjson

from bosbase_pubsub.server.hub import Hub, Subscriber
from bosbase_pubsub.server.metrics import Metrics
from bosbase_pubsub.server.storage import Message
from bosbase_pubsub.topics import is_pattern, subscription_key

from .common import Json, machine_info, print_table

WORKLOADS = ("exact", "one", "deep", "mixed")


class CountingTransport:
    """Takes the hub's writes and counts their bytes; never buffers, never closes."""

    __slots__ = ("written",)

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def subscription(workload: str, k: int) -> str:
    if workload == "exact":
        return f"room/{k}/chat"
    if workload == "one":
        return f"room/{k}/*"
    if workload == "deep":
        return f"room/{k}/**"
    return (f"room/{k}/*", f"room/{k}/**", f"*/{k}/chat")[k % 3]


def run_once(workload: str, args: argparse.Namespace, seed: int) -> Json:
    hub = Hub(Metrics(), outbound_buffer_bytes=4 * 1024 * 1024)
    transports = []
    for k in range(args.subscriptions):
        transport = CountingTransport()
        transports.append(transport)
        subscriber = Subscriber(f"c{k}", cast(asyncio.Transport, transport), "bench")
        topic = subscription(workload, k)
        hub.subscribe(subscriber, subscription_key(topic, is_pattern(topic)))
    rng = random.Random(seed)
    data = orjson.dumps({"x": "a" * max(0, args.payload - 8)})
    batches = []
    seq = 0
    for _ in range(args.messages // args.batch):
        batch = []
        for _ in range(args.batch):
            seq += 1
            batch.append(
                Message(
                    id=f"m{seq:014d}",
                    topic=f"room/{rng.randrange(args.subscriptions)}/chat",
                    data=data,
                    created="2025-01-01 00:00:00.000Z",
                    origin="bench",
                    created_by="bench",
                    seq=seq,
                )
            )
        batches.append(batch)
    cpu = time.process_time()
    for batch in batches:
        hub.deliver(batch)
    cpu = time.process_time() - cpu
    delivered = sum(1 for t in transports if t.written)  # subscribers reached at least once
    messages = len(batches) * args.batch
    return {
        "us_per_message": cpu / messages * 1e6,
        "messages": messages,
        "subscribers_reached": delivered,
        "bytes": sum(t.written for t in transports),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.wildcards", description=__doc__.split("\n")[0]
    )
    p.add_argument("--subscriptions", type=int, default=10_000)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=1, help="messages per Hub.deliver call")
    p.add_argument("--payload", type=int, default=64, help="bytes of JSON data per message")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    args = p.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    if not (
        1 <= args.subscriptions <= 1_000_000
        and 1 <= args.batch <= 2000
        and args.batch <= args.messages <= 10_000_000
        and 1 <= args.repeat <= 50
        and set(workloads) <= set(WORKLOADS)
    ):
        p.error("out of range (see --help)")
    results: dict[str, Json] = {}
    for workload in workloads:
        runs = [run_once(workload, args, seed) for seed in range(args.repeat)]
        results[workload] = {
            "runs": runs,
            "median_us_per_message": statistics.median(r["us_per_message"] for r in runs),
        }
    base = results.get("exact", {}).get("median_us_per_message")
    rows = []
    for workload, entry in results.items():
        value = entry["median_us_per_message"]
        entry["ratio_to_exact"] = value / base if base else None
        rows.append([workload, f"{value:.2f}", "-" if not base else f"{value / base:.2f}x"])
    print_table(["workload", "us/message (median)", "vs exact"], rows)
    print(
        orjson.dumps(
            {
                "benchmark": "wildcards",
                "machine": machine_info(),
                "params": vars(args),
                "results": results,
            }
        ).decode()
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
