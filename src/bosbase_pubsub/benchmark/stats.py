"""Latency samples and delivery counts, bounded in memory whatever the run's length."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

MAX_SAMPLES = 200_000
"""Latency samples kept (a uniform reservoir beyond this), so memory stays bounded."""


class Reservoir:
    """Latency samples in milliseconds: exact below ``MAX_SAMPLES``, a uniform sample above."""

    def __init__(self, capacity: int = MAX_SAMPLES, seed: int = 7) -> None:
        self.capacity = capacity
        self.samples: list[float] = []
        self.count = 0
        self.maximum = 0.0
        self._rng = random.Random(seed)

    def add(self, value_ms: float) -> None:
        self.count += 1
        if value_ms > self.maximum:
            self.maximum = value_ms
        if len(self.samples) < self.capacity:
            self.samples.append(value_ms)
            return
        slot = self._rng.randrange(self.count)
        if slot < self.capacity:
            self.samples[slot] = value_ms

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100), nearest rank; ``None`` without samples."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        # Nearest rank: the ceil(q% of n)-th value (round() would round 99.5 to 100,
        # the even neighbour, and make the p99 of 100 samples their maximum).
        rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
        return ordered[rank - 1]

    def summary(self) -> dict[str, float | None]:
        return {
            "count": self.count,
            "p50_ms": self.percentile(50),
            "p90_ms": self.percentile(90),
            "p99_ms": self.percentile(99),
            "max_ms": self.maximum if self.count else None,
        }


@dataclass(slots=True)
class Stream:
    """What one subscriber got from one publisher (whose messages arrive in order)."""

    received: int = 0
    last: int = -1
    duplicates: int = 0
    skipped: int = 0
    """Numbers jumped over: messages the subscriber never got before a later one."""

    def add(self, n: int) -> bool:
        """Count message ``n``; ``False`` for a duplicate."""
        if n <= self.last:
            self.duplicates += 1
            return False
        self.skipped += n - self.last - 1
        self.last = n
        self.received += 1
        return True

    def lost(self, acked: int) -> int:
        """How many fewer messages than the ``acked`` ones this subscriber got."""
        return max(acked - self.received, 0)


@dataclass
class Timeline:
    """Counts per ``step``-second slot since the start (for the progress line and plots)."""

    step: float = 0.5
    slots: list[int] = field(default_factory=list)

    def add(self, elapsed: float, count: int = 1) -> None:
        index = int(elapsed / self.step)
        if index >= len(self.slots):
            self.slots.extend([0] * (index + 1 - len(self.slots)))
        self.slots[index] += count

    def rate(self, elapsed: float) -> float:
        """Per second over the last full slot before ``elapsed``."""
        index = int(elapsed / self.step) - 1
        return self.slots[index] / self.step if 0 <= index < len(self.slots) else 0.0
