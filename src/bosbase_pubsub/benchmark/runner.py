"""One benchmark run: sign in, connect, publish for the window, drain, count.

The phases, each bounded: *setup* (an identity, then every connection open
and subscribed, within ``Timeouts.setup``), the *window* (publishing until
``duration`` or ``count``), the *drain* (waiting for the acks and deliveries
still on their way, within ``Timeouts.drain``), then the count. The result
is a plain JSON-ready dict; ``report`` turns it into a table, a file, a plot.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from .. import __version__
from .settings import Timeouts, Workload
from .workload import Publisher, SetupError, Subscriber, Tally, lost, open_connection, ws_url

_CONNECT_AT_ONCE = 50
"""Connections opened concurrently during setup (a burst of handshakes is not the test)."""


_SEND_GRACE = 1.0
"""Seconds past the window's end that a publisher still blocked in a send may take."""


class AuthFailedError(Exception):
    """No identity to publish with: the token, the sign-in or the sign-up failed."""


@dataclass(frozen=True)
class Credentials:
    """How the publishers get their token: ``token``, or ``email``/``password``, or
    neither (a throwaway ``users`` account is signed up)."""

    token: str = ""
    email: str = ""
    password: str = ""
    collection: str = ""
    """For ``email``: the auth collection; empty: ``_superusers``, then ``users``."""


Snapshot = Callable[[Tally, float], None]
"""Called about twice a second while publishing, with the tally and the seconds elapsed."""


async def run(
    url: str,
    workload: Workload,
    credentials: Credentials,
    *,
    timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen, so a shared default is safe
    on_progress: Snapshot | None = None,
) -> dict[str, Any]:
    """Run ``workload`` against the server at ``url`` and return the result dict.

    Raises ``AuthFailedError`` or ``SetupError`` when the run cannot start.
    """
    started = dt.datetime.now(dt.timezone.utc)
    token, account = await asyncio.wait_for(_identity(url, credentials), timeouts.setup)
    topic = f"bench/{secrets.token_hex(6)}"
    socket_url = ws_url(url)
    # The clock starts at setup's end; the Tally is re-made then (see below).
    tally = Tally(
        time.monotonic(), publishers=workload.publishers, with_subscribers=workload.subscribers > 0
    )
    subscribers: list[Subscriber] = []
    publishers: list[Publisher] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        subscribers = await _open_all(
            [
                lambda: Subscriber.start(
                    socket_url, topic, tally, workload.publishers, timeouts.setup
                )
            ]
            * workload.subscribers,
            timeouts.setup,
        )
        connections = await _open_all(
            [lambda: open_connection(socket_url, token, timeouts.setup)] * workload.publishers,
            timeouts.setup,
        )
        start = time.monotonic()
        tally.timeline.start = start
        tally.last_ack = tally.last_delivery = start
        publishers = [
            Publisher(i, ws, tally, in_flight=workload.in_flight)
            for i, ws in enumerate(connections)
        ]
        tasks = [asyncio.create_task(s.read()) for s in subscribers]
        tasks += [asyncio.create_task(p.read()) for p in publishers]
        cpu_before = time.process_time()
        window = await _publish(workload, topic, publishers, tally, start, on_progress)
        drained = await _drain(subscribers, publishers, tally, start, timeouts.drain, on_progress)
        cpu = time.process_time() - cpu_before
        wall = time.monotonic() - start
    finally:
        await _close(subscribers, publishers, tasks)
    return _result(
        url=url,
        workload=workload,
        timeouts=timeouts,
        started=started,
        account=account,
        topic=topic,
        tally=tally,
        window=window,
        wall=wall,
        cpu=cpu,
        drained=drained,
        lost_count=lost(subscribers, tally),
    )


async def _identity(url: str, credentials: Credentials) -> tuple[str, str]:
    """A token to publish with, and a word on whose it is."""
    if credentials.token:
        return credentials.token, "the given token"
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=10) as http:
        if credentials.email:
            names = [credentials.collection] if credentials.collection else ["_superusers", "users"]
            for name in names:
                token = await _sign_in(http, name, credentials.email, credentials.password)
                if token:
                    return token, f"{credentials.email} ({name})"
            raise AuthFailedError(f"cannot sign in as {credentials.email}: wrong email or password")
        # A throwaway account of its own, with a password nobody knows.
        email = f"bench-{secrets.token_hex(6)}@example.com"
        password = secrets.token_urlsafe(18)
        body = {"email": email, "password": password, "passwordConfirm": password}
        try:
            response = await http.post("/api/collections/users/records", json=body)
        except httpx.HTTPError as error:
            raise SetupError(f"cannot reach {url}: {error}") from None
        if response.status_code == 403:
            raise AuthFailedError(
                "the server does not let anyone sign up (--no-signup): pass --token,"
                " or --email and --password of an account"
            )
        if response.status_code != 200:
            raise AuthFailedError(f"sign-up failed: {response.status_code} {response.text[:200]}")
        token = await _sign_in(http, "users", email, password)
        if not token:
            raise AuthFailedError("the new account cannot sign in")
        return token, f"{email} (users, created for this run)"


async def _sign_in(http: httpx.AsyncClient, collection: str, email: str, password: str) -> str:
    try:
        response = await http.post(
            f"/api/collections/{collection}/auth-with-password",
            json={"identity": email, "password": password},
        )
    except httpx.HTTPError as error:
        raise SetupError(f"cannot reach the server: {error}") from None
    if response.status_code == 429:
        raise AuthFailedError("too many failed sign-ins: the server asks to wait")
    if response.status_code != 200:
        return ""
    token: str = response.json()["token"]
    return token


