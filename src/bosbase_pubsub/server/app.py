"""The node: builds the aiohttp application and runs it until a signal.

Lifecycle: open the store, load the signing secrets, start following the
other nodes' messages (a shared store only), start pruning, then listen. On
SIGTERM or SIGINT: stop accepting, leave new publishes unanswered, let the queued ones
commit and send their acks and deliveries, close every WebSocket with 1001,
stop following, then close the store. Under ``serve --workers N`` each worker runs
this same node (see ``workers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from .. import protocol
from .admin import TopicActivity, add_console
from .auth import Authenticator, add_routes
from .cluster import Follower, Sequencer
from .commits import CommitQueue
from .config import ServerConfig
from .cors import cors_middleware
from .errors import api_error, json_response
from .hub import Hub
from .ids import new_id, now_created
from .metrics import FeedGauges, Metrics
from .proxies import TrustedProxies, parse_networks
from .resources import raise_open_files_limit
from .retention import run_retention
from .rules import load_rules
from .storage import Message, Store, StoreError, open_store
from .websocket import PubSubEndpoint
from .workers import WorkerRole

log = logging.getLogger("bosbase_pubsub.server")

EPOCH_PARAM = "pubsub.epoch"
"""The ``_params`` row holding the database's epoch (the first part of positions)."""

HEALTH_TIMEOUT = 2.0
"""Seconds ``/api/health`` waits for the store before calling the node degraded."""


@dataclass
class Node:
    """Everything one server process owns."""

    config: ServerConfig
    store: Store
    metrics: Metrics
    hub: Hub
    commits: CommitQueue
    authenticator: Authenticator
    endpoint: PubSubEndpoint
    node_id: str
    follower: Follower | None = None
    """Delivers other nodes' messages; ``None`` when only this node uses the store."""
    worker: WorkerRole | None = None
    """This process's place under ``serve --workers``; ``None`` for a lone process."""
    address: str = ""
    """``host:port`` the node listens on, once it does."""


NODE = web.AppKey("node", Node)


def build_app(
    config: ServerConfig, store: Store | None = None, *, worker: WorkerRole | None = None
) -> web.Application:
    """The aiohttp application for ``config`` (its store is opened on startup)."""
    store = store or open_store(
        config.db_url, config.data_dir, sqlite_synchronous=config.sqlite_synchronous
    )
    metrics = Metrics()
    hub = Hub(metrics, outbound_buffer_bytes=config.limits.outbound_buffer_bytes)
    node_id = new_id()
    activity = TopicActivity(hub)  # counts each topic's messages for the console
    feed = store.feed(skip_origin=node_id)
    follower = None
    if feed is None:
        commits = CommitQueue(store, activity, metrics)
    else:
        # Own batches and the other nodes' rows reach the hub in seq order.
        sequencer = Sequencer(activity, node_id)
        commits = CommitQueue(store, sequencer, metrics)
        sequencer.commits = commits
        follower = Follower(feed, sequencer, node_id=node_id)
    authenticator = Authenticator(store.accounts, config.auth)
    endpoint = PubSubEndpoint(
        hub=hub,
        store=store,
        commits=commits,
        authenticator=authenticator,
        metrics=metrics,
        limits=config.limits,
        node_id=node_id,
        heartbeat=config.heartbeat,
        rules=load_rules(config.rules_file),
    )
    node = Node(
        config, store, metrics, hub, commits, authenticator, endpoint, node_id, follower, worker
    )

    # Request bodies are bounded above the payload limit; the publish route
    # answers oversized ones itself with the contract's 413 body.
    middlewares = [cors_middleware(config.auth.origins)]
    trusted = parse_networks(config.trusted_proxies)
    if trusted:  # first, so that everything after sees the client's address
        middlewares.insert(0, TrustedProxies(trusted).middleware())
    app = web.Application(
        client_max_size=2 * config.limits.max_frame_bytes, middlewares=middlewares
    )
    app[NODE] = node
    app.router.add_get("/api/pubsub", endpoint.handle)
    app.router.add_post("/api/pubsub/publish", http_publish)
    app.router.add_get("/api/health", health)
    app.router.add_get("/metrics", metrics_route)
    add_routes(app, authenticator)
    app.cleanup_ctx.append(_lifecycle)
    add_console(app, node, activity=activity, publish=http_publish)  # after: needs the store
    app.on_shutdown.append(_close_sockets)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    await node.store.open()
    await node.authenticator.start()
    # Created once per database: positions from another (or a wiped) one are unknown.
    node.hub.epoch = await node.store.accounts.secret(EPOCH_PARAM, new_id()[:10])
    if node.follower is not None:
        # Before listening: the node delivers every message stored from now on.
        await node.follower.start()
        node.hub.position = node.follower.position
    else:
        node.hub.position = (await node.store.positions()).newest
    pruning = asyncio.get_running_loop().create_task(
        run_retention(node.store, node.config.retention, node.metrics)
    )
    log.info("node %s ready (store: %s)", node.node_id, type(node.store).__name__)
    yield
    pruning.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pruning
    if node.follower is not None:
        await node.follower.stop()
    # Every publish already queued gets its commit (and its ack, if its
    # socket is still open) before the store goes away.
    await node.commits.drain()
    await node.store.close()


