"""Client addresses behind trusted reverse proxies (``--trusted-proxies``).

Behind nginx or a load balancer every connection comes from the proxy, so the
per-address limits (connections per address, failed sign-ins per address)
would count all users as one. With trusted networks configured, a middleware
replaces ``request.remote`` by the client's address from ``X-Forwarded-For``:

* The header is read only when the direct peer is in a trusted network;
  from anyone else it is ignored (a client could write anything in it).
* Its list is walked from the right (the hop nearest to us) past every
  address that is itself trusted; the first one that is not is the client.
  When every hop is trusted, the left-most is taken.
* A malformed entry ends the walk at the last address known good (a trusted
  proxy), so a forged or garbled header can only make a user count as its
  proxy, never as somebody else.

With no trusted networks (the default) the middleware is not installed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_networks(text: str) -> tuple[Network, ...]:
    """Read ``10.0.0.0/8,::1,192.168.1.7`` (CIDRs or single addresses).

    Raises ``ValueError`` naming the first entry that is neither.
    """
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"invalid network {entry!r} (expected a CIDR such as 10.0.0.0/8, or an address)"
            ) from None
    return tuple(networks)


class TrustedProxies:
    """Finds a request's client address given the networks whose proxies are trusted."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_address(self, peer: str | None, forwarded_for: Iterable[str]) -> str | None:
        """The client behind ``peer``, from the ``X-Forwarded-For`` values (see the module)."""
        if peer is None or not self.trusts(peer):
            return peer
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        client = peer
        for hop in reversed(hops):
            try:
                address = str(ipaddress.ip_address(hop))
            except ValueError:
                return client  # garbled: stop at the last address known good
            client = address
            if not self.trusts(address):
                return address
        return client

    def middleware(self) -> Middleware:
        """A middleware that sets ``request.remote`` to the client's address."""

        @web.middleware
        async def real_client_address(request: web.Request, handler: Handler) -> web.StreamResponse:
            forwarded = request.headers.getall(hdrs.X_FORWARDED_FOR, [])
            if forwarded:
                client = self.client_address(request.remote, forwarded)
                if client is not None and client != request.remote:
                    request = request.clone(remote=client)
            return await handler(request)

        return real_client_address
