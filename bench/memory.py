"""Memory per idle subscribed connection: server RSS delta for N idle subscribers, over N.

    uv run python -m bench.memory --servers bosbase,ws,socketio-node,socketio-py --connections 5000

Per server and repetition: start a fresh server, warm it up (a few subscribers and a
short fan-out, then disconnect), read its VmRSS (median of several samples), connect N
WebSocket connections that each subscribe to the topic and then stay idle, wait for the
server to settle, read VmRSS again. Reported: (after - before) / N in KiB, and the
absolute RSS. Kernel socket buffers are not in RSS (they are not the server's heap).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import (
    BASELINE,
    Json,
    LoadGen,
    Server,
    ServerKind,
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


def sample_rss(server: Server, samples: int = 5, spacing: float = 0.2) -> float:
    vals: list[float] = []
    for _ in range(samples):
        vals.append(float(server.rss()))
        time.sleep(spacing)
    m = median(vals)
    assert m is not None
    return m


def run_once(kind: ServerKind, args: argparse.Namespace, workdir: Path) -> Json:
    lopts = loadgen_options(args)
    lopts.probes = 0  # every subscriber is read as soon as it is readable (they are idle)
    with Server(kind, server_options(args), workdir) as server:
        rss_start = server.rss()
        warm = min(100, args.connections)
        with LoadGen(server, warm, 1, lopts) as lg:
            lg.expect("ready", 120)
            lg.send("fanout 20 2 5")
            lg.expect("fanout", 60)
        time.sleep(args.settle)
        before = sample_rss(server)
        with LoadGen(server, args.connections, 0, lopts) as lg:
            ready = lg.expect("ready", 300)
            time.sleep(args.settle)
            after = sample_rss(server)
            cpu_idle0 = server.cpu()
            time.sleep(args.idle_cpu_seconds)
            idle_cpu = (server.cpu() - cpu_idle0) / args.idle_cpu_seconds
        return {
            "connections": args.connections,
            "rss_start_mib": rss_start / 2**20,
            "rss_before_mib": before / 2**20,
            "rss_after_mib": after / 2**20,
            "kib_per_connection": (after - before) / args.connections / 1024,
            "setup_seconds": ready["setup_seconds"],
            "idle_server_cpu_pct": idle_cpu * 100,
        }


METRICS = (
    "kib_per_connection",
    "rss_start_mib",
    "rss_before_mib",
    "rss_after_mib",
    "setup_seconds",
    "idle_server_cpu_pct",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    add_common_args(p, "bosbase,ws,socketio-node,socketio-py")
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    p.add_argument("--idle-cpu-seconds", type=float, default=3.0, help="idle CPU sample length")
    args = p.parse_args(argv)
    if not (1 <= args.connections <= 50_000 and 1 <= args.repeat <= 20):
        p.error("out of range: --connections 1..50000, --repeat 1..20")
    kinds = parse_servers(args.servers)
    results = run_servers(
        kinds,
        args,
        "bench-memory-",
        run_once,
        lambda runs: {m: median([r[m] for r in runs]) for m in METRICS},
    )

    base = results.get(BASELINE, {}).get("median", {})
    rows: list[list[str]] = []
    for name, r in results.items():
        m = r.get("median")
        if not m:
            rows.append([name, "failed"] + [""] * 5)
            continue
        rows.append(
            [
                name,
                fmt(m["kib_per_connection"], ".1f"),
                ratio(m["kib_per_connection"], base.get("kib_per_connection")),
                fmt(m["rss_before_mib"], ".1f"),
                fmt(m["rss_after_mib"], ".1f"),
                fmt(m["setup_seconds"], ".2f"),
                fmt(m["idle_server_cpu_pct"], ".1f"),
            ]
        )
    print(f"\nMemory: {args.connections} idle subscribed connections, medians of {args.repeat}")
    print_table(
        [
            "server",
            "KiB/conn",
            "vs ws",
            "RSS before MiB",
            "RSS after MiB",
            "connect s",
            "idle CPU%",
        ],
        rows,
    )
    return finish("memory", args, results)


if __name__ == "__main__":
    run_main(main)
