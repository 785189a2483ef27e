"""Fan-out benchmark: S subscribers on one topic, publishers at a set rate.

    uv run python -m bench.fanout --servers bosbase,ws,socketio-node,socketio-py \\
        --subscribers 1000 --rate 50 --duration 20
    uv run python -m bench.fanout --saturate          # raise the rate until saturation
    uv run python -m bench.fanout --burst --servers bosbase,ws   # 10 publishers at full speed

Per server and repetition a fresh server is started (pinned with taskset, on a free
loopback port, fresh data folder), the C load generator connects S subscribers and P
publishers, runs a short warm-up, then the measured step. Reported: deliveries/s,
p50/p99 publish-to-delivery latency (probe subscribers), lost messages, the server's
CPU microseconds per delivery (utime+stime from /proc/PID/stat) and the load
generator's own. The table shows medians over --repeat runs and ratios against the
bare Node ``ws`` baseline.

``--burst``: closed loop instead of a set rate. ``--concurrency`` publishers each send a
publish and wait for its ack before the next (at full speed), for ``--duration`` seconds
and at most ``--burst-max-rate`` x duration messages (the subscribers' bitmap bound),
while every subscriber counts, de-duplicates and (the probes) times every delivery.
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
    bosbase_variant,
    finish,
    fmt,
    loadgen_options,
    median,
    other_load,
    parse_servers,
    print_table,
    ratio,
    run_main,
    run_servers,
    server_options,
)


def add_costs(res: Json, s0: Snapshot, s1: Snapshot, s2: Snapshot) -> None:
    """CPU figures of a step into its report: s0 at the start, s1 at the window's end,
    s2 after the drain (CPU per delivery counts the drain, utilisation only the window)."""
    delivered = res["delivered"]
    window = s1.wall - s0.wall
    res["server_cpu_s"] = s2.server_cpu - s0.server_cpu
    res["loadgen_cpu_proc_s"] = s2.loadgen_cpu - s0.loadgen_cpu
    res["server_util"] = (s1.server_cpu - s0.server_cpu) / window if window > 0 else None
    res["loadgen_util"] = (s1.loadgen_cpu - s0.loadgen_cpu) / window if window > 0 else None

    def per_delivery(seconds: float) -> float | None:
        return seconds / delivered * 1e6 if delivered else None

    res["server_us_per_delivery"] = per_delivery(res["server_cpu_s"])
    res["server_kernel_us_per_delivery"] = per_delivery(s2.server_kernel_cpu - s0.server_kernel_cpu)
    res["loadgen_us_per_delivery"] = per_delivery(res["loadgen_cpu_proc_s"])


def run_step(lg: LoadGen, server: Server, rate: float, duration: float, drain: float) -> Json:
    """One measured fan-out step; returns the load generator's report plus /proc figures."""
    s0 = Snapshot.take(server, lg)
    lg.send(f"fanout {rate} {duration} {drain}")
    lg.expect("window_end", duration + 60)
    s1 = Snapshot.take(server, lg)
    res = lg.expect("fanout", drain + 60)
    s2 = Snapshot.take(server, lg)
    add_costs(res, s0, s1, s2)
    res["lost_pct"] = 100.0 * res["lost"] / res["expected"] if res["expected"] else 0.0
    res["server_core_other_util"] = other_load(s0, s1)
    if (res["server_core_other_util"] or 0) > 0.1:
        print(
            f"    warning: {res['server_core_other_util']:.0%} of the server's core went to"
            " other work during this step (another benchmark running?)",
            file=sys.stderr,
        )
    return res


def run_burst(lg: LoadGen, server: Server, args: argparse.Namespace) -> Json:
    """One closed-loop burst step; the load generator's report plus /proc figures."""
    max_messages = max(1, int(args.burst_max_rate * args.duration))
    s0 = Snapshot.take(server, lg)
    lg.send(f"burst {args.concurrency} {args.duration} {args.drain} {max_messages}")
    lg.expect("window_end", args.duration + 60)
    s1 = Snapshot.take(server, lg)
    res = lg.expect("burst", args.drain + 60)
    s2 = Snapshot.take(server, lg)
    res["bound_reached"] = res["published"] >= max_messages
    add_costs(res, s0, s1, s2)
    res["server_core_other_util"] = other_load(s0, s1)
    if (res["server_core_other_util"] or 0) > 0.1:
        print(
            f"    warning: {res['server_core_other_util']:.0%} of the server's core went to"
            " other work during this step (another benchmark running?)",
            file=sys.stderr,
        )
    if res["bound_reached"]:
        print(
            f"    warning: the {max_messages} message bound was reached before --duration"
            " (raise --burst-max-rate)",
            file=sys.stderr,
        )
    return res


