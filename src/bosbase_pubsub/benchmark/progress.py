"""The live progress line, on standard error.

On a terminal one line is redrawn in place (``\\r``) about twice a second;
otherwise (a log, CI) a plain line is printed once a second, so that the
output stays readable. ``rate`` is over the last half second or so:
deliveries per second when there are subscribers, else acks per second;
``p99`` is the last full second's.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .workload import Tally


class ProgressLine:
    """Call with ``(tally, elapsed)``; ``close()`` ends the line."""

    def __init__(self, stream: TextIO | None = None, *, total: float) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.live = self.stream.isatty()
        self._last_time = time.monotonic()
        self._last_count = 0
        self._last_print = 0.0
        self._drawn = False

    def __call__(self, tally: Tally, elapsed: float) -> None:
        now = time.monotonic()
        if not self.live and now - self._last_print < 0.95:
            return
        count = tally.delivered if tally.with_subscribers else tally.acked
        span = now - self._last_time
        rate = (count - self._last_count) / span if span > 0 else 0.0
        self._last_time, self._last_count, self._last_print = now, count, now
        seconds = tally.timeline.seconds
        # The last full second, when there is one: the current one has few samples.
        recent = seconds[-2] if len(seconds) >= 2 else (seconds[-1] if seconds else None)
        p99 = recent.latency.percentile(99) * 1000 if recent is not None else 0.0
        unit = "deliv/s" if tally.with_subscribers else "acks/s"
        errors = tally.publish_errors + tally.connection_errors
        line = (
            f"{min(elapsed, 9999):6.1f}s/{self.total:g}s  sent {tally.sent:,}"
            f"  acked {tally.acked:,}"
            f"  delivered {tally.delivered:,}  {rate:,.0f} {unit}  p99 {p99:.2f} ms"
            + (f"  errors {errors:,}" if errors else "")
        )
        if self.live:
            self.stream.write("\r" + line + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
