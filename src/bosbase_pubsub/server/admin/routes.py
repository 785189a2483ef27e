"""The admin REST API under ``/api/admin/``: what the console uses, open to scripts too.

Every route needs a superuser's token in the ``Authorization`` header
(never a cookie or the query string): without one it answers 401, with
another account's token 403, both in PocketBase's error shape.

=========================================  ==============================================
``GET /api/admin/overview``                nodes, connections, topics, rates, queues
``GET /api/admin/stream``                  the overview as server-sent events, every second
``GET /api/admin/messages``                stored messages, newest first (``topic``,
                                           ``before``, ``until``, ``limit``)
``GET /api/admin/messages/{seq}``          one stored message
``POST /api/admin/publish``                publish ``{"topic", "data"}`` as the superuser
``GET /api/admin/users``                   accounts of ``users``, newest first (paged)
``POST /api/admin/users``                  create one
``DELETE /api/admin/users/{id}``           delete one (its tokens stop verifying)
``POST /api/admin/users/{id}/password``    set its password (its tokens stop verifying)
=========================================  ==============================================

See ``docs/reference/admin-api.md`` for the shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from ..auth import USERS, Authenticator, Identity, InvalidInputError, UnreadableBodyError
from ..auth.accounts import change_password, create_from_form
from ..auth.forms import REQUIRED, parse_password_change
from ..auth.records import record_json
from ..auth.routes import NOT_FOUND, REQUIRES_AUTH, SUPERUSERS_ONLY, read_body
from ..errors import api_error, json_response
from ..storage import Message, StoreError
from .activity import Sampler

if TYPE_CHECKING:
    from ..app import Node

log = logging.getLogger("bosbase_pubsub.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_PAGE, MAX_PAGE = 50, 500
"""Messages per page of ``GET /api/admin/messages``: by default, and at most."""
STREAM_INTERVAL = 1.0
"""Seconds between two overview events of ``GET /api/admin/stream``."""
STREAM_RECHECK = 5.0
"""Seconds between two checks that a stream's token still verifies (revoked: it ends)."""
SOMETHING_WENT_WRONG = "Something went wrong while processing your request."


