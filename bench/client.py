"""How much the Python SDK takes in, and how fast it publishes: ``BosBase`` and ``AsyncBosBase``.

    uv run python -m bench.client --clients sync,async --messages 200000 --repeat 3

Three measurements per client, each against a fresh ``bosbase-pubsub serve`` pinned to
CPU 0, with the client under test in its own process pinned to CPU 1:

* **burst intake**: one subscriber on the load generator's topic is stopped
  (SIGSTOP) while the C load generator (``bench/loadgen``) publishes ``--messages``
  through the server (pipelined, 64 publishers); the server queues them for it
  (``--outbound-buffer`` raised). Then the subscriber is resumed: messages per second
  from its first to its last handler call, and its CPU microseconds per message. Only
  the client limits this figure: the bytes are already on its side of the socket, or
  in the server's buffer, which the server flushes far faster than a client reads.
* **live intake**: the same subscriber, not stopped, while the load generator
  publishes for ``--duration`` seconds as fast as the store commits (group commit,
  ~20k msg/s here): delivered per second (the server's pace, not the client's) and
  the subscriber's CPU share. The load generator shares the subscriber's CPU here.
* **publish round trip**: one client, sequential publishes (each waits for its ack),
  p50/p99 in ms; then publishes with 64 in flight (64 asyncio tasks / 64 threads), acks/s.

Prints a table, writes every figure to ``bench/results/client-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from .common import (
    SERVER_KINDS,
    BenchError,
    Json,
    LoadGen,
    LoadgenOptions,
    Server,
    ServerOptions,
    cpu_seconds,
    fmt,
    machine_info,
    managed,
    median,
    print_table,
    taskset_prefix,
    write_result,
)

TOPIC = "bench"  # the load generator's topic
CLIENTS = ("sync", "async")


# --------------------------------------------------------------------------- child roles


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class _Counter:
    """The subscriber's handler: counts, and stamps the first and last call."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.expect: int | None = None
        self.done = threading.Event()

    def __call__(self, message: Any) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.last = now
        self.count += 1
        if self.expect is not None and self.count >= self.expect:
            self.done.set()

    def reset(self) -> None:
        self.count, self.first, self.last, self.expect = 0, 0.0, 0.0, None
        self.done.clear()

    def report(self) -> None:
        _emit("done", count=self.count, first=self.first, last=self.last)


def _serve_commands(counter: _Counter, stdin: TextIO) -> None:
    """Commands from the parent: ``reset``, ``expect N`` (answered with ``done`` once N
    messages came, or after 30 s without progress), ``quit``."""
    for line in stdin:
        command = line.split()
        if not command or command[0] == "quit":
            return
        if command[0] == "reset":
            counter.reset()
            _emit("reset")
        elif command[0] == "expect":
            counter.expect = int(command[1])
            if counter.count >= counter.expect:
                counter.done.set()
            seen = -1
            while not counter.done.wait(30.0) and counter.count != seen:
                seen = counter.count
            counter.report()


def run_subscriber(client: str, url: str) -> None:
    from bosbase_pubsub import AsyncBosBase, BosBase, Timeouts

    # No client pings: a stopped process must not come back to a dead keepalive.
    timeouts = Timeouts(request=60.0, ping_interval=None)
    counter = _Counter()
    if client == "sync":
        with BosBase(url, timeout=timeouts) as sync_client:
            sync_client.pubsub.subscribe(TOPIC, counter)
            _emit("ready")
            _serve_commands(counter, sys.stdin)
        return

    async def main() -> None:
        async with AsyncBosBase(url, timeout=timeouts) as async_client:
            await async_client.pubsub.subscribe(TOPIC, counter)
            _emit("ready")
            await asyncio.to_thread(_serve_commands, counter, sys.stdin)

    asyncio.run(main())


