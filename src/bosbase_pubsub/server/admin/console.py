"""The console's static files at ``/_/``: plain HTML, CSS and JavaScript, no build step.

The files are read once, when the node starts. ``index.html`` names its
script and stylesheet with a hash of their content (``console.js?v=...``),
so those can be cached for good (``immutable``) while ``index.html`` itself
is revalidated on every load (``no-cache`` with an ``ETag``): a new version
of the server is picked up at the next load, never half of it.

Every answer carries a strict Content-Security-Policy: scripts, styles and
connections from this origin only (and its WebSocket), no inline script or
style, no frames. The files hold no data: everything the console shows comes
from the admin API, which needs a superuser's token.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
"""The files besides ``index.html``, with their content types."""
IMMUTABLE = "public, max-age=31536000, immutable"


def content_security_policy(request: web.BaseRequest) -> str:
    """The console's policy; ``connect-src`` names this host's WebSocket (``/api/pubsub``)."""
    host = request.host
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' ws://{host} wss://{host}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: str
    etag: str


class ConsoleFiles:
    """Serves ``/_/`` (``index.html``) and its assets from the package's ``static`` folder."""

    def __init__(self) -> None:
        folder = resources.files(__package__).joinpath("static")
        index = folder.joinpath("index.html").read_text(encoding="utf-8")
        self._files: dict[str, _File] = {}
        for name, content_type in ASSETS.items():
            body = folder.joinpath(name).read_bytes()
            version = hashlib.sha256(body).hexdigest()[:12]
            self._files[name] = _File(body, content_type, f'"{version}"')
            index = index.replace(f'"{name}"', f'"{name}?v={version}"')
        body = index.encode()
        self._index = _File(body, "text/html", f'"{hashlib.sha256(body).hexdigest()[:12]}"')

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/_", self.redirect)
        router.add_get("/_/", self.index)
        router.add_get("/_/{name}", self.asset)

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/_/")

    async def index(self, request: web.Request) -> web.StreamResponse:
        return self._answer(request, self._index, "no-cache")

    async def asset(self, request: web.Request) -> web.StreamResponse:
        found = self._files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return self._answer(request, found, IMMUTABLE)

    @staticmethod
    def _answer(request: web.Request, file: _File, cache: str) -> web.StreamResponse:
        headers = {
            "Cache-Control": cache,
            "ETag": file.etag,
            "Content-Security-Policy": content_security_policy(request),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
        }
        if request.headers.get("If-None-Match") == file.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=file.body, content_type=file.content_type, charset="utf-8", headers=headers
        )
