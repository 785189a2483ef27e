"""Memory soak: server RSS over a long fan-out at a steady delivery rate.

    uv run python -m bench.soak                       # bosbase, 10 minutes at 50,000 deliveries/s
    uv run python -m bench.soak --duration 120 --deliveries-per-s 20000

One fresh server (``--servers``, one; bosbase with its default ``serve`` command line)
pinned to --server-cpu, the C load generator (on --loadgen-cpu) with S subscribers on
one topic and P publishers sending open loop at ``deliveries-per-s / S`` messages per
second for --duration seconds, every delivery counted and de-duplicated. Meanwhile the
server's VmRSS (process and descendants, /proc/PID/status) is sampled every
--sample-interval seconds. Reported: RSS at the start (subscribers connected, before
publishing), after --warmup, at the end and the maximum, the least-squares slope after
the warm-up in MiB per minute, deliveries/s, p50/p99 latency, lost and duplicated
messages. Bounded: --duration at most 3600 s, and every wait on the load generator has a deadline.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory

from .common import (
    BenchError,
    Json,
    LoadGen,
    Server,
    ServerKind,
    Snapshot,
    add_common_args,
    fmt,
    loadgen_options,
    machine_info,
    managed,
    other_load,
    parse_servers,
    prepare,
    run_main,
    server_options,
    write_result,
)

MIB = 2**20


def slope_per_minute(samples: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute; None below 2 points."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 60.0


def rss_summary(samples: Sequence[tuple[float, float]], warmup: float) -> Json:
    """Start, after-warm-up, end and maximum of (seconds, MiB) samples, the slope after
    the warm-up (the samples at or after ``warmup`` seconds) and over the second half of
    the run (a warm-up too short for the caches to fill shows as a smaller slope there)."""
    if not samples:
        return {"start_mib": None, "warm_mib": None, "end_mib": None, "max_mib": None,
                "slope_mib_per_min": None, "growth_after_warmup_mib": None,
                "slope_last_half_mib_per_min": None}  # fmt: skip
    warm = [s for s in samples if s[0] >= warmup] or [samples[-1]]
    half = samples[-1][0] / 2
    return {
        "start_mib": samples[0][1],
        "warm_mib": warm[0][1],
        "end_mib": samples[-1][1],
        "max_mib": max(v for _, v in samples),
        "slope_mib_per_min": slope_per_minute(warm),
        "growth_after_warmup_mib": samples[-1][1] - warm[0][1],
        "slope_last_half_mib_per_min": slope_per_minute([s for s in samples if s[0] >= half]),
    }


def run(kind: ServerKind, args: argparse.Namespace, workdir: Path) -> Json:
    rate = args.deliveries_per_s / args.subscribers
    samples: list[tuple[float, float]] = []
    with (
        Server(kind, server_options(args), workdir) as server,
        LoadGen(server, args.subscribers, args.publishers, loadgen_options(args)) as lg,
    ):
        ready = lg.expect("ready", 300)
        s0 = Snapshot.take(server, lg)
        t0 = time.monotonic()
        samples.append((0.0, server.rss() / MIB))
        lg.send(f"fanout {rate} {args.duration} {args.drain}")
        next_report = t0 + 60.0
        while True:
            end = lg.poll("window_end", args.sample_interval)
            now = time.monotonic()
            samples.append((now - t0, server.rss() / MIB))
            if now >= next_report:
                print(f"  {now - t0:5.0f} s: RSS {samples[-1][1]:.1f} MiB", file=sys.stderr)
                next_report += 60.0
            if end is not None:
                break
            if now - t0 > args.duration + 120:
                raise BenchError("the load generator did not end its window in time")
            if not server.alive():
                raise BenchError("the server died during the soak")
        s1 = Snapshot.take(server, lg)
        res = lg.expect("fanout", args.drain + 60)
        samples.append((time.monotonic() - t0, server.rss() / MIB))
    window = s1.wall - s0.wall
    out: Json = {
        "server": kind.name,
        "subscribers": args.subscribers,
        "publishers": args.publishers,
        "rate": rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "setup_seconds": ready["setup_seconds"],
        "deliveries_per_s": res["window_deliveries_per_s"],
        "offered_deliveries_per_s": res["offered_deliveries_per_s"],
        "published": res["published"],
        "lost": res["lost"],
        "duplicates": res["duplicates"],
        "publish_errors": res["publish_errors"],
        "closed": res["closed"],
        "p50_ms": res["latency"]["p50_ms"],
        "p99_ms": res["latency"]["p99_ms"],
        "server_util": (s1.server_cpu - s0.server_cpu) / window if window > 0 else None,
        "loadgen_util": (s1.loadgen_cpu - s0.loadgen_cpu) / window if window > 0 else None,
        "server_core_other_util": other_load(s0, s1),
        **rss_summary(samples, args.warmup),
        "samples": samples,
    }
    return out


def report(r: Json) -> None:
    print()
    print(
        f"Soak: {r['server']}, {r['subscribers']} subscribers, {r['publishers']} publisher(s),"
        f" {r['rate']:g} msg/s ({fmt(r['offered_deliveries_per_s'])} deliveries/s offered)"
        f" for {r['duration']:g} s"
    )
    print(
        f"  delivered {fmt(r['deliveries_per_s'])}/s, lost {r['lost']}, duplicates"
        f" {r['duplicates']}, publish errors {r['publish_errors']}, p50"
        f" {fmt(r['p50_ms'], '.2f')} ms, p99 {fmt(r['p99_ms'], '.2f')} ms, server CPU"
        f" {fmt((r['server_util'] or 0) * 100, '.0f')}%, other work on its core"
        f" {fmt((r['server_core_other_util'] or 0) * 100, '.0f')}%"
    )
    print(
        f"  RSS MiB: start {fmt(r['start_mib'], '.1f')}, after {r['warmup']:g} s warm-up"
        f" {fmt(r['warm_mib'], '.1f')}, end {fmt(r['end_mib'], '.1f')}, max"
        f" {fmt(r['max_mib'], '.1f')}; after the warm-up: slope"
        f" {fmt(r['slope_mib_per_min'], '.3f')} MiB/min, growth"
        f" {fmt(r['growth_after_warmup_mib'], '.1f')} MiB; second half: slope"
        f" {fmt(r['slope_last_half_mib_per_min'], '.3f')} MiB/min"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    add_common_args(p, "bosbase")
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--publishers", type=int, default=1)
    p.add_argument("--deliveries-per-s", type=float, default=50_000.0)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of publishing")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the slope counts")
    p.add_argument("--sample-interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--drain", type=float, default=10.0, help="max seconds to wait for stragglers")
    p.add_argument("--probes", type=int, default=10, help="subscribers timed for latency")
    p.add_argument("--bulk-interval-ms", type=int, default=50, help="read period of the rest")
    args = p.parse_args(argv)
    if not (1 <= args.subscribers <= 50_000 and 1 <= args.publishers <= 100):
        p.error("out of range: --subscribers 1..50000, --publishers 1..100")
    if not (0 < args.duration <= 3600 and 0 <= args.warmup < args.duration):
        p.error("out of range: --duration 0..3600 s, --warmup 0..duration")
    if not (0 < args.deliveries_per_s / args.subscribers <= 100_000):
        p.error("out of range: --deliveries-per-s / --subscribers must be 0..100000 msg/s")
    if not (0.5 <= args.sample_interval <= 60):
        p.error("out of range: --sample-interval 0.5..60 s")
    kinds = parse_servers(args.servers)
    if len(kinds) != 1:
        p.error("--servers: one server at a time")
    kind = kinds[0]
    with managed(), TemporaryDirectory(prefix="bench-soak-") as tmp:
        prepare([kind])
        result = run(kind, args, Path(tmp))
    report(result)
    out = write_result(
        "soak",
        {
            "benchmark": "soak",
            "machine": machine_info(),
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "result": result,
        },
        args.out,
    )
    print(f"\nresults: {out}")
    return 0 if result["lost"] == 0 and result["duplicates"] == 0 else 1


if __name__ == "__main__":
    run_main(main)
