"""``bosbase-pubsub bench``: benchmark a running server from this machine, like ``nats bench``.

::

    bosbase-pubsub bench --url http://127.0.0.1:8090 --subscribers 100 --rate 1000
    bosbase-pubsub bench --mode publish --publishers 16 --json result.json

It signs in (``--token``, or ``--email``/``--password``), or else creates a
throwaway ``users`` account by sign-up; opens the connections; runs (a live
progress line on standard error); and prints a table (deliveries/s, acked
publishes/s, latency percentiles, lost, duplicates, errors), optionally writing
the JSON document (``report.result``) and a PNG plot (``[bench]`` extra).
Everything is bounded (``MAX_*``), and only loopback servers are benchmarked
unless ``--allow-remote``.

The load is made by this Python process (see ``workload``): on a small machine
it may be the limit before the server is; the repository's ``bench/`` has a C
load generator for that.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import secrets
import socket
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import orjson

from .report import plot, result, table
from .workload import BenchError, Progress, Workload, run_workload

__all__ = ["MAX_CONNECTIONS", "MAX_DURATION", "BenchError", "check_target", "main"]

MAX_DURATION = 600.0
MAX_CONNECTIONS = 10_000
MAX_MESSAGES = 10_000_000


def check_target(url: str, allow_remote: bool) -> None:
    """Raise ``BenchError`` unless ``url`` is a loopback server (or remote is allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"the URL must be http(s)://HOST[:PORT], got {url!r}")
    if allow_remote:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)
    except OSError as error:
        raise BenchError(f"cannot resolve {parts.hostname}: {error}") from error
    addresses = {str(info[4][0]) for info in infos}
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise BenchError(
            f"{parts.hostname} is not a loopback address: a benchmark loads the server and"
            " the network; pass --allow-remote to benchmark a server you run elsewhere"
        )


async def _token(args: argparse.Namespace) -> str:
    """The token to publish with: given, signed in, or of a new throwaway account."""
    if args.token:
        return str(args.token)
    from ..client import AsyncBosBase, BosBaseError

    async with AsyncBosBase(args.url, auto_refresh=False) as client:
        try:
            if args.email:
                auth = await client.collection(args.collection).auth_with_password(
                    args.email, args.password
                )
            else:
                email = f"bench-{secrets.token_hex(6)}@example.com"
                password = secrets.token_urlsafe(18)
                users = client.collection("users")
                await users.create(
                    {"email": email, "password": password, "passwordConfirm": password}
                )
                auth = await users.auth_with_password(email, password)
        except BosBaseError as error:
            hint = "" if args.email else " (sign-up may be off: pass --token or --email)"
            raise BenchError(f"cannot sign in: {error}{hint}") from error
    return auth["token"]


def _progress_line(progress: Progress) -> str:
    # The p99 since the last line: "current", and cheap to sort (the whole run's
    # samples, up to 200,000, would cost the measuring loop a sort per line).
    p99 = progress.take_recent().percentile(99)
    elapsed = progress.elapsed()
    rate = progress.delivery_timeline.rate(elapsed) or progress.ack_timeline.rate(elapsed)
    return (
        f"{progress.phase:>10} {elapsed:6.1f}s  connections {progress.connected:,}"
        f"  sent {progress.sent:,}  acked {progress.acked:,}  delivered {progress.deliveries:,}"
        f"  {rate:,.0f}/s  p99 {'-' if p99 is None else f'{p99:.1f} ms'}"
        f"  errors {progress.errors}"
    )


async def _show_progress(holder: list[Progress], out: TextIO) -> None:
    """A live line on a terminal; a line every 2 seconds otherwise."""
    tty = out.isatty()
    while True:
        await asyncio.sleep(0.25 if tty else 2.0)
        if holder:
            line = _progress_line(holder[0])
            out.write(f"\r{line}\x1b[K" if tty else line + "\n")
            out.flush()


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    token = await _token(args)
    base = args.url.rstrip("/")
    ws_url = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/api/pubsub"
    workload = Workload(
        ws_url=ws_url,
        token=token,
        mode=args.mode,
        subscribers=args.subscribers,
        publishers=args.publishers,
        rate=args.rate,
        duration=args.duration,
        payload=args.payload,
        topic=args.topic,
        max_messages=args.max_messages,
        drain=args.drain,
    )
    holder: list[Progress] = []
    shower = asyncio.get_running_loop().create_task(_show_progress(holder, sys.stderr))
    try:
        raw = await run_workload(workload, on_start=holder.append)
    finally:
        shower.cancel()
        if sys.stderr.isatty():
            sys.stderr.write("\n")
    document = result(workload, raw, base)
    if args.plot:
        progress: Progress = raw["progress"]
        latency = progress.delivery_latency
        samples = (latency if latency.count else progress.ack_latency).samples
        plot(document, Path(args.plot), samples)
    return document


def main(args: argparse.Namespace) -> int:
    """Run ``bosbase-pubsub bench`` with its parsed arguments; the exit status."""
    try:
        check_target(args.url, args.allow_remote)
        if args.subscribers is None:  # the publish mode measures the store path by default
            args.subscribers = 100 if args.mode == "fanout" else 0
        document = asyncio.run(_run(args))
    except (BenchError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(table(document))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if document["lost"] == 0 and document["errors"] == 0 else 3