async def _open_all(openers: list[Callable[[], Any]], timeout: float) -> list[Any]:
    """Run the openers, ``_CONNECT_AT_ONCE`` at a time, all within ``timeout``."""
    gate = asyncio.Semaphore(_CONNECT_AT_ONCE)
    opened: list[Any] = []

    async def one(opener: Callable[[], Any]) -> None:
        async with gate:
            opened.append(await opener())

    try:
        await asyncio.wait_for(asyncio.gather(*(one(o) for o in openers)), timeout)
    except BaseException as error:
        for connection in opened:
            ws = getattr(connection, "ws", connection)
            with contextlib.suppress(Exception):
                await ws.close()
        if isinstance(error, asyncio.TimeoutError):
            raise SetupError(f"setup took longer than {timeout:g}s") from None
        raise
    return opened


async def _publish(
    workload: Workload,
    topic: str,
    publishers: list[Publisher],
    tally: Tally,
    start: float,
    on_progress: Snapshot | None,
) -> float:
    """Publish for the window; returns its length in seconds."""
    end = start + workload.duration
    per_publisher = workload.rate / len(publishers)
    padding = "x" * workload.payload
    share, extra = divmod(workload.count, len(publishers))
    jobs = [
        asyncio.create_task(
            p.publish(
                topic,
                count=share + (1 if i < extra else 0),
                rate=per_publisher,
                # Staggered, so that M publishers at R/M make one even stream of R.
                start=start + (i / workload.rate if workload.rate else 0.0),
                end=end,
                padding=padding,
            )
        )
        for i, p in enumerate(publishers)
    ]
    # A send or a window slot can wait for ever on a server that stopped reading:
    # past the window's end (and a little grace) whatever still waits is cancelled.
    deadline = end + _SEND_GRACE
    everyone = asyncio.gather(*jobs, return_exceptions=True)
    try:
        while not everyone.done() and time.monotonic() < deadline:
            await asyncio.wait([everyone], timeout=0.5)
            if on_progress is not None:
                on_progress(tally, time.monotonic() - start)
    finally:
        for job in jobs:
            job.cancel()
        for outcome in await everyone:
            if isinstance(outcome, Exception):
                raise outcome
    return time.monotonic() - start


async def _drain(
    subscribers: list[Subscriber],
    publishers: list[Publisher],
    tally: Tally,
    start: float,
    timeout: float,
    on_progress: Snapshot | None,
) -> bool:
    """Wait for every ack, and for every subscriber to have every acked message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = all(not p.pending for p in publishers)
        # A subscriber that was closed (e.g. as a slow consumer) gets nothing more.
        if answered and all(s.closed or s.distinct >= tally.acked for s in subscribers):
            return True
        await asyncio.sleep(0.05)
        if on_progress is not None:
            on_progress(tally, time.monotonic() - start)
    return False


async def _close(
    subscribers: list[Subscriber], publishers: list[Publisher], tasks: list[asyncio.Task[None]]
) -> None:
    connections = [s.ws for s in subscribers] + [p.ws for p in publishers]
    await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _result(
    *,
    url: str,
    workload: Workload,
    timeouts: Timeouts,
    started: dt.datetime,
    account: str,
    topic: str,
    tally: Tally,
    window: float,
    wall: float,
    cpu: float,
    drained: bool,
    lost_count: int,
) -> dict[str, Any]:
    if tally.with_subscribers:
        for second in tally.timeline.seconds:
            tally.delivery_latency.merge(second.latency)
    ack_span = tally.last_ack - tally.timeline.start
    delivery_span = tally.last_delivery - tally.timeline.start
    return {
        "tool": "bosbase-pubsub bench",
        "version": __version__,
        "started": started.isoformat(timespec="seconds"),
        "url": url,
        "mode": workload.mode,
        "workload": asdict(workload),
        "timeouts": asdict(timeouts),
        "account": account,
        "topic": topic,
        "window_s": round(window, 3),
        "wall_s": round(wall, 3),
        # Publishes the rate made due within the window (None: unpaced).
        "due": min(workload.count, int(workload.rate * workload.duration))
        if workload.rate
        else None,
        "sent": tally.sent,
        "acked": tally.acked,
        "expected_deliveries": tally.acked * workload.subscribers,
        "delivered": tally.delivered,
        "lost": lost_count,
        "duplicates": tally.duplicates,
        "drained": drained,
        "errors": tally.publish_errors + tally.connection_errors,
        "publish_errors": tally.publish_errors,
        "connection_errors": tally.connection_errors,
        "error_messages": dict(tally.error_messages),
        "acked_publishes_per_s": round(tally.acked / ack_span, 1) if ack_span > 0 else 0.0,
        "deliveries_per_s": (
            round(tally.delivered / delivery_span, 1) if delivery_span > 0 else 0.0
        ),
        "ack_latency_ms": tally.ack_latency.summary_ms(),
        "delivery_latency_ms": tally.delivery_latency.summary_ms(),
        "client_cpu_percent": round(100 * cpu / wall, 1) if wall > 0 else 0.0,
        "client_cpus": os.cpu_count(),
        "timeline": tally.timeline.to_json(),
        "latency_histogram_ms": (
            tally.delivery_latency if tally.with_subscribers else tally.ack_latency
        ).buckets_ms(),
    }
