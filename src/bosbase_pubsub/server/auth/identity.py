"""Finding a request's token: the carriers, their order, and the cookie's origin rule.

A request may carry its token in three places, read in this order:

1. the ``Authorization`` header (a leading ``Bearer `` is optional),
2. the ``token`` query parameter,
3. the ``pb_auth`` cookie: URL-encoded JSON whose ``token`` field holds it
   (what the SDKs' ``authStore.exportToCookie()`` writes).

**The first carrier present decides.** A request whose header holds an
invalid token is anonymous even if its cookie holds a valid one: falling back
would let whoever can plant a cookie (or a link with ``?token=``) override
the credentials the client chose to send. A carrier that is present but empty
(``Authorization:`` with nothing after the optional ``Bearer``, ``?token=``)
counts as absent.

**Cookies and cross-site requests.** Browsers attach cookies to requests any
site triggers, WebSocket handshakes included (no CORS preflight protects
them). So a token read from the cookie counts only when the request has no
``Origin`` header, or when its origin is the server's own (the request's
scheme and ``Host``) or one listed in ``AuthSettings.origins``. Tokens in the
header or the query string are unaffected: a page cannot make a browser add
those for another site.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

import orjson
from aiohttp import web
from yarl import URL

from .tokens import TokenSource

COOKIE_NAME = "pb_auth"
QUERY_PARAMETER = "token"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _strip_bearer(value: str) -> str:
    scheme, _, rest = value.strip().partition(" ")
    # "Bearer" alone: HTTP strips the space that followed it, and no token is left.
    if scheme.lower() == "bearer":
        return rest.strip()
    return value.strip()


def token_from_cookie(value: str) -> str:
    """The token inside a ``pb_auth`` cookie value; ``""`` if there is none."""
    try:
        data = orjson.loads(urllib.parse.unquote(value))
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return ""
    token = data.get("token") if isinstance(data, dict) else None
    return token if isinstance(token, str) else ""


def find_token(
    request: web.BaseRequest, *, allow_query_and_cookie: bool = True
) -> tuple[str, TokenSource] | None:
    """The token the first present carrier holds, with that carrier's name.

    Returns ``None`` when no carrier is present. A present cookie that holds
    no token yields ``("", "cookie")``: it was the deciding carrier, and it
    proves nothing.
    """
    header = _strip_bearer(request.headers.get("Authorization", ""))
    if header:
        return header, "header"
    if not allow_query_and_cookie:
        return None
    query = request.query.get(QUERY_PARAMETER, "").strip()
    if query:
        return query, "query"
    cookie = request.cookies.get(COOKIE_NAME, "")
    if cookie.strip():
        return token_from_cookie(cookie), "cookie"
    return None


def _origin_key(text: str) -> tuple[str, str, int | None] | None:
    """``scheme://host[:port]`` as a comparable triple (default ports filled in)."""
    try:
        url = URL(text.strip())
    except ValueError:
        return None
    if not url.scheme or not url.host:
        return None
    scheme = url.scheme.lower()
    port = url.explicit_port or _DEFAULT_PORTS.get(scheme)
    return scheme, url.host.lower().rstrip("."), port


def own_origin(request: web.BaseRequest) -> str:
    """The server's origin as this request reached it: ``scheme://Host``."""
    return f"{request.scheme}://{request.host}"


def cookie_origin_allowed(request: web.BaseRequest, allowed: Iterable[str] = ()) -> bool:
    """Whether a token read from the ``pb_auth`` cookie may be used for ``request``.

    True when the request has no ``Origin`` header, or its origin is the
    server's own or one of ``allowed``. ``Origin: null`` (sandboxed frames,
    some redirects) is never allowed.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    key = _origin_key(origin)
    if key is None:
        return False
    if key == _origin_key(own_origin(request)):
        return True
    return any(key == _origin_key(other) for other in allowed)
