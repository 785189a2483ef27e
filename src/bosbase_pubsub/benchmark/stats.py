"""Latency percentiles in bounded memory, and a per-second timeline. No I/O.

A ``LatencyHistogram`` keeps counts in logarithmic buckets 1 % wide (like
HdrHistogram): a million deliveries cost no more memory than ten, and a
percentile is off by at most 1 % of its value. The exact maximum is kept
beside the buckets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_GROWTH = 1.01
"""Each bucket is 1 % wider than the one below: the error bound of a percentile."""
_LOG_GROWTH = math.log(_GROWTH)
_FLOOR_US = 1.0
"""Latencies below a microsecond count as one microsecond (the clock's useful floor)."""


class LatencyHistogram:
    """Latencies in seconds, counted in 1 %-wide buckets.

    ``record`` one value at a time; read ``percentile(q)``, ``maximum``,
    ``count`` and ``mean``. ``merge`` adds another histogram's counts (the
    per-second windows into the whole run).
    """

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.maximum = 0.0
        self._total = 0.0

    def record(self, seconds: float) -> None:
        """Count one latency (negative values, from a clock step, count as 0)."""
        seconds = max(seconds, 0.0)
        index = _bucket(seconds)
        self._buckets[index] = self._buckets.get(index, 0) + 1
        self.count += 1
        self._total += seconds
        self.maximum = max(self.maximum, seconds)

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts to this histogram."""
        for index, count in other._buckets.items():
            self._buckets[index] = self._buckets.get(index, 0) + count
        self.count += other.count
        self._total += other._total
        self.maximum = max(self.maximum, other.maximum)

    @property
    def mean(self) -> float:
        return self._total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The latency (seconds) that ``q`` percent of the values are at or below.

        0 when nothing was recorded; ``percentile(100)`` is the exact maximum.
        """
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within 0..100, got {q}")
        if not self.count:
            return 0.0
        if q >= 100:
            return self.maximum
        # The nearest-rank definition: the value at rank ceil(q% of count).
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                # The bucket's middle, but never above what was really seen.
                return min(_middle(index), self.maximum)
        return self.maximum  # pragma: no cover - the loop always reaches rank

    def summary_ms(self) -> dict[str, Any]:
        """``{count, mean, p50, p90, p99, max}``, latencies in milliseconds."""
        return {
            "count": self.count,
            "mean": round(self.mean * 1000, 3),
            "p50": round(self.percentile(50) * 1000, 3),
            "p90": round(self.percentile(90) * 1000, 3),
            "p99": round(self.percentile(99) * 1000, 3),
            "max": round(self.maximum * 1000, 3),
        }

    def buckets_ms(self) -> list[tuple[float, int]]:
        """``[(bucket middle in ms, count), ...]`` in increasing order, for a plot."""
        return [(round(_middle(i) * 1000, 4), self._buckets[i]) for i in sorted(self._buckets)]


def _bucket(seconds: float) -> int:
    micros = max(seconds * 1e6, _FLOOR_US)
    return int(math.log(micros) / _LOG_GROWTH)


def _middle(index: int) -> float:
    """The middle (geometric) of bucket ``index``, in seconds."""
    return float(_GROWTH ** (index + 0.5)) / 1e6


@dataclass
class Second:
    """What happened in one second of the run (``at``: seconds since the start)."""

    at: int
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    errors: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    """This second's latencies: deliveries when there are subscribers, else acks."""

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.at,
            "sent": self.sent,
            "acked": self.acked,
            "delivered": self.delivered,
            "errors": self.errors,
            "p50_ms": round(self.latency.percentile(50) * 1000, 3),
            "p99_ms": round(self.latency.percentile(99) * 1000, 3),
        }


class Timeline:
    """Counts per whole second since ``start`` (a ``time.monotonic()`` value)."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.seconds: list[Second] = []

    def at(self, now: float) -> Second:
        """The ``Second`` that ``now`` falls in (created, with the empty ones before it)."""
        index = max(0, int(now - self.start))
        while len(self.seconds) <= index:
            self.seconds.append(Second(at=len(self.seconds)))
        return self.seconds[index]

    def to_json(self) -> list[dict[str, Any]]:
        return [second.to_json() for second in self.seconds]