async def _close_sockets(app: web.Application) -> None:
    """Answer the publishes in flight, then close every socket with 1001.

    New publishes go unanswered (and unstored; HTTP ones get 503) while the
    queued ones commit, so that every message stored gets its ack and its live
    deliveries before the sockets close, unless the store takes longer than
    half of ``--shutdown-timeout``. A client resends what was never acked once
    it has reconnected (the SDKs do).
    """
    node = app[NODE]
    node.endpoint.closing = True
    try:
        await asyncio.wait_for(node.commits.drain(), node.config.shutdown_timeout / 2)
    except asyncio.TimeoutError:
        log.warning("shutting down with publishes still waiting for the store")
    await node.endpoint.close_all()


async def health(request: web.Request) -> web.Response:
    """``GET /api/health``: 200 when the store answers, 503 (degraded) when not."""
    node = request.app[NODE]
    try:
        await asyncio.wait_for(node.store.ping(), HEALTH_TIMEOUT)
        if node.commits.degraded:
            raise StoreError("the last commit failed")
        if node.follower is not None and node.follower.degraded:
            raise StoreError("the feed of other nodes' messages is failing")
    except Exception as error:
        reason = str(error) or type(error).__name__
        return api_error(
            503,
            "API is degraded: the store is unreachable.",
            {"store": {"code": "store_unreachable", "message": reason}},
        )
    return json_response({"code": 200, "message": "API is healthy.", "data": {}})


async def metrics_route(request: web.Request) -> web.Response:
    """``GET /metrics``: this node's, or under ``--workers`` every worker's, labelled."""
    node = request.app[NODE]
    text = own_metrics(node)
    if node.worker is not None:
        text = await node.worker.gather_metrics(text)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def own_metrics_route(request: web.Request) -> web.Response:
    """This worker's exposition alone (on its Unix socket, for the other workers)."""
    text = own_metrics(request.app[NODE])
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def own_metrics(node: Node) -> str:
    follower = node.follower
    feed = (
        None
        if follower is None
        else FeedGauges(follower.received, follower.position, follower.degraded)
    )
    return node.metrics.render(
        topics=node.hub.topic_count,
        degraded=node.commits.degraded,
        position=node.hub.position,
        feed=feed,
    )


