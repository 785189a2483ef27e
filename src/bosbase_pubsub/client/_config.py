"""Client settings, grouped in small frozen dataclasses, and the reconnect schedule."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Reconnect", "Timeouts", "backoff"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long the client waits, in seconds.

    A float anywhere a ``Timeouts`` is accepted sets ``request`` and keeps the
    other defaults.
    """

    request: float = 10.0
    """For a reply: a publish's or subscribe's ack (including the wait for a
    connection when there is none), or an HTTP response."""
    connect: float = 10.0
    """For one connection attempt: TCP, TLS, the WebSocket upgrade and the
    server's ``ready`` frame. A failed attempt is retried (see ``Reconnect``)."""
    ping_interval: float | None = 20.0
    """Send a WebSocket ping this often; ``None`` sends none."""
    ping_timeout: float = 20.0
    """Drop the connection (and reconnect) when a ping gets no pong within this."""
    close: float = 2.0
    """How long ``close()`` waits for the server to acknowledge the close."""

    def __post_init__(self) -> None:
        for name in ("request", "connect", "ping_timeout", "close"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Timeouts.{name} must be above 0")
        if self.ping_interval is not None and not self.ping_interval > 0:
            raise ValueError("Timeouts.ping_interval must be above 0 or None")


DEFAULT_TIMEOUTS = Timeouts()


def as_timeouts(value: float | Timeouts) -> Timeouts:
    """Accept a plain number of seconds for the request timeout."""
    if isinstance(value, Timeouts):
        return value
    return Timeouts(request=float(value))


@dataclass(frozen=True, slots=True)
class Reconnect:
    """The schedule of reconnection attempts after a connection is lost.

    The n-th delay is ``min(max_delay, initial_delay * factor ** n)``, of which
    a random part (``jitter``, 0 to 1) is taken off so that many clients cut
    off together do not come back together. The schedule restarts once a
    connection is up again.
    """

    initial_delay: float = 0.25
    max_delay: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.initial_delay <= self.max_delay):
            raise ValueError("Reconnect needs 0 < initial_delay <= max_delay")
        if self.factor < 1:
            raise ValueError("Reconnect.factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Reconnect.jitter must be between 0 and 1")


DEFAULT_RECONNECT = Reconnect()


def backoff(policy: Reconnect, rng: random.Random | None = None) -> Iterator[float]:
    """Yield the delays before each reconnection attempt, forever (pure: no clock, no I/O).

    ``rng`` makes the jitter reproducible in tests.
    """
    uniform = (rng or random.Random()).uniform
    delay = policy.initial_delay
    while True:
        yield delay * (1.0 - policy.jitter * uniform(0.0, 1.0))
        delay = min(policy.max_delay, delay * policy.factor)


def normalize_base_url(url: str) -> str:
    """``http://host:8090/`` -> ``http://host:8090``; a bare ``host:port`` gets ``http://``."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the server URL must start with http:// or https://, got {url!r}")
    if not parts.netloc:
        raise ValueError(f"the server URL has no host: {url!r}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def websocket_url(base_url: str, path: str = "/api/pubsub") -> str:
    """The ``ws://`` or ``wss://`` URL of ``path`` under ``base_url``."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + path, "", ""))
