"""Acked publishes per second through the store, with 1 and with 64 concurrent publishers.

    uv run python -m bench.publish --servers bosbase,ws --concurrency 1,64 --duration 10

Each publisher sends a ``publish`` and waits for its ``published`` ack (sent by bosbase
only once the message is stored) before sending the next one. Reported: acks/s, p50/p99
ack latency, and the server's CPU microseconds per ack. The bare Node ``ws`` baseline has
no store: its row is the round trip of the same envelopes, a reference, not a rival.
By default nobody subscribes to the topic, so this measures the publish path alone
(--subscribers adds fan-out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    BASELINE,
    Json,
    LoadGen,
    Server,
    ServerKind,
    Snapshot,
    add_common_args,
    finish,
    fmt,
    loadgen_options,
    median,
    parse_servers,
    print_table,
    ratio,
    run_main,
    run_servers,
    server_options,
)


def run_acked(lg: LoadGen, server: Server, conc: int, duration: float) -> Json:
    s0 = Snapshot.take(server, lg)
    lg.send(f"acked {conc} {duration}")
    res = lg.expect("acked", duration + 60)
    s1 = Snapshot.take(server, lg)
    acks = res["acks"]
    lat = res["latency"]
    return {
        "concurrency": conc,
        "acks_per_s": res["acks_per_s"],
        "acks": acks,
        "errors": res["errors"],
        "first_error": res["first_error"],
        "p50_ms": lat["p50_ms"] if lat["count"] else None,
        "p99_ms": lat["p99_ms"] if lat["count"] else None,
        "server_us_per_ack": (s1.server_cpu - s0.server_cpu) / acks * 1e6 if acks else None,
        "loadgen_us_per_ack": (s1.loadgen_cpu - s0.loadgen_cpu) / acks * 1e6 if acks else None,
        "server_util": (s1.server_cpu - s0.server_cpu) / (s1.wall - s0.wall),
        "raw": res,
    }


def run_once(kind: ServerKind, args: argparse.Namespace, workdir: Path) -> dict[int, Json]:
    out: dict[int, Json] = {}
    with (
        Server(kind, server_options(args), workdir) as server,
        LoadGen(server, args.subscribers, max(args.concurrency), loadgen_options(args)) as lg,
    ):
        lg.expect("ready", 180)
        for conc in args.concurrency:
            if args.warmup > 0:
                lg.send(f"acked {conc} {args.warmup}")
                lg.expect("acked", args.warmup + 60)
            out[conc] = run_acked(lg, server, conc, args.duration)
            if out[conc]["errors"]:
                print(
                    f"    {kind.name} c={conc}: {out[conc]['errors']} errors,"
                    f" first: {out[conc]['first_error']}",
                    file=sys.stderr,
                )
    return out


METRICS = (
    "acks_per_s",
    "p50_ms",
    "p99_ms",
    "errors",
    "server_us_per_ack",
    "loadgen_us_per_ack",
    "server_util",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.split("\n")[0])
    add_common_args(p, "bosbase,ws")
    p.add_argument("--concurrency", default="1,64", help="comma list of publisher counts")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--subscribers", type=int, default=0, help="subscribers on the topic")
    args = p.parse_args(argv)
    args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    if not args.concurrency or min(args.concurrency) < 1 or max(args.concurrency) > 10_000:
        p.error("--concurrency values must be 1..10000")
    if not (1 <= args.repeat <= 20 and 0 < args.duration <= 600 and args.subscribers >= 0):
        p.error("out of range: --repeat 1..20, --duration 0..600")
    kinds = parse_servers(args.servers)
    results = run_servers(
        kinds,
        args,
        "bench-publish-",
        run_once,
        lambda runs: {
            str(c): {m: median([r[c][m] for r in runs]) for m in METRICS} for c in args.concurrency
        },
    )

    base = results.get(BASELINE, {}).get("median", {})
    rows: list[list[str]] = []
    for name, r in results.items():
        for c in args.concurrency:
            m = r.get("median", {}).get(str(c))
            if not m:
                rows.append([name, str(c), "failed"] + [""] * 7)
                continue
            b = base.get(str(c), {})
            rows.append(
                [
                    name,
                    str(c),
                    fmt(m["acks_per_s"]),
                    ratio(m["acks_per_s"], b.get("acks_per_s")),
                    fmt(m["p50_ms"], ".2f"),
                    fmt(m["p99_ms"], ".2f"),
                    fmt(m["errors"]),
                    fmt(m["server_us_per_ack"], ".1f"),
                    fmt((m["server_util"] or 0) * 100, ".0f"),
                    fmt(m["loadgen_us_per_ack"], ".1f"),
                ]
            )
    print(
        f"\nAcked publishes: {args.duration}s per concurrency, {args.subscribers} subscribers,"
        f" medians of {args.repeat}"
    )
    print_table(
        [
            "server",
            "publishers",
            "acks/s",
            "vs ws",
            "p50 ms",
            "p99 ms",
            "errors",
            "srv us/ack",
            "srv CPU%",
            "loadgen us/ack",
        ],
        rows,
    )
    return finish("publish", args, results)


if __name__ == "__main__":
    run_main(main)
