"""Server settings, grouped in small frozen dataclasses.

``cli.py`` fills them from flags and environment variables; tests and
embedders may build them directly.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection and per-address limits; each breach gets a clear error."""

    max_topic_length: int = 256
    """Longest topic name, in characters."""
    max_subscriptions: int = 1000
    """Topics one connection may subscribe to at once."""
    publish_rate: float = 0.0
    """Sustained publishes per second per connection (a token bucket); 0 means no
    rate limit (the default: a connection that publishes faster than the store
    commits is slowed by ``max_publishes_in_flight`` instead, never refused)."""
    publish_burst: int = 2000
    """Publishes a connection may make at once before the rate applies."""
    max_publishes_in_flight: int = 256
    """Publishes of one connection waiting for their commit; at this many the
    server stops reading that socket until one is answered (backpressure)."""
    max_connections_per_address: int = 10_000
    """Concurrent WebSocket connections from one client address; 0 means no limit.
    High by default: a NAT or a load balancer puts thousands of users behind one
    address (``trusted_proxies`` makes the limit count the clients behind a proxy)."""
    max_frame_bytes: int = 1024 * 1024
    """Largest incoming WebSocket message; above it the connection is closed with 1009.
    Frames under it whose ``data`` is over the contract's 256 KiB get the
    ``payload too large`` error and the connection stays open."""
    outbound_buffer_bytes: int = 4 * 1024 * 1024
    """Bytes queued for a subscriber that is not reading; past it, it is closed (slow consumer)."""


HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
"""Public-key algorithms a JWKS key may be used with."""
MIN_SECRET_LENGTH = {"HS256": 32, "HS384": 48, "HS512": 64}
"""Shortest shared secret per algorithm: RFC 7518 asks for at least the hash size."""


@dataclass(frozen=True, slots=True)
class ExternalAuth:
    """Tokens minted by the user's own backend ("bring your own auth").

    Either a shared ``secret`` (HMAC) or a ``jwks_url`` (public keys), or both.
    See ``auth.external`` for what a valid token is.
    """

    secret: str = ""
    """Shared HMAC secret (at least ``MIN_SECRET_LENGTH`` bytes for the algorithm)."""
    jwks_url: str = ""
    """URL of a JSON Web Key Set with the backend's public keys."""
    issuer: str = ""
    """Required ``iss`` claim; empty: not checked."""
    audience: str = ""
    """Required ``aud`` claim; empty: a token with an ``aud`` is refused."""
    user_claim: str = "sub"
    """Claim holding the user id (the identity's record id)."""
    algorithms: tuple[str, ...] = ()
    """Accepted ``alg`` values; empty: HS256 for the secret, RS256 and ES256 for the JWKS."""
    collection: str = "external"
    """Collection name the identities get (what topic rules can name)."""
    jwks_timeout: float = 5.0
    """Seconds a JWKS fetch may take."""

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.jwks_url)

    @property
    def accepted_algorithms(self) -> tuple[str, ...]:
        if self.algorithms:
            return self.algorithms
        default: tuple[str, ...] = ()
        if self.secret:
            default += ("HS256",)
        if self.jwks_url:
            default += ("RS256", "ES256")
        return default

    def check(self) -> None:
        """Raise ``ValueError`` naming what is wrong with these settings."""
        if not self.enabled:
            if self.algorithms or self.issuer or self.audience:
                raise ValueError("--jwt-issuer/--jwt-audience/--jwt-algorithms need"
                                 " --jwt-secret or --jwks-url")  # fmt: skip
            return
        if self.jwks_url and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError(f"the JWKS URL must be http(s)://..., got {self.jwks_url!r}")
        if not self.collection or self.collection in ("users", "_superusers"):
            raise ValueError(
                f"the collection of external identities must not be empty or a built-in"
                f" one, got {self.collection!r}"
            )
        if not self.user_claim:
            raise ValueError("the user id claim must not be empty")
        if self.jwks_timeout <= 0:
            raise ValueError("the JWKS timeout must be above 0")
        for alg in self.accepted_algorithms:
            if alg in HMAC_ALGORITHMS:
                if not self.secret:
                    raise ValueError(f"algorithm {alg} needs --jwt-secret")
                if len(self.secret.encode()) < MIN_SECRET_LENGTH[alg]:
                    raise ValueError(
                        f"the JWT secret must be at least {MIN_SECRET_LENGTH[alg]} bytes for {alg}"
                    )
            elif alg in KEY_ALGORITHMS:
                if not self.jwks_url:
                    raise ValueError(f"algorithm {alg} needs --jwks-url")
            else:
                known = ", ".join(HMAC_ALGORITHMS + KEY_ALGORITHMS)
                raise ValueError(f"unsupported JWT algorithm {alg!r} (use one of {known})")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    token_ttl: dt.timedelta = dt.timedelta(days=7)
    signup: bool = True
    """Whether ``POST /api/collections/users/records`` creates accounts."""
    origins: tuple[str, ...] = ()
    """Extra origins (``https://app.example.com``) allowed to use the ``pb_auth`` cookie."""
    failed_signins_per_identity: int = 5
    """Failed sign-ins per identity within ``failed_signin_window`` before a 429."""
    failed_signins_per_address: int = 20
    """Failed sign-ins per client address within ``failed_signin_window`` before a 429."""
    failed_signin_window: dt.timedelta = dt.timedelta(minutes=5)
    external: ExternalAuth = field(default_factory=ExternalAuth)
    """Tokens of the user's own backend, accepted beside the built-in ones."""