def run_round_trips(client: str, url: str, token: str, count: int) -> None:
    from bosbase_pubsub import AsyncBosBase, AuthStore, BosBase

    warmup, in_flight, pipelined = 200, 64, max(count * 2, 5000)
    data = {"pad": "x" * 64}

    def summary(latencies: list[float], pipelined_rate: float) -> None:
        latencies.sort()
        _emit(
            "round_trips",
            count=len(latencies),
            p50_ms=statistics.median(latencies) * 1e3,
            p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1e3,
            mean_ms=statistics.fmean(latencies) * 1e3,
            pipelined_acks_per_s=pipelined_rate,
            in_flight=in_flight,
        )

    if client == "sync":
        with BosBase(url, auth_store=AuthStore(token)) as sync_client:
            publish = sync_client.pubsub.publish
            for _ in range(warmup):
                publish("rtt", data)
            latencies = []
            for _ in range(count):
                started = time.perf_counter()
                publish("rtt", data)
                latencies.append(time.perf_counter() - started)
            per_thread = pipelined // in_flight

            def publisher() -> None:
                for _ in range(per_thread):
                    publish("rtt", data)

            threads = [threading.Thread(target=publisher) for _ in range(in_flight)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rate = per_thread * in_flight / (time.perf_counter() - started)
            summary(latencies, rate)
        return

    async def main() -> None:
        async with AsyncBosBase(url, auth_store=AuthStore(token)) as async_client:
            publish = async_client.pubsub.publish
            for _ in range(warmup):
                await publish("rtt", data)
            latencies = []
            for _ in range(count):
                started = time.perf_counter()
                await publish("rtt", data)
                latencies.append(time.perf_counter() - started)
            window = asyncio.Semaphore(in_flight)

            async def one() -> None:
                async with window:
                    await publish("rtt", data)

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(pipelined)))
            summary(latencies, pipelined / (time.perf_counter() - started))

    asyncio.run(main())


# --------------------------------------------------------------------------- the parent


