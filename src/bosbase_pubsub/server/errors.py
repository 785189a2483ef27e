"""HTTP error bodies in PocketBase's shape: ``{"status", "message", "data"}``."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def api_error(status: int, message: str, data: dict[str, Any] | None = None) -> web.Response:
    """A JSON error response the official SDKs turn into a ``ClientResponseError``."""
    body = orjson.dumps({"status": status, "message": message, "data": data or {}})
    return web.Response(status=status, body=body, content_type="application/json")


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


_MESSAGES = {
    404: "The requested resource wasn't found.",
    405: "Method not allowed.",
    413: "Request entity too large.",
}


def as_api_error(request: web.Request, error: web.HTTPException) -> web.Response:
    """aiohttp's own error for ``request`` (404, 405, 413...) as PocketBase's JSON error
    when it is under ``/api/``, where the SDKs read error bodies; else ``error`` itself."""
    if error.status < 400 or not request.path.startswith("/api/"):
        return error
    text = (error.text or "").strip()
    default = not text or text.startswith(f"{error.status}:")  # aiohttp's "404: Not Found"
    message = _MESSAGES.get(error.status) or (f"{error.reason}." if default else text)
    response = api_error(error.status, message)
    if "Allow" in error.headers:
        response.headers["Allow"] = error.headers["Allow"]
    return response