async def http_publish(request: web.Request) -> web.Response:
    """``POST /api/pubsub/publish``: store and fan out like a WebSocket publish."""
    node = request.app[NODE]
    try:
        identity = await node.authenticator.identify_header(request)
    except StoreError:
        return api_error(503, protocol.ERR_PUBLISH_FAILED)
    if identity is None:
        return api_error(401, protocol.ERR_AUTH_REQUIRED)
    if node.endpoint.closing:
        return api_error(503, protocol.ERR_PUBLISH_FAILED)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return api_error(413, protocol.ERR_PAYLOAD_TOO_LARGE)
    envelope = protocol.decode_json(body)  # as a WebSocket frame: large integers kept exact
    if not isinstance(envelope, dict):
        return api_error(400, protocol.ERR_PAYLOAD_INVALID)
    topic = envelope.get("topic")
    topic = topic.strip() if isinstance(topic, str) else ""
    if not topic:
        return api_error(400, protocol.ERR_TOPIC_REQUIRED)
    if not protocol.is_unicode(topic):
        return api_error(400, protocol.ERR_INVALID_FORMAT)
    if "\x00" in topic:
        return api_error(400, protocol.ERR_TOPIC_NUL)
    limits = node.config.limits
    if len(topic) > limits.max_topic_length:
        return api_error(400, f"topic is too long (at most {limits.max_topic_length} characters)")
    if not node.endpoint.rules.may_publish(identity, topic):
        return api_error(403, protocol.ERR_FORBIDDEN)
    key = envelope.get("key")
    if key is not None and not isinstance(key, str):
        return api_error(400, protocol.ERR_INVALID_FORMAT)
    if key is not None and len(key) > protocol.MAX_KEY_LENGTH:
        return api_error(400, protocol.ERR_KEY_TOO_LONG)
    if key is not None and not protocol.is_unicode(key):
        return api_error(400, protocol.ERR_INVALID_FORMAT)
    if key is not None and "\x00" in key:
        return api_error(400, protocol.ERR_KEY_NUL)
    data = protocol.publish_payload(envelope, body)
    if data == protocol.ERR_PAYLOAD_TOO_LARGE:
        return api_error(413, data)
    if isinstance(data, str):
        return api_error(400, data)

    message = Message(
        id=new_id(),
        topic=topic,
        data=data,
        created=now_created(),
        origin=node.node_id,
        created_by=identity.record_id,
        key=key or None,
    )
    stored: asyncio.Future[tuple[Message, BaseException | None]] = (
        asyncio.get_running_loop().create_future()
    )

    def on_stored(message: Message, error: BaseException | None) -> None:
        if not stored.done():
            stored.set_result((message, error))

    node.commits.submit(message, on_stored)
    # Shielded: a client that hangs up does not un-queue a publish.
    message, error = await asyncio.shield(stored)
    if error is not None:
        return api_error(500, protocol.ERR_PUBLISH_FAILED)
    return json_response(
        {
            "id": message.id,
            "topic": message.topic,
            "created": message.created,
            "position": node.hub.position_text(message.seq),
        }
    )


GC_THRESHOLD = (10_000, 10, 10)
"""The cyclic collector's thresholds while serving (Python's defaults: 700, 10, 10)."""


def quiet_collector() -> None:
    """Make the cyclic garbage collector cheaper for a node that has started.

    Everything made to start (modules, the app, the store's connections) lives
    as long as the process: ``gc.freeze`` moves it out of the collector's
    sight, so a full collection no longer walks it, a pause in every
    connection's delivery. A publish allocates about ten container objects,
    which reference counting frees; a young collection every 10,000
    allocations instead of 700 finds the few cycles as well, at a fraction of
    the passes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def serve(config: ServerConfig, *, worker: WorkerRole | None = None) -> None:
    """Run one node until SIGTERM or SIGINT (or, as a worker, its supervisor's end),
    then shut down gracefully."""
    raise_open_files_limit()
    app = build_app(config, worker=worker)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=config.shutdown_timeout,
        access_log=None,
    )
    await runner.setup()
    # Workers share the port (SO_REUSEPORT): the kernel spreads connections over them.
    site = web.TCPSite(
        runner, config.host, config.port, reuse_address=True, reuse_port=worker is not None
    )
    internal: web.AppRunner | None = None
    try:
        await site.start()
        for host, port, *_ in runner.addresses:
            app[NODE].address = app[NODE].address or f"{host}:{port}"  # for the console
        quiet_collector()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if worker is None:
            for host, port, *_ in runner.addresses:
                log.info("serving on http://%s:%d (WebSocket: /api/pubsub)", host, port)
            log.info("operator console on http://%s/_/", app[NODE].address)
        else:
            internal = await _serve_own_metrics(app, worker)
            worker.watch_lifeline(loop, stop.set)
            worker.report_ready()
            log.info("worker %d of %d ready", worker.index, worker.count)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
        if internal is not None:
            await internal.cleanup()
    log.info("stopped")


async def _serve_own_metrics(app: web.Application, worker: WorkerRole) -> web.AppRunner:
    """This worker's metrics on its Unix socket, where the other workers gather them."""
    internal = web.Application()
    internal[NODE] = app[NODE]
    internal.router.add_get("/metrics", own_metrics_route)
    runner = web.AppRunner(internal, handle_signals=False, access_log=None)
    await runner.setup()
    path = worker.metrics_socket()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a crashed predecessor
    await web.UnixSite(runner, str(path)).start()
    return runner
