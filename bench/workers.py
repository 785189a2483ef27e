"""``serve --workers``: acked publishes/s and deliveries/s with 1 vs 2 workers on PostgreSQL.

    uv run python -m bench.workers --pg postgres://root@127.0.0.1:5432/test

Each run starts ``bosbase-pubsub serve --db <fresh database> --workers N`` (not
pinned: the workers are there to use every core) and the C load generator with
``--subscribers`` subscribers on the topic and ``--concurrency`` publishers, each
sending a ``publish`` and waiting for its ack (stored) before the next. Reported:
acked publishes/s (the load generator's count) and deliveries/s (the growth of
``pubsub_messages_delivered_total`` summed over the workers, read from ``/metrics``
around the measured window), with the CPU of the server's process tree and of the
whole machine (PostgreSQL included). Runs alternate 1, 2, 1, 2... so that both see
the same machine; the table shows medians and the
ratio of 2 workers over 1. PostgreSQL and the load generator share the machine:
say so when reading the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from .common import (
    SERVER_KINDS,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    BenchError,
    Json,
    LoadGen,
    LoadgenOptions,
    Server,
    ServerOptions,
    Snapshot,
    bosbase_exe,
    fmt,
    machine_info,
    managed,
    median,
    prepare,
    print_table,
    ratio,
    write_result,
)


class WorkersServer(Server):
    """``bosbase-pubsub serve --workers N`` on a PostgreSQL database of its own."""

    def __init__(self, opts: ServerOptions, workdir: Path, workers: int) -> None:
        super().__init__(SERVER_KINDS["bosbase"], opts, workdir)
        self.workers = workers

    def __enter__(self) -> WorkersServer:
        super().__enter__()
        return self

    def argv(self) -> list[str]:
        assert self.opts.db_url is not None
        return [*super().argv(), "--db", self.opts.db_url, "--workers", str(self.workers)]

    def start(self) -> None:
        assert self.opts.db_url is not None
        cmd = [*bosbase_exe(), "superuser", "upsert", SUPERUSER_EMAIL, SUPERUSER_PASSWORD]
        res = subprocess.run(
            [*cmd, "--db", self.opts.db_url], capture_output=True, text=True, timeout=60
        )
        if res.returncode != 0:
            raise BenchError(f"`{' '.join(cmd)}` failed: {res.stderr or res.stdout}")
        self.opts.extra_args = []  # the PostgreSQL options come from argv()
        super().start()
        # Every worker must be listening, not only the first: wait for the supervisor's line.
        deadline = time.monotonic() + 60
        while "serving on" not in self.log.read_text():
            if time.monotonic() > deadline or not self.alive():
                raise BenchError(f"the workers did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def delivered(self) -> float:
        """``pubsub_messages_delivered_total``, summed over the workers."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("pubsub_messages_delivered_total")
        )


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``): PostgreSQL included."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """The URL of a new database on ``admin_url``'s server, dropped afterwards."""
    name = f"bench_workers_{secrets.token_hex(4)}"
    asyncio.run(_database(admin_url, True, name))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_database(admin_url, False, name))


