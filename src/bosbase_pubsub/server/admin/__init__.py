"""The operator console at ``/_/`` and the admin REST API under ``/api/admin/``.

::

    activity = TopicActivity(hub)            # the commit queue delivers through it
    ...
    add_console(app, node, activity=activity, publish=http_publish)

Modules: ``activity`` (per-topic counts, rates, this node's heartbeat report),
``routes`` (the superuser-only API), ``console`` (the static files, their
caching and Content-Security-Policy). The browser side is plain files in
``static/``: ``index.html``, ``console.css`` and ``console.js`` (no framework,
no build step).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .activity import Sampler, TopicActivity
from .console import ConsoleFiles
from .routes import AdminApi

if TYPE_CHECKING:
    from ..app import Node

__all__ = ["TopicActivity", "add_console"]


def add_console(
    app: web.Application,
    node: Node,
    *,
    activity: TopicActivity,
    publish: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> None:
    """Serve the console and the admin API on ``app``, for ``node``.

    ``activity`` must be the ``Deliverer`` the node's commit queue (or
    sequencer) delivers through; ``publish`` is the node's HTTP publish
    handler, so that the console's publishes take the same path as any other.
    Register after the node's own lifecycle: the sampler starts once the
    store is open and stops before it closes.
    """
    sampler = Sampler(node, activity)
    stopping = asyncio.Event()
    AdminApi(node, sampler, publish=publish, stopping=stopping).register(app.router)
    ConsoleFiles().register(app.router)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        sampler.start()
        yield
        await sampler.stop()

    async def end_streams(app: web.Application) -> None:
        stopping.set()  # open event streams end, so they do not hold the shutdown up

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(end_streams)
