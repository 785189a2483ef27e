"""Failed sign-in limits, per client address and per identity (an email).

Rules:

- Only failures count (a wrong password, an unknown email, a wrong old
  password); a success clears its identity's count but not its address's, so
  an attacker holding one account cannot wash out their address's record.
- A key with ``limit`` failures in the last ``window`` seconds is refused
  until the oldest of them leaves the window: that wait is the
  ``Retry-After``.
- Attempts still being checked count as failures until they end, so a burst
  of concurrent guesses cannot slip past the limit while bcrypt runs.
- Memory is bounded: each key keeps at most ``limit`` timestamps, keys with
  nothing left in the window are dropped as they age, and past ``max_keys``
  per kind the least recently touched key is forgotten.

The limiter is per node (in memory); a cluster of N nodes allows up to N
times the limits.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_MAX_KEYS = 10_000


@dataclass(slots=True)
class _Entry:
    failures: deque[float]
    pending: int = 0
    touched: float = 0.0


@dataclass(slots=True)
class _Table:
    """Failures per key of one kind (addresses or identities)."""

    limit: int
    window: float
    max_keys: int
    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def _prune(self, entry: _Entry, now: float) -> None:
        horizon = now - self.window
        while entry.failures and entry.failures[0] <= horizon:
            entry.failures.popleft()

    def sweep(self, now: float) -> None:
        """Drop keys untouched for a whole window (they hold no live failure)."""
        horizon = now - self.window
        while self.entries:
            key, entry = next(iter(self.entries.items()))
            if entry.touched > horizon or entry.pending:
                break
            del self.entries[key]

    def wait(self, key: str, now: float) -> float | None:
        """Seconds until ``key`` may try again, or ``None`` if it may now."""
        if not self.enabled:
            return None
        entry = self.entries.get(key)
        if entry is None:
            return None
        self._prune(entry, now)
        if len(entry.failures) + entry.pending < self.limit:
            return None
        if len(entry.failures) >= self.limit:
            return max(entry.failures[0] + self.window - now, 0.0)
        return 1.0  # blocked by attempts still running: try again shortly

    def _touch(self, key: str, now: float) -> _Entry:
        entry = self.entries.get(key)
        if entry is None:
            if len(self.entries) >= self.max_keys:
                self.sweep(now)
            while len(self.entries) >= self.max_keys:
                self.entries.popitem(last=False)
            entry = self.entries[key] = _Entry(failures=deque(maxlen=self.limit))
        else:
            self.entries.move_to_end(key)
        entry.touched = now
        return entry

    def begin(self, key: str, now: float) -> None:
        if self.enabled:
            self._touch(key, now).pending += 1

    def end(self, key: str, now: float, *, failed: bool, clear: bool) -> None:
        if not self.enabled:
            return
        entry = self.entries.get(key)
        if entry is not None and entry.pending:
            entry.pending -= 1
        if failed:
            entry = self._touch(key, now)
            self._prune(entry, now)
            entry.failures.append(now)
        elif clear and entry is not None and not entry.pending:
            del self.entries[key]


class SigninLimiter:
    """Counts failed sign-ins per client address and per identity.

    Use it around every password check::

        wait = limiter.begin(address, identity)
        if wait is not None:
            ...  # answer 429 with Retry-After: ceil(wait)
        ok = await check_password(...)
        limiter.end(address, identity, failed=not ok)

    Args:
        per_address: failures allowed per address within ``window``; 0 disables.
        per_identity: failures allowed per identity within ``window``; 0 disables.
        window: the sliding window, in seconds.
        max_keys: most keys remembered per kind.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        per_address: int,
        per_identity: int,
        window: float,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0:
            raise ValueError("the failed sign-in window must be positive")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._addresses = _Table(limit=max(per_address, 0), window=window, max_keys=max_keys)
        self._identities = _Table(limit=max(per_identity, 0), window=window, max_keys=max_keys)
        self._clock = clock

    def __len__(self) -> int:
        """Keys currently remembered (addresses and identities)."""
        return len(self._addresses.entries) + len(self._identities.entries)

    def retry_after(self, address: str, identity: str) -> float | None:
        """Seconds before this address and identity may try again; ``None`` if now."""
        now = self._clock()
        self._addresses.sweep(now)
        self._identities.sweep(now)
        waits = [
            wait
            for wait in (self._addresses.wait(address, now), self._identities.wait(identity, now))
            if wait is not None
        ]
        return max(waits) if waits else None

    def begin(self, address: str, identity: str) -> float | None:
        """Start an attempt: ``None`` if allowed (call ``end`` later), else seconds to wait."""
        wait = self.retry_after(address, identity)
        if wait is not None:
            return wait
        now = self._clock()
        self._addresses.begin(address, now)
        self._identities.begin(identity, now)
        return None

    def end(self, address: str, identity: str, *, failed: bool) -> None:
        """Finish an attempt ``begin`` allowed: count it if it ``failed``."""
        now = self._clock()
        self._addresses.end(address, now, failed=failed, clear=False)
        self._identities.end(identity, now, failed=failed, clear=True)


def retry_after_header(wait: float) -> str:
    """``wait`` seconds as a ``Retry-After`` value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait)))