async def _database(admin_url: str, create: bool, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        if create:
            await connection.execute(f'CREATE DATABASE "{name}"')
        else:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def run_once(workers: int, args: argparse.Namespace, workdir: Path) -> Json:
    with fresh_database(args.pg) as db_url:
        opts = ServerOptions(cpu=None, db_url=db_url)
        lg_opts = LoadgenOptions(cpu=None, payload=args.payload)
        with (
            WorkersServer(opts, workdir, workers) as server,
            LoadGen(server, args.subscribers, args.concurrency, lg_opts) as lg,
        ):
            lg.expect("ready", 180)
            lg.send(f"acked {args.concurrency} {args.warmup}")
            lg.expect("acked", args.warmup + 60)
            s0, d0, b0 = Snapshot.take(server, lg), server.delivered(), machine_busy_seconds()
            lg.send(f"acked {args.concurrency} {args.duration}")
            res = lg.expect("acked", args.duration + 60)
            s1, d1, b1 = Snapshot.take(server, lg), server.delivered(), machine_busy_seconds()
        wall = s1.wall - s0.wall
        return {
            "workers": workers,
            "acks_per_s": res["acks_per_s"],
            "deliveries_per_s": (d1 - d0) / wall,
            "errors": res["errors"],
            "p99_ms": res["latency"]["p99_ms"] if res["latency"]["count"] else None,
            "server_util": (s1.server_cpu - s0.server_cpu) / wall,
            "loadgen_util": (s1.loadgen_cpu - s0.loadgen_cpu) / wall,
            "machine_util": (b1 - b0) / wall,
        }


def run_fanout(workers: int, args: argparse.Namespace, workdir: Path) -> Json:
    """The highest of ``--fanout-rates`` (msg/s from one publisher to every subscriber)
    that ``workers`` keep up with: every delivery made, none lost, p99 under 50 ms."""
    from .fanout import run_step, summary

    steps: list[Json] = []
    with fresh_database(args.pg) as db_url:
        opts = ServerOptions(cpu=None, db_url=db_url)
        lg_opts = LoadgenOptions(cpu=None, payload=args.payload)
        with (
            WorkersServer(opts, workdir, workers) as server,
            LoadGen(server, args.subscribers, 1, lg_opts) as lg,
        ):
            lg.expect("ready", 180)
            for rate in args.fanout_rates:
                b0 = machine_busy_seconds()
                s = summary(run_step(lg, server, rate, args.duration, 10.0))
                s["machine_util"] = (machine_busy_seconds() - b0) / (args.duration + 1e-9)
                steps.append(s)
                kept_up = _kept_up(s)
                print(f"    workers={workers} {rate:g} msg/s: {fmt(s['deliveries_per_s'])}"
                      f" deliveries/s, lost {s['lost']}, p99 {fmt(s['p99_ms'], '.1f')} ms,"
                      f" server {fmt(s['server_util'], '.2f')} cores"
                      f"{'' if kept_up else '  (behind)'}", file=sys.stderr)  # fmt: skip
                if not kept_up:
                    break
    kept = [s for s in steps if _kept_up(s)]
    best = kept[-1] if kept else None
    return {
        "workers": workers,
        "max_rate": best["rate"] if best else 0.0,
        "deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
        "p99_ms": best["p99_ms"] if best else None,
        "server_util": best["server_util"] if best else None,
        "machine_util": best["machine_util"] if best else None,
        "steps": steps,
    }


def _kept_up(s: Json) -> bool:
    return bool(
        s["lost"] == 0
        and s["deliveries_per_s"] >= 0.97 * s["offered_deliveries_per_s"]
        and (s["p99_ms"] or 0) <= 50
    )


FANOUT_METRICS = ("max_rate", "deliveries_per_s", "p99_ms", "server_util", "machine_util")
METRICS = (
    "acks_per_s",
    "deliveries_per_s",
    "p99_ms",
    "errors",
    "server_util",
    "loadgen_util",
    "machine_util",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n")[0])
    p.add_argument("--pg", required=True, help="PostgreSQL URL the run's databases are made on")
    p.add_argument("--workers", default="1,2", help="comma list of worker counts")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=64, help="publishers")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--payload", type=int, default=64)
    p.add_argument("--mode", choices=("acked", "fanout"), default="acked",
                   help="acked: publishers await acks; fanout: highest rate kept up")  # fmt: skip
    p.add_argument("--fanout-rates", default="500,1000,1500,2000,3000,4000,6000",
                   help="msg/s steps of --mode fanout")  # fmt: skip
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.fanout_rates = [float(x) for x in args.fanout_rates.split(",") if x.strip()]
    if args.mode == "fanout":
        return _main_fanout(args, [int(x) for x in args.workers.split(",") if x.strip()])
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    if not (1 <= args.repeat <= 20 and 0 < args.duration <= 600 and counts):
        p.error("out of range: --repeat 1..20, --duration 0..600")
    runs: dict[int, list[Json]] = {n: [] for n in counts}
    with managed():
        prepare([SERVER_KINDS["bosbase"]])
        workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
        for i in range(args.repeat):
            for n in counts:  # alternating, so both see the same machine
                print(f"[workers={n}] run {i + 1}/{args.repeat}", file=sys.stderr)
                runs[n].append(run_once(n, args, workdir))
    medians = {n: {m: median([r[m] for r in runs[n]]) for m in METRICS} for n in counts}
    base = medians[counts[0]]
    rows: list[list[str]] = []
    for n in counts:
        m = medians[n]
        rows.append([str(n), fmt(m["acks_per_s"]), ratio(m["acks_per_s"], base["acks_per_s"]),
                     fmt(m["deliveries_per_s"]),
                     ratio(m["deliveries_per_s"], base["deliveries_per_s"]),
                     fmt(m["p99_ms"], ".1f"), fmt(m["errors"]), fmt(m["server_util"], ".2f"),
                     fmt(m["loadgen_util"], ".2f"), fmt(m["machine_util"], ".2f")])  # fmt: skip
    print_table(
        ["workers", "acked/s", "x", "deliveries/s", "x", "ack p99 ms", "errors", "server cores",
         "loadgen cores", "machine cores"],
        rows,
    )  # fmt: skip
    payload: dict[str, Any] = {"machine": machine_info(), "args": vars(args) | {"out": None},
                               "runs": runs, "median": medians}  # fmt: skip
    out = write_result("workers", json.loads(json.dumps(payload, default=str)), args.out)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _main_fanout(args: argparse.Namespace, counts: list[int]) -> int:
    runs: dict[int, list[Json]] = {n: [] for n in counts}
    with managed():
        prepare([SERVER_KINDS["bosbase"]])
        workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
        for i in range(args.repeat):
            for n in counts:
                print(f"[workers={n}] fanout run {i + 1}/{args.repeat}", file=sys.stderr)
                runs[n].append(run_fanout(n, args, workdir))
    medians = {n: {m: median([r[m] for r in runs[n]]) for m in FANOUT_METRICS} for n in counts}
    base = medians[counts[0]]
    rows = [
        [str(n), fmt(m["max_rate"]), fmt(m["deliveries_per_s"]),
         ratio(m["deliveries_per_s"], base["deliveries_per_s"]), fmt(m["p99_ms"], ".1f"),
         fmt(m["server_util"], ".2f"), fmt(m["machine_util"], ".2f")]
        for n, m in medians.items()
    ]  # fmt: skip
    print_table(["workers", "max msg/s", "deliveries/s", "x", "p99 ms", "server cores",
                 "machine cores"], rows)  # fmt: skip
    payload: dict[str, Any] = {"machine": machine_info(), "args": vars(args) | {"out": None},
                               "runs": runs, "median": medians}  # fmt: skip
    out = write_result("workers-fanout", json.loads(json.dumps(payload, default=str)), args.out)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
