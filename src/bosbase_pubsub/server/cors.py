"""CORS for the REST API, so that the JavaScript SDK works from other origins.

As PocketBase does: with no ``--origins`` every origin may call the API
(tokens travel in the ``Authorization`` header, which a page cannot add for
another site, and no credentials are allowed); with ``--origins`` only those.
The WebSocket endpoint needs no CORS; its cookie rule lives in ``auth``.

The same middleware gives aiohttp's own errors under ``/api/`` (no such route,
a wrong method, a body over the size limit) PocketBase's JSON error body
(``errors.as_api_error``): it is the one that wraps every request already.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from .errors import as_api_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOWED_METHODS = "GET, HEAD, PUT, PATCH, POST, DELETE"
PREFLIGHT_MAX_AGE = "86400"


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    """A middleware allowing ``origins`` (every origin when empty)."""
    allowed_origins = {origin.rstrip("/").lower() for origin in origins}

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or request.path == "/api/pubsub":
            try:
                return await handler(request)
            except web.HTTPException as error:
                answer = as_api_error(request, error)
                if answer is error:
                    raise
                return answer
        allowed = not allowed_origins or origin.rstrip("/").lower() in allowed_origins
        preflight = (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        )
        if preflight:
            response: web.StreamResponse = web.Response(status=204 if allowed else 403)
            if allowed:
                response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
                requested = request.headers.get("Access-Control-Request-Headers")
                if requested:
                    response.headers["Access-Control-Allow-Headers"] = requested
                response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        else:
            try:
                response = await handler(request)
            except web.HTTPException as error:
                response = as_api_error(request, error)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = "*" if not allowed_origins else origin
            response.headers.add("Vary", "Origin")
        if isinstance(response, web.HTTPException) and not preflight:
            raise response
        return response

    return cors