class Child:
    """A client process under test, driven by lines (like the load generator)."""

    def __init__(self, argv: list[str], cpu: str | None) -> None:
        self.proc = subprocess.Popen(
            [*taskset_prefix(cpu), sys.executable, "-m", "bench.client", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.proc.stdout is not None
        self._lines = self.proc.stdout

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, event: str, timeout: float) -> Json:
        result: list[Json] = []

        def read() -> None:
            for line in self._lines:
                message = json.loads(line)
                if message.get("event") == event:
                    result.append(message)
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not result:
            raise BenchError(f"client process: no {event!r} within {timeout:.0f}s")
        return result[0]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.send("quit")
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def server_options(args: argparse.Namespace) -> ServerOptions:
    return ServerOptions(
        cpu=args.server_cpu or None,
        extra_args=[
            "--publish-burst=1000000",
            "--outbound-buffer=4GiB",  # holds a stopped subscriber's burst
            "--heartbeat=10m",  # and does not drop it meanwhile
            *args.bosbase_arg,
        ],
    )


def measure_intake(client: str, args: argparse.Namespace, workdir: Path) -> Json:
    kind = SERVER_KINDS["bosbase"]
    lg_options = LoadgenOptions(cpu=args.client_cpu or None, payload=args.payload, probes=0)
    with Server(kind, server_options(args), workdir) as server:
        url = f"http://127.0.0.1:{server.port}"
        subscriber = Child(["subscriber", "--client", client, "--url", url], args.client_cpu)
        try:
            subscriber.expect("ready", 60)
            with LoadGen(server, 0, 64, lg_options) as loadgen:
                loadgen.expect("ready", 120)
                # Burst: publish while the subscriber is stopped, then let it read.
                subscriber.send("reset")
                subscriber.expect("reset", 30)
                os.kill(subscriber.pid, signal.SIGSTOP)
                published = 0
                while published < args.messages:
                    loadgen.send("acked 64 1")
                    published += int(loadgen.expect("acked", 120)["acks"])
                subscriber.send(f"expect {published}")
                cpu_before = cpu_seconds(subscriber.pid)
                os.kill(subscriber.pid, signal.SIGCONT)
                burst = subscriber.expect("done", 600)
                burst_cpu = cpu_seconds(subscriber.pid) - cpu_before

                # Live: the subscriber reads while the load generator publishes.
                subscriber.send("reset")
                subscriber.expect("reset", 30)
                cpu_before = cpu_seconds(subscriber.pid)
                wall_before = time.monotonic()
                loadgen.send(f"acked 64 {args.duration}")
                live_published = int(loadgen.expect("acked", args.duration + 120)["acks"])
                subscriber.send(f"expect {live_published}")
                live = subscriber.expect("done", 300)
                live_cpu = cpu_seconds(subscriber.pid) - cpu_before
                live_wall = time.monotonic() - wall_before
        finally:
            subscriber.close()

    def rate(result: Json) -> float | None:
        span = result["last"] - result["first"]
        return (result["count"] - 1) / span if span > 0 and result["count"] > 1 else None

    return {
        "burst_published": published,
        "burst_received": burst["count"],
        "burst_msgs_per_s": rate(burst),
        "burst_us_per_msg": burst_cpu / burst["count"] * 1e6 if burst["count"] else None,
        "live_published": live_published,
        "live_received": live["count"],
        "live_msgs_per_s": rate(live),
        "live_cpu_share": live_cpu / live_wall,
        "live_us_per_msg": live_cpu / live["count"] * 1e6 if live["count"] else None,
    }


def measure_round_trips(client: str, args: argparse.Namespace, workdir: Path) -> Json:
    with Server(SERVER_KINDS["bosbase"], server_options(args), workdir) as server:
        assert server.token is not None
        url = f"http://127.0.0.1:{server.port}"
        argv = ["round-trips", "--client", client, "--url", url, "--token", server.token]
        child = Child([*argv, "--count", str(args.round_trips)], args.client_cpu)
        try:
            return child.expect("round_trips", 300)
        finally:
            child.close()


METRICS = (
    "burst_msgs_per_s",
    "burst_us_per_msg",
    "live_msgs_per_s",
    "live_cpu_share",
    "live_us_per_msg",
    "p50_ms",
    "p99_ms",
    "pipelined_acks_per_s",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.client", description=__doc__, allow_abbrev=False
    )
    commands = parser.add_subparsers(dest="role")
    sub = commands.add_parser("subscriber", help="(internal) a subscriber under test")
    trips = commands.add_parser("round-trips", help="(internal) a publisher under test")
    for child in (sub, trips):
        child.add_argument("--client", choices=CLIENTS, required=True)
        child.add_argument("--url", required=True)
    trips.add_argument("--token", required=True)
    trips.add_argument("--count", type=int, default=2000)

    parser.add_argument("--clients", default="sync,async", help="comma list of sync, async")
    parser.add_argument("--messages", type=int, default=200_000, help="burst size")
    parser.add_argument("--duration", type=float, default=10.0, help="live publishing, s")
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--payload", type=int, default=64, help="padding bytes per message")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (medians shown)")
    parser.add_argument("--server-cpu", default="0", help="taskset CPU list for the server")
    parser.add_argument("--client-cpu", default="1", help="... for the client under test")
    parser.add_argument("--bosbase-arg", action="append", default=[], metavar="ARG")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.role == "subscriber":
        run_subscriber(args.client, args.url)
        return 0
    if args.role == "round-trips":
        run_round_trips(args.client, args.url, args.token, args.count)
        return 0

    clients = [name.strip() for name in args.clients.split(",") if name.strip()]
    if not clients or set(clients) - set(CLIENTS):
        parser.error("--clients takes sync and/or async")
    if not (1 <= args.repeat <= 20 and 1000 <= args.messages <= 5_000_000):
        parser.error("out of range: --repeat 1..20, --messages 1000..5000000")
    results: dict[str, Json] = {}
    with managed(), tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        for client in clients:
            runs: list[Json] = []
            for attempt in range(args.repeat):
                print(f"[{client}] run {attempt + 1}/{args.repeat}", file=sys.stderr)
                figures = measure_intake(client, args, Path(tmp))
                figures.update(measure_round_trips(client, args, Path(tmp)))
                figures.pop("event", None)
                runs.append(figures)
            results[client] = {
                "runs": runs,
                "median": {m: median([run.get(m) for run in runs]) for m in METRICS},
            }

    rows = []
    for client, entry in results.items():
        m = entry["median"]
        rows.append(
            [
                client,
                fmt(m["burst_msgs_per_s"]),
                fmt(m["burst_us_per_msg"], ".1f"),
                fmt(m["live_msgs_per_s"]),
                fmt((m["live_cpu_share"] or 0) * 100, ".0f"),
                fmt(m["p50_ms"], ".3f"),
                fmt(m["p99_ms"], ".3f"),
                fmt(m["pipelined_acks_per_s"]),
            ]
        )
    print(f"\nPython SDK, medians of {args.repeat} (burst of {args.messages:,} messages)")
    print_table(
        [
            "client",
            "burst msg/s",
            "us/msg",
            "live msg/s",
            "live CPU%",
            "rtt p50 ms",
            "rtt p99 ms",
            "acks/s (64 in flight)",
        ],
        rows,
    )
    out = write_result(
        "client",
        {
            "benchmark": "client",
            "machine": machine_info(),
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "clients": results,
        },
        args.out,
    )
    print(f"\nresults: {out}")
    lost = any(
        run[f"{step}_received"] < run[f"{step}_published"]
        for entry in results.values()
        for run in entry["runs"]
        for step in ("burst", "live")
    )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