@dataclass(frozen=True, slots=True)
class Retention:
    keep: dt.timedelta = dt.timedelta(hours=24)
    """Messages older than this are deleted."""
    interval: dt.timedelta = dt.timedelta(minutes=1)
    """How often pruning runs."""
    batch: int = 2000
    """Rows deleted per transaction, so that publishing never waits long."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    data_dir: Path = Path("pb_data")
    db_url: str | None = None
    """``None`` means the embedded SQLite file ``data_dir/data.db``."""
    workers: int = 1
    """Processes serving the port (``serve --workers``; more than 1 needs PostgreSQL)."""
    sqlite_synchronous: Literal["normal", "full"] = "normal"
    """SQLite's ``synchronous`` pragma in WAL mode. ``normal`` (PocketBase's
    choice): a commit reaches the operating system before its ack, so acked
    messages survive the process crashing; ``full``: it is also fsynced, so
    they survive a power cut, at the cost of throughput."""
    heartbeat: float = 30.0
    """Seconds between WebSocket pings; a peer that does not answer in half of it is dropped."""
    shutdown_timeout: float = 10.0
    """Seconds a graceful shutdown waits for acked commits and closing sockets."""
    rules_file: Path | None = None
    """The topic rules (``rules``); ``None``: anyone subscribes, any identity publishes."""
    trusted_proxies: str = ""
    """Comma-separated networks (CIDRs) of reverse proxies whose ``X-Forwarded-For``
    names the client (see ``proxies``); empty: the header is ignored."""
    log_format: Literal["text", "json"] = "text"
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)
    auth: AuthSettings = field(default_factory=AuthSettings)
    retention: Retention = field(default_factory=Retention)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> dt.timedelta:
    """Read ``90s``, ``15m``, ``6h``, ``7d`` or ``1h30m`` into a timedelta.

    Raises ``ValueError`` with the accepted forms when ``text`` is not one.
    """
    text = text.strip()
    pos, seconds = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {text!r} (use e.g. 90s, 15m, 6h, 7d or 1h30m)")
    return dt.timedelta(seconds=seconds)


def parse_address(text: str) -> tuple[str, int]:
    """Read ``HOST:PORT`` (``[::1]:8090`` for IPv6) into its parts."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {text!r} (expected HOST:PORT)")
    return host.strip("[]") or "127.0.0.1", int(port)