COSTS = (
    "publish_errors",
    "server_us_per_delivery",
    "server_kernel_us_per_delivery",
    "loadgen_us_per_delivery",
    "server_util",
    "loadgen_util",
    "server_core_other_util",
)
"""What every summary row carries over from the raw result as it is."""


def burst_summary(res: Json) -> Json:
    lat, ack = res["latency"], res["ack_latency"]
    return {
        "deliveries_per_s": res["window_deliveries_per_s"],
        "publishes_per_s": res["publishes_per_s"],
        "p50_ms": lat["p50_ms"] if lat["count"] else None,
        "p99_ms": lat["p99_ms"] if lat["count"] else None,
        "ack_p50_ms": ack["p50_ms"] if ack["count"] else None,
        "ack_p99_ms": ack["p99_ms"] if ack["count"] else None,
        "lost": res["lost"],
        "duplicates": res["duplicates"],
        **{key: res[key] for key in COSTS},
    }


def summary(res: Json) -> Json:
    lat = res["latency"]
    return {
        "rate": res["rate"],
        "offered_deliveries_per_s": res["offered_deliveries_per_s"],
        "deliveries_per_s": res["window_deliveries_per_s"],
        "p50_ms": lat["p50_ms"] if lat["count"] else None,
        "p99_ms": lat["p99_ms"] if lat["count"] else None,
        "lost": res["lost"],
        "lost_pct": res["lost_pct"],
        **{key: res[key] for key in COSTS},
    }


def saturated(res: Json, args: argparse.Namespace) -> bool:
    behind = res["window_deliveries_per_s"] < args.sat_keepup * res["offered_deliveries_per_s"]
    busy = (res["server_util"] or 0) >= args.sat_util
    # Keeping up on average while messages queue for a long time is not keeping up.
    slow = (res["latency"]["p99_ms"] or 0) > args.sat_p99_ms if res["latency"]["count"] else False
    return bool(behind or busy or slow or res["lost"] > 0)


def loadgen_bound(res: Json, args: argparse.Namespace) -> bool:
    """The load generator's own core is (nearly) full: past this it measures itself."""
    return bool((res["loadgen_util"] or 0) >= args.sat_loadgen_util)


def run_once(kind: ServerKind, args: argparse.Namespace, workdir: Path) -> Json:
    with (
        Server(kind, server_options(args), workdir) as server,
        LoadGen(server, args.subscribers, args.publishers, loadgen_options(args)) as lg,
    ):
        ready = lg.expect("ready", 180)
        if args.burst:
            if args.warmup > 0:
                warm = max(1, int(args.burst_max_rate * args.warmup))
                lg.send(f"burst {args.concurrency} {args.warmup} {args.drain} {warm}")
                lg.expect("burst", args.warmup + args.drain + 60)
            res = run_burst(lg, server, args)
            s = burst_summary(res)
            print(
                f"    {kind.name}: {fmt(s['deliveries_per_s'])} deliveries/s"
                f" ({fmt(s['publishes_per_s'])} publishes/s), p99 {fmt(s['p99_ms'], '.1f')} ms,"
                f" lost {s['lost']}, dups {s['duplicates']}, server CPU"
                f" {fmt((s['server_util'] or 0) * 100, '.0f')}%, loadgen CPU"
                f" {fmt((s['loadgen_util'] or 0) * 100, '.0f')}%",
                file=sys.stderr,
            )
            return {"setup_seconds": ready["setup_seconds"], "step": res, **s}
        if args.warmup > 0:
            lg.send(f"fanout {args.rate} {args.warmup} {args.drain}")
            lg.expect("fanout", args.warmup + args.drain + 60)
        if not args.saturate:
            res = run_step(lg, server, args.rate, args.duration, args.drain)
            return {"setup_seconds": ready["setup_seconds"], "step": res, **summary(res)}
        steps: list[Json] = []
        rate = args.sat_start_rate
        limited_by = "max-steps"
        for _ in range(args.sat_max_steps):
            res = run_step(lg, server, rate, args.sat_step_seconds, args.drain)
            steps.append(res)
            s = summary(res)
            print(
                f"    {kind.name}: {rate:8.1f} msg/s -> {fmt(s['deliveries_per_s'])} deliveries/s"
                f" (offered {fmt(s['offered_deliveries_per_s'])}), server CPU"
                f" {fmt((s['server_util'] or 0) * 100, '.0f')}%, lost {s['lost']},"
                f" p99 {fmt(s['p99_ms'], '.1f')} ms, loadgen CPU"
                f" {fmt((s['loadgen_util'] or 0) * 100, '.0f')}%",
                file=sys.stderr,
            )
            if loadgen_bound(res, args):
                # Checked first: once its own core is full, a shortfall may be its own.
                limited_by = "loadgen"
                break
            if saturated(res, args):
                limited_by = "server"
                break
            if rate >= args.sat_max_rate:
                limited_by = "max-rate"
                break
            rate = min(rate * args.sat_factor, args.sat_max_rate)
        # A step where the load generator's core was full does not measure the server.
        trusted = [r for r in steps if not loadgen_bound(r, args)] or steps
        peak = max(trusted, key=lambda r: r["window_deliveries_per_s"])
        ok = [r for r in trusted if not saturated(r, args)]
        out = summary(peak)
        out.update(
            {
                "peak_deliveries_per_s": peak["window_deliveries_per_s"],
                "sustained_deliveries_per_s": (
                    max(r["offered_deliveries_per_s"] for r in ok) if ok else None
                ),
                "limited_by": limited_by,
                "steps": steps,
                "setup_seconds": ready["setup_seconds"],
            }
        )
        return out


