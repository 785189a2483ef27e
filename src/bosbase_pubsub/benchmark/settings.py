"""What one benchmark run does, its hard bounds, and the loopback check.

Every run is bounded: ``duration`` and ``count`` cap the publishing, the
setup and the drain at the end have their own timeouts, and the sizes
(subscribers, publishers, payload) have ceilings here, so that a typo cannot
turn the command into a load test of someone's production server.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Mode = Literal["fanout", "publish"]

MAX_DURATION = 3600.0
MAX_COUNT = 10_000_000
MAX_SUBSCRIBERS = 10_000
MAX_PUBLISHERS = 1_000
MAX_PAYLOAD = 200 * 1024
"""Below the contract's 256 KiB of data, with room for the timing fields."""


class TargetRefusedError(Exception):
    """The URL names a host that is not this machine, and ``--allow-remote`` was not given."""


@dataclass(frozen=True)
class Workload:
    """The load: who connects, how fast they publish, for how long, how much."""

    mode: Mode = "fanout"
    subscribers: int = 10
    """Connections subscribed to the run's topic (anonymous)."""
    publishers: int = 1
    """Authenticated connections publishing on it."""
    rate: float = 100.0
    """Publishes per second, all publishers together; 0: as fast as acks allow."""
    in_flight: int = 256
    """Publishes one publisher may have waiting for their ack."""
    duration: float = 10.0
    """Seconds of publishing (the cap; ``count`` may end it sooner)."""
    count: int = 100_000
    """Publishes in all (the cap; ``duration`` may end it sooner)."""
    payload: int = 128
    """Bytes of padding in each message's data, beside the timing fields."""

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.subscribers <= MAX_SUBSCRIBERS, f"subscribers: 0..{MAX_SUBSCRIBERS}"),
            (1 <= self.publishers <= MAX_PUBLISHERS, f"publishers: 1..{MAX_PUBLISHERS}"),
            (self.rate >= 0, "rate: 0 or more"),
            (self.in_flight >= 1, "in-flight: at least 1"),
            (0 < self.duration <= MAX_DURATION, f"duration: above 0, at most {MAX_DURATION:g}s"),
            (1 <= self.count <= MAX_COUNT, f"count: 1..{MAX_COUNT}"),
            (0 <= self.payload <= MAX_PAYLOAD, f"payload: 0..{MAX_PAYLOAD} bytes"),
        ]
        for ok, rule in checks:
            if not ok:
                raise ValueError(f"out of bounds: {rule}")


@dataclass(frozen=True)
class Timeouts:
    """How long the parts around the measured window may take, in seconds."""

    setup: float = 30.0
    """Connecting, signing in and subscribing everyone."""
    drain: float = 10.0
    """After the last publish: waiting for the acks and deliveries still on their way."""


def check_target(url: str, *, allow_remote: bool) -> None:
    """Refuse ``url`` unless its host is this machine (or ``allow_remote``).

    A host name counts as local when every address it resolves to is a
    loopback address. Raises ``TargetRefusedError`` otherwise, ``ValueError`` for
    a URL that is not ``http(s)://HOST[:PORT]``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a server URL: {url!r} (use e.g. http://127.0.0.1:8090)")
    if allow_remote:
        return
    host = parts.hostname
    if not _is_loopback(host):
        raise TargetRefusedError(
            f"{host} is not a loopback address: benchmarking another machine loads it"
            " and its network; pass --allow-remote if that is what you mean"
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass  # a name, not an address literal
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False  # unresolvable: not known to be local
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in addresses
    )
