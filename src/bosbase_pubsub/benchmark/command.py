"""``bosbase-pubsub bench``: the argument parser and the run.

Two modes with their own defaults: ``fanout`` (10 subscribers, 1 publisher at
100 messages/s: delivery latency) and ``publish`` (4 publishers as fast as
their acks come, 32 in flight each, no subscribers: acked publishes per
second). Every flag overrides either mode's default.

Exit codes: 0 done, 1 the run failed or lost messages, 2 bad input (a
non-loopback URL without ``--allow-remote`` included).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "fanout": {"subscribers": 10, "publishers": 1, "rate": 100.0, "in_flight": 256},
    "publish": {"subscribers": 0, "publishers": 4, "rate": 0.0, "in_flight": 32},
}


def add_bench_command(commands: Any) -> None:
    """Add the ``bench`` subcommand to the ``bosbase-pubsub`` parser's ``commands``."""
    from ..cli import _argument_type, _option, _positive_float, _positive_int

    count = _argument_type(_positive_int)
    seconds = _argument_type(_positive_float)
    bench = commands.add_parser(
        "bench",
        help="benchmark a running server (fan-out or publish throughput)",
        description="Benchmark a running server: MODE fanout (N subscribers, M publishers"
        " at a rate: delivery latency) or publish (acked publishes per second). Shows a"
        " live line, prints a table, writes the result as JSON (and a PNG with --plot)."
        " Publishers use --token, or sign in with --email/--password, or else sign up a"
        " throwaway users account. Loopback servers only, unless --allow-remote.",
    )
    bench.add_argument("mode", nargs="?", choices=sorted(MODE_DEFAULTS), default="fanout",
                       help="what to measure (default: fanout)")  # fmt: skip
    _option(bench, "--url", default="http://127.0.0.1:8090", help="the server", metavar="URL")
    _option(bench, "--token", default="", help="auth token for the publishers", metavar="TOKEN")
    _option(bench, "--email", default="", help="sign in with this email (with --password)",
            metavar="EMAIL")  # fmt: skip
    _option(bench, "--password", default="", help="password for --email", metavar="PASSWORD")
    _option(bench, "--collection", default="",
            help="auth collection for --email; none: _superusers, then users",
            metavar="NAME")  # fmt: skip
    bench.add_argument("--subscribers", type=_argument_type(_non_negative_int), metavar="N",
                       help="subscribed connections (fanout: 10, publish: 0)")  # fmt: skip
    bench.add_argument("--publishers", type=count, metavar="N",
                       help="publishing connections (fanout: 1, publish: 4)")  # fmt: skip
    bench.add_argument("--rate", type=_argument_type(_non_negative), metavar="N",
                       help="publishes per second, all publishers together; 0: as fast as"
                       " acks come (fanout: 100, publish: 0)")  # fmt: skip
    bench.add_argument("--in-flight", type=count, metavar="N",
                       help="unacked publishes per publisher (fanout: 256,"
                       " publish: 32)")  # fmt: skip
    bench.add_argument("--duration", type=seconds, default=10.0, metavar="SECONDS",
                       help="publishing window, at most 3600 (default: 10)")  # fmt: skip
    bench.add_argument("--count", type=count, default=100_000, metavar="N",
                       help="publishes in all, at most 10,000,000; the window ends at"
                       " whichever comes first (default: 100000)")  # fmt: skip
    bench.add_argument("--payload", type=_argument_type(_non_negative_int), default=128,
                       metavar="BYTES", help="padding in each message (default: 128)")  # fmt: skip
    bench.add_argument("--setup-timeout", type=seconds, default=30.0, metavar="SECONDS",
                       help="for signing in, connecting and subscribing (default: 30)")  # fmt: skip
    bench.add_argument("--drain-timeout", type=seconds, default=10.0, metavar="SECONDS",
                       help="wait this long after the window for acks and deliveries;"
                       " what is missing then is lost (default: 10)")  # fmt: skip
    bench.add_argument("--json", type=Path, default=None, metavar="PATH",
                       help="where to write the result (default:"
                       " bosbase-bench-MODE-TIME.json here; '-': standard output)")  # fmt: skip
    bench.add_argument("--plot", type=Path, default=None, metavar="PATH",
                       help="also draw the latency histogram and timeline as a PNG"
                       " (needs pip install 'bosbase-pubsub[bench]')")  # fmt: skip
    bench.add_argument("--quiet", action="store_true", help="no progress line")
    bench.add_argument("--allow-remote", action="store_true",
                       help="allow a server that is not on this machine")  # fmt: skip


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {text}")
    return value


def run_bench(args: argparse.Namespace) -> int:
    """Run ``bosbase-pubsub bench`` as parsed by ``bosbase_pubsub.cli``."""
    from .progress import ProgressLine
    from .report import PlotUnavailableError, require_matplotlib, table, write_json, write_plot
    from .runner import AuthFailedError, Credentials, run
    from .settings import TargetRefusedError, Timeouts, Workload, check_target
    from .workload import SetupError

    try:
        check_target(args.url, allow_remote=args.allow_remote)
        if args.plot is not None:
            require_matplotlib()
        if bool(args.email) != bool(args.password):
            raise ValueError("--email and --password go together")
        defaults = MODE_DEFAULTS[args.mode]
        workload = Workload(
            mode=args.mode,
            duration=args.duration,
            count=args.count,
            payload=args.payload,
            **{k: v if getattr(args, k) is None else getattr(args, k) for k, v in defaults.items()},
        )
    except (TargetRefusedError, PlotUnavailableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    credentials = Credentials(args.token, args.email, args.password, args.collection)
    timeouts = Timeouts(setup=args.setup_timeout, drain=args.drain_timeout)
    progress = None if args.quiet else ProgressLine(total=workload.duration)

    from ..cli import _run

    try:
        result = _run(run(args.url, workload, credentials, timeouts=timeouts, on_progress=progress))
    except (AuthFailedError, SetupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()

    to_stdout = args.json is not None and str(args.json) == "-"
    # With the JSON on standard output, the table goes to standard error.
    print(table(result), file=sys.stderr if to_stdout else sys.stdout)
    json_path = args.json or Path(
        f"bosbase-bench-{args.mode}-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    )
    if to_stdout:
        import json

        print(json.dumps(result, indent=2))
    else:
        write_json(result, json_path)
        print(f"\nresult: {json_path}", file=sys.stderr)
    if args.plot is not None:
        write_plot(result, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    if result["lost"]:
        print(f"error: {result['lost']:,} acked messages were not delivered", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
