"""The benchmark's result: a JSON document, a table for the terminal, an optional plot."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

from .workload import Progress, Publisher, Subscriber, Workload

CLIENT_BOUND_PERCENT = 90.0
"""Above this share of one core, this process is likely what limits the figures."""


def result(workload: Workload, raw: dict[str, Any], url: str) -> dict[str, Any]:
    """The JSON document of one run (the fields ``bench --json`` writes)."""
    progress: Progress = raw["progress"]
    publishers: list[Publisher] = raw["publishers"]
    subscribers: list[Subscriber] = raw["subscribers"]
    seconds = raw["published_seconds"] or 1e-9
    expected = sum(p.acked for p in publishers) * len(subscribers)
    lost = sum(s.streams[p.index].lost(p.acked) for s in subscribers for p in publishers)
    gaps = sum(stream.skipped for s in subscribers for stream in s.streams)
    return {
        "mode": workload.mode,
        "url": url,
        "topic": raw["topic"],
        "subscribers": workload.subscribers,
        "publishers": workload.publishers,
        "rate": workload.rate if workload.mode == "fanout" else None,
        "payload_bytes": workload.payload,
        "duration_s": round(seconds, 3),
        # fanout: the publishes the rate made due within the duration (the offered load).
        "due": (
            min(workload.max_messages, int(workload.rate * workload.duration))
            if workload.mode == "fanout"
            else None
        ),
        "published": progress.sent,
        "acked": progress.acked,
        "acked_per_s": progress.acked / seconds,
        "deliveries": progress.deliveries,
        "expected_deliveries": expected,
        "deliveries_per_s": progress.deliveries / seconds,
        "lost": lost,
        "duplicates": progress.duplicates,
        "gaps": gaps,
        "errors": progress.errors,
        "first_error": progress.first_error or None,
        "delivery_latency": progress.delivery_latency.summary(),
        "ack_latency": progress.ack_latency.summary(),
        "timeline": {
            "step_s": progress.delivery_timeline.step,
            "deliveries": progress.delivery_timeline.slots,
            "acks": progress.ack_timeline.slots,
        },
        "client": {
            "cpu_percent": round(raw["client_cpu_percent"], 1),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "taken": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(document: dict[str, Any]) -> str:
    """The end-of-run table."""
    rows = [
        ("deliveries/s", f"{document['deliveries_per_s']:,.0f}"),
        ("acked publishes/s", f"{document['acked_per_s']:,.0f}"),
        ("deliveries", f"{document['deliveries']:,} of {document['expected_deliveries']:,}"),
        ("lost", f"{document['lost']:,}"),
        ("duplicates", f"{document['duplicates']:,}"),
        ("errors", f"{document['errors']:,}"),
    ]
    for name in ("delivery_latency", "ack_latency"):
        latency = document[name]
        if latency["count"]:
            label = name.replace("_", " ")
            rows.append(
                (f"{label} ms", "p50 {} | p90 {} | p99 {} | max {}".format(
                    *(_ms(latency[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))))
            )  # fmt: skip
    if document["first_error"]:
        rows.append(("first error", document["first_error"]))
    rows.append(("client CPU", f"{document['client']['cpu_percent']:.0f} % of one core"))
    width = max(len(name) for name, _ in rows)
    head = (f"{document['mode']}: {document['subscribers']} subscribers, {document['publishers']}"
            f" publishers, {document['duration_s']:g} s")  # fmt: skip
    return "\n".join(
        [head, *(f"  {name.ljust(width)}  {value}" for name, value in rows), *_notes(document)]
    )


def _notes(document: dict[str, Any]) -> list[str]:
    """What makes the figures say less than they seem to."""
    notes = []
    due = document["due"]
    if due is not None and document["published"] < 0.99 * due:
        notes.append(
            f"note: the publishers fell behind the rate: {document['published']:,} of"
            f" {due:,} due were sent (waiting for acks, or for the server to read)"
        )
    if document["client"]["cpu_percent"] >= CLIENT_BOUND_PERCENT:
        notes.append(
            "note: this process used most of a core: the figures may be its limit, not the"
            " server's (fewer subscribers, or several bench processes)"
        )
    return notes


def plot(document: dict[str, Any], path: Path, latencies_ms: list[float]) -> None:
    """A PNG: deliveries (and acks) per second over time, and a histogram of the
    delivery latency (``latencies_ms``: the samples, or the ack latency's in ``publish``).

    Raises ``RuntimeError`` when matplotlib is not installed (``[bench]`` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError(
            "--plot needs matplotlib: pip install 'bosbase-pubsub[bench]'"
        ) from error
    timeline = document["timeline"]
    step = timeline["step_s"]
    figure, (rates, latency) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("deliveries", "acks"):
        slots = timeline[name]
        rates.plot([i * step for i in range(len(slots))], [c / step for c in slots], label=name)
    rates.set_xlabel("seconds")
    rates.set_ylabel("per second")
    rates.legend()
    rates.set_title("throughput")
    if latencies_ms:
        latency.hist(latencies_ms, bins=60)
        latency.set_yscale("log")
    latency.set_xlabel("ms")
    latency.set_ylabel("messages")
    latency.set_title("latency")
    figure.suptitle(f"bosbase-pubsub bench ({document['mode']})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