METRICS = (
    "deliveries_per_s",
    "publishes_per_s",
    "ack_p50_ms",
    "ack_p99_ms",
    "duplicates",
    "p50_ms",
    "p99_ms",
    "lost",
    "server_us_per_delivery",
    "server_kernel_us_per_delivery",
    "loadgen_us_per_delivery",
    "server_util",
    "loadgen_util",
    "peak_deliveries_per_s",
    "sustained_deliveries_per_s",
)


def medians(runs: list[Json]) -> Json:
    return {m: median([r.get(m) for r in runs]) for m in METRICS if any(m in r for r in runs)}


def report(results: dict[str, Json], args: argparse.Namespace) -> None:
    base = results.get(BASELINE, {}).get("median", {})
    rows: list[list[str]] = []
    for name, r in results.items():
        m = r.get("median")
        if not m:
            rows.append([name, "failed: " + r.get("error", "?")[:60]] + [""] * 8)
            continue
        lg_over_srv = (
            m["loadgen_us_per_delivery"] / m["server_us_per_delivery"]
            if m.get("loadgen_us_per_delivery") and m.get("server_us_per_delivery")
            else None
        )
        if args.burst:
            rows.append(
                [
                    name,
                    fmt(m.get("deliveries_per_s")),
                    ratio(m.get("deliveries_per_s"), base.get("deliveries_per_s")),
                    fmt(m.get("publishes_per_s")),
                    fmt(m.get("p50_ms"), ".2f"),
                    fmt(m.get("p99_ms"), ".2f"),
                    fmt(m.get("ack_p99_ms"), ".2f"),
                    fmt(m.get("lost")),
                    fmt(m.get("duplicates")),
                    fmt(m.get("server_us_per_delivery"), ".2f"),
                    ratio(m.get("server_us_per_delivery"), base.get("server_us_per_delivery")),
                    fmt((m.get("server_util") or 0) * 100, ".0f"),
                    fmt((m.get("loadgen_util") or 0) * 100, ".0f"),
                    fmt(lg_over_srv, ".2f"),
                ]
            )
        elif args.saturate:
            rows.append(
                [
                    name,
                    fmt(m.get("peak_deliveries_per_s")),
                    ratio(m.get("peak_deliveries_per_s"), base.get("peak_deliveries_per_s")),
                    fmt(m.get("sustained_deliveries_per_s")),
                    fmt(m.get("server_us_per_delivery"), ".2f"),
                    ratio(m.get("server_us_per_delivery"), base.get("server_us_per_delivery")),
                    fmt((m.get("server_util") or 0) * 100, ".0f"),
                    fmt(m.get("loadgen_us_per_delivery"), ".2f"),
                    fmt(lg_over_srv, ".2f"),
                    ",".join(sorted({str(x.get("limited_by")) for x in r["runs"]})),
                ]
            )
        else:
            rows.append(
                [
                    name,
                    fmt(m.get("deliveries_per_s")),
                    fmt(m.get("p50_ms"), ".2f"),
                    fmt(m.get("p99_ms"), ".2f"),
                    ratio(m.get("p99_ms"), base.get("p99_ms")),
                    fmt(m.get("lost")),
                    fmt(m.get("server_us_per_delivery"), ".2f"),
                    ratio(m.get("server_us_per_delivery"), base.get("server_us_per_delivery")),
                    fmt(m.get("server_kernel_us_per_delivery"), ".2f"),
                    fmt((m.get("server_util") or 0) * 100, ".0f"),
                    fmt(m.get("loadgen_us_per_delivery"), ".2f"),
                    fmt(lg_over_srv, ".2f"),
                ]
            )
    print()
    if args.burst:
        print(
            f"Fan-out burst: {args.subscribers} subscribers, {args.concurrency} publishers at"
            f" full speed (closed loop) for {args.duration}s, medians of {args.repeat}"
        )
        headers = [
            "server",
            "deliv/s",
            "vs ws",
            "publ/s",
            "p50 ms",
            "p99 ms",
            "ack p99 ms",
            "lost",
            "dups",
            "srv us/deliv",
            "vs ws",
            "srv CPU%",
            "lg CPU%",
            "lg/srv",
        ]
    elif args.saturate:
        print(
            f"Fan-out saturation: {args.subscribers} subscribers, {args.publishers} publisher(s),"
            f" rate x{args.sat_factor} from {args.sat_start_rate} msg/s,"
            f" {args.sat_step_seconds}s steps, medians of {args.repeat}"
        )
        headers = [
            "server",
            "peak deliv/s",
            "vs ws",
            "sustained deliv/s",
            "srv us/deliv",
            "vs ws",
            "srv CPU%",
            "loadgen us/deliv",
            "lg/srv",
            "limited by",
        ]
    else:
        print(
            f"Fan-out: {args.subscribers} subscribers, {args.publishers} publisher(s),"
            f" {args.rate} msg/s for {args.duration}s, medians of {args.repeat}"
        )
        headers = [
            "server",
            "deliv/s",
            "p50 ms",
            "p99 ms",
            "p99 vs ws",
            "lost",
            "srv us/deliv",
            "vs ws",
            "of it kernel",
            "srv CPU%",
            "loadgen us/deliv",
            "lg/srv",
        ]
    print_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n")[0])
    add_common_args(p, "bosbase,ws,socketio-node,socketio-py")
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--publishers", type=int, default=1, help="publisher connections")
    p.add_argument("--rate", type=float, default=50.0, help="publishes per second in total")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    p.add_argument("--drain", type=float, default=10.0, help="max seconds to wait for stragglers")
    p.add_argument("--probes", type=int, default=10, help="subscribers timed for latency")
    p.add_argument("--bulk-interval-ms", type=int, default=50, help="read period of the rest")
    p.add_argument("--saturate", action="store_true", help="raise the rate until saturation")
    p.add_argument(
        "--burst", action="store_true", help="closed loop: publishers at full speed, no rate"
    )
    p.add_argument("--concurrency", type=int, default=10, help="--burst: publishers in flight")
    p.add_argument(
        "--compare-src",
        type=Path,
        default=None,
        metavar="SRC",
        help="also run bosbase with the package from SRC (another checkout's src folder) as"
        " server bosbase-base, interleaved with the others: a change before/after",
    )
    p.add_argument(
        "--burst-max-rate",
        type=float,
        default=20_000.0,
        help="--burst: at most this many messages per second of --duration (bitmap bound)",
    )
    p.add_argument("--sat-start-rate", type=float, default=10.0)
    p.add_argument("--sat-factor", type=float, default=1.5)
    p.add_argument("--sat-step-seconds", type=float, default=5.0)
    p.add_argument("--sat-max-steps", type=int, default=20)
    p.add_argument("--sat-max-rate", type=float, default=20_000.0)
    p.add_argument("--sat-util", type=float, default=0.95, help="server CPU share = saturated")
    p.add_argument(
        "--sat-keepup", type=float, default=0.95, help="delivered/offered below = behind"
    )
    p.add_argument("--sat-p99-ms", type=float, default=50.0, help="p99 latency above = saturated")
    p.add_argument(
        "--sat-loadgen-util", type=float, default=0.9, help="load generator CPU share = stop"
    )
    args = p.parse_args(argv)
    if args.saturate:
        args.drain = min(args.drain, 5.0)
    if args.burst:
        if args.saturate:
            p.error("--burst and --saturate are two modes: one at a time")
        if not (1 <= args.concurrency <= 1000 and 1 <= args.burst_max_rate <= 1_000_000):
            p.error("out of range: --concurrency 1..1000, --burst-max-rate 1..1000000")
        if args.subscribers * args.burst_max_rate * max(args.duration, args.warmup) > 8e9:
            p.error("the subscribers' bitmap would exceed 1 GiB: lower --burst-max-rate")
        args.publishers = max(args.publishers, args.concurrency)
    if not (1 <= args.repeat <= 20 and 1 <= args.subscribers <= 50_000 and args.publishers >= 1):
        p.error("out of range: --repeat 1..20, --subscribers 1..50000, --publishers >= 1")
    if not (0 < args.duration <= 600 and 0 < args.rate <= 100_000):
        p.error("out of range: --duration 0..600 s, --rate 0..100000")
    kinds = parse_servers(args.servers)
    if args.compare_src is not None:
        kinds.insert(0, bosbase_variant("bosbase-base", args.compare_src.resolve()))
    results = run_servers(kinds, args, "bench-fanout-", run_once, medians)
    report(results, args)
    name = "fanout-burst" if args.burst else "fanout-saturation" if args.saturate else "fanout"
    return finish(name, args, results)


if __name__ == "__main__":
    run_main(main)
