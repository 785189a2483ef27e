"""What a run's result becomes: a table on screen, a JSON file, a PNG plot.

The plot needs matplotlib, which only the ``bench`` extra installs
(``pip install 'bosbase-pubsub[bench]'``); it is imported when a plot is
asked for, and ``require_matplotlib`` says so before a run starts rather
than after it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLOT_EXTRA_HINT = "the plot needs matplotlib: pip install 'bosbase-pubsub[bench]'"
CLIENT_BOUND_PERCENT = 90.0
"""Above this share of one core, the bench client is likely what limits the figures."""


class PlotUnavailableError(Exception):
    """``--plot`` was asked for and matplotlib is not installed."""


def table(result: dict[str, Any]) -> str:
    """The end-of-run summary, as aligned text."""
    w = result["workload"]
    rate = f"{w['rate']:g}/s" if w["rate"] else "unpaced"
    lines = [
        f"bosbase-pubsub bench {result['mode']} against {result['url']}",
        f"  subscribers {w['subscribers']}, publishers {w['publishers']}, rate {rate},"
        f" in-flight {w['in_flight']}, payload {w['payload']} B,"
        f" window {result['window_s']:.1f} s",
        "",
        _row(
            "acked publishes/s",
            f"{result['acked_publishes_per_s']:,.1f}",
            f"{result['acked']:,} acked of {result['sent']:,} sent",
        ),
        _row(
            "deliveries/s",
            f"{result['deliveries_per_s']:,.1f}",
            f"{result['delivered']:,} delivered of {result['expected_deliveries']:,} expected",
        ),
        "",
        f"  {'latency (ms)':<24}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}{'count':>12}",
    ]
    for label, key in (
        ("publish -> delivery", "delivery_latency_ms"),
        ("publish -> ack", "ack_latency_ms"),
    ):
        s = result[key]
        if s["count"]:
            lines.append(
                f"  {label:<24}{s['p50']:>10.2f}{s['p90']:>10.2f}{s['p99']:>10.2f}"
                f"{s['max']:>10.2f}{s['count']:>12,}"
            )
    lines += [
        "",
        _row("lost", f"{result['lost']:,}", "acked, not delivered to every subscriber"),
        _row("duplicates", f"{result['duplicates']:,}", ""),
        _row("errors", f"{result['errors']:,}", _errors(result["error_messages"])),
        _row("client CPU", f"{result['client_cpu_percent']:.0f} %", "of one core"),
    ]
    if not result["drained"]:
        lines.append("  note: the drain timed out; what had not arrived by then counts as lost")
    due = result.get("due")
    if due and result["sent"] < 0.99 * due:
        lines.append(
            f"  note: the publishers fell behind the rate: {result['sent']:,} of {due:,} due"
            " were sent (waiting for acks, see --in-flight, or for the server to read)"
        )
    if result["client_cpu_percent"] >= CLIENT_BOUND_PERCENT:
        lines.append(
            "  note: the bench client used most of a core: the figures may be its limit,"
            " not the server's (fewer subscribers, or several bench processes)"
        )
    return "\n".join(lines)


def _row(label: str, value: str, detail: str) -> str:
    return f"  {label:<24}{value:>14}  {detail}".rstrip()


def _errors(messages: dict[str, int]) -> str:
    return "; ".join(f"{count:,} x {text}" for text, count in sorted(messages.items()))[:200]


def write_json(result: dict[str, Any], path: Path) -> None:
    """The whole result (timeline and histogram included) as indented JSON."""
    path.write_text(json.dumps(result, indent=2) + "\n")


def require_matplotlib() -> None:
    """Raise ``PlotUnavailableError`` now if a plot could not be drawn later."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailableError(PLOT_EXTRA_HINT) from None


def write_plot(result: dict[str, Any], path: Path) -> None:
    """A PNG: the latency histogram, and rate and p99 over time."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    kind = "delivery" if result["workload"]["subscribers"] else "ack"
    figure, (histogram, timeline) = plt.subplots(2, 1, figsize=(9, 7))
    buckets = result["latency_histogram_ms"]
    if buckets:
        histogram.bar(
            [b[0] for b in buckets],
            [b[1] for b in buckets],
            width=[b[0] * 0.01 for b in buckets],
            align="center",
        )
        histogram.set_xscale("log")
    histogram.set_xlabel(f"publish -> {kind} latency (ms, log scale)")
    histogram.set_ylabel("messages")
    histogram.set_title(f"bosbase-pubsub bench {result['mode']}: {result['url']}")

    seconds = result["timeline"]
    times = [s["t"] for s in seconds]
    rate_key = "delivered" if kind == "delivery" else "acked"
    timeline.plot(times, [s[rate_key] for s in seconds], label=f"{rate_key}/s")
    timeline.set_xlabel("seconds since the start")
    timeline.set_ylabel(f"{rate_key} per second")
    p99 = timeline.twinx()
    p99.plot(times, [s["p99_ms"] for s in seconds], color="tab:red", label="p99 ms")
    p99.set_ylabel("p99 latency (ms)")
    figure.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