class AdminApi:
    """The ``/api/admin/...`` handlers of one node."""

    def __init__(
        self,
        node: Node,
        sampler: Sampler,
        *,
        publish: Handler,
        stopping: asyncio.Event,
    ) -> None:
        self._node = node
        self._auth: Authenticator = node.authenticator
        self._sampler = sampler
        self._publish = publish
        self._stopping = stopping

    def register(self, router: web.UrlDispatcher) -> None:
        guard = self._superusers_only
        router.add_get("/api/admin/overview", guard(self.overview))
        router.add_get("/api/admin/stream", guard(self.stream))
        router.add_get("/api/admin/messages", guard(self.messages))
        router.add_get("/api/admin/messages/{seq}", guard(self.message))
        router.add_post("/api/admin/publish", guard(self._publish))
        router.add_get("/api/admin/users", guard(self.users))
        router.add_post("/api/admin/users", guard(self.create_user))
        router.add_delete("/api/admin/users/{id}", guard(self.delete_user))
        router.add_post("/api/admin/users/{id}/password", guard(self.set_password))

    async def _superuser(self, request: web.Request) -> Identity | web.Response:
        """The requester's identity if a superuser, else the error to answer with."""
        try:
            identity = await self._auth.identify_header(request)
        except StoreError:
            return api_error(503, SOMETHING_WENT_WRONG)
        if identity is None:
            return api_error(401, REQUIRES_AUTH)
        if not identity.is_superuser:
            return api_error(403, SUPERUSERS_ONLY)
        return identity

    def _superusers_only(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            refused = await self._superuser(request)
            if isinstance(refused, web.Response):
                return refused
            try:
                return await handler(request)
            except web.HTTPRequestEntityTooLarge:
                return api_error(413, "Request entity too large.")
            except StoreError:
                log.exception("admin: the store failed on %s %s", request.method, request.path)
                return api_error(500, SOMETHING_WENT_WRONG)

        return guarded

    # --- overview ------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        return json_response(await self._sampler.overview())

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``event: overview`` with the overview, every second.

        Ends when the node shuts down, the client goes away, or the token no
        longer verifies (expired, its account deleted or its password changed).
        """
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # reverse proxies: do not hold events back
            }
        )
        await response.prepare(request)
        checked = time.monotonic()
        try:
            while not self._stopping.is_set():
                data = orjson.dumps(await self._sampler.overview())
                await response.write(b"event: overview\ndata: " + data + b"\n\n")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), STREAM_INTERVAL)
                if time.monotonic() - checked >= STREAM_RECHECK:
                    checked = time.monotonic()
                    if isinstance(await self._superuser(request), web.Response):
                        await response.write(b"event: signed-out\ndata: {}\n\n")
                        break
        except (ConnectionError, asyncio.CancelledError):
            return response  # the console went away
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    # --- messages ------------------------------------------------------------------------

    def _message_json(self, message: Message) -> dict[str, Any]:
        return {
            "seq": message.seq,
            "position": self._node.hub.position_text(message.seq),
            "id": message.id,
            "topic": message.topic,
            "created": message.created,
            "createdBy": message.created_by,
            "origin": message.origin,
            "key": message.key,
            "size": len(message.data),
            "data": orjson.Fragment(message.data),  # stored as JSON text: not parsed again
        }

    async def messages(self, request: web.Request) -> web.Response:
        """A page of stored messages, newest first.

        Query: ``topic`` (exact; all topics when absent), ``before`` (a ``seq``:
        only older ones, for the next page), ``until`` (a ``created`` time:
        only messages created at or before it), ``limit`` (1 to 500, 50).
        """
        query = request.query
        topic = query.get("topic", "").strip() or None
        try:
            limit = int(query.get("limit", DEFAULT_PAGE))
            before = int(query["before"]) if query.get("before") else None
        except ValueError:
            return api_error(400, "limit and before must be integers.")
        if not 1 <= limit <= MAX_PAGE:
            return api_error(400, f"limit must be between 1 and {MAX_PAGE}.")
        until = query.get("until", "").strip()
        if until and before is None:
            before = await self._node.store.position_at(until) + 1
        items = await self._node.store.browse(topic, before, limit)
        return json_response(
            {
                "items": [self._message_json(message) for message in items],
                # Pass it as ``before`` for the next page; null on the last one.
                "next": items[-1].seq if len(items) == limit else None,
            }
        )

    async def message(self, request: web.Request) -> web.Response:
        try:
            seq = int(request.match_info["seq"])
        except ValueError:
            return api_error(404, NOT_FOUND)
        found = await self._node.store.browse(None, seq + 1, 1)
        if not found or found[0].seq != seq:
            return api_error(404, NOT_FOUND)
        return json_response(self._message_json(found[0]))

    # --- users ---------------------------------------------------------------------------

    async def users(self, request: web.Request) -> web.Response:
        """``?page=1&perPage=30``: the accounts of ``users``, newest first."""
        try:
            page = max(1, int(request.query.get("page", 1)))
            per_page = min(500, max(1, int(request.query.get("perPage", 30))))
        except ValueError:
            return api_error(400, "page and perPage must be integers.")
        accounts = self._auth.accounts
        total = await accounts.count(USERS.name)
        records = await accounts.list_records(
            USERS.name, offset=(page - 1) * per_page, limit=per_page
        )
        return json_response(
            {
                "page": page,
                "perPage": per_page,
                "totalItems": total,
                "items": [record_json(record, show_email=True) for record in records],
            }
        )

    async def create_user(self, request: web.Request) -> web.Response:
        """``{"email", "password"}`` (``passwordConfirm``, ``name``, ``verified`` optional)."""
        try:
            body = await read_body(request)
            body.setdefault("passwordConfirm", body.get("password"))
            record = await create_from_form(
                self._auth.accounts, self._auth.hasher, USERS, body, manager=True
            )
        except UnreadableBodyError:
            return api_error(400, "Failed to read the submitted data.")
        except InvalidInputError as error:
            return api_error(400, "Failed to create record.", error.to_json())
        log.info("admin: created user %s", record.id)
        return json_response(record_json(record, show_email=True))

    async def delete_user(self, request: web.Request) -> web.Response:
        record_id = request.match_info["id"]
        if not await self._auth.accounts.delete(USERS.name, record_id):
            return api_error(404, NOT_FOUND)
        log.info("admin: deleted user %s", record_id)
        return web.Response(status=204)

    async def set_password(self, request: web.Request) -> web.Response:
        """``{"password"}`` (``passwordConfirm`` optional): no old password needed."""
        record = await self._auth.accounts.find_by_id(USERS.name, request.match_info["id"])
        if record is None:
            return api_error(404, NOT_FOUND)
        try:
            body = await read_body(request)
            body.setdefault("passwordConfirm", body.get("password"))
            change = parse_password_change(body, record, USERS, manager=True)
        except UnreadableBodyError:
            return api_error(400, "Failed to read the submitted data.")
        except InvalidInputError as error:
            return api_error(400, "Failed to update record.", error.to_json())
        if change is None:
            return api_error(400, "Failed to update record.", {"password": REQUIRED.to_json()})
        record = await change_password(
            self._auth.accounts, self._auth.hasher, record, change.password
        )
        log.info("admin: password set for user %s", record.id)
        return json_response(record_json(record, show_email=True))
