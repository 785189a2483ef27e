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
