"""Refreshing the stored token before it expires, so a long-lived client stays signed in.

The plan is pure (``plan_refresh``: when, and with which collection); the two
drivers only wait and call ``auth_refresh``: ``TokenRefresher`` on a thread of
its own for ``BosBase``, ``AsyncTokenRefresher`` as a task for
``AsyncBosBase``. A refreshed token is saved in the auth store, whose change
reaches an open pub/sub socket as an ``auth`` frame (see ``_core``): no
reconnect, no missed message.

Rules:

* Only a token this server can refresh is refreshed: a built-in one
  (``type: "auth"``, ``refreshable: true``, a known collection). Tokens of
  the application's own backend are the application's to renew (save the new
  one in ``auth_store``).
* It is refreshed ``min(REFRESH_AHEAD, remaining / 2)`` before it expires.
* A refusal (401, 403, 404: revoked, the account gone) ends refreshing that
  token; the store is left alone, so the application decides. Any other
  failure is retried after ``min(RETRY_AFTER, remaining / 2)``, until expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ._auth import SUPERUSERS_COLLECTION_ID, AuthStore, token_claims
from ._exceptions import BosBaseError, ServerError
from ._types import AuthRecord

__all__ = [
    "AsyncTokenRefresher",
    "RefreshPlan",
    "RefreshSchedule",
    "TokenRefresher",
    "plan_refresh",
]

log = logging.getLogger("bosbase_pubsub.client")

REFRESH_AHEAD = 600.0
"""Refresh at most this many seconds before expiry (half the remaining time when less)."""
RETRY_AFTER = 30.0
"""Wait at most this long before trying again after a failed refresh."""
_COLLECTIONS = {"_pb_users_auth_": "users", SUPERUSERS_COLLECTION_ID: "_superusers"}


@dataclass(frozen=True, slots=True)
class RefreshPlan:
    collection: str
    """The collection whose ``auth-refresh`` route renews the token."""
    delay: float
    """Seconds from now until the refresh is due (0: now)."""
    retry_delay: float
    """Seconds to wait after a failed attempt before the next one."""


def plan_refresh(token: str, record: AuthRecord | None, now: float) -> RefreshPlan | None:
    """When and how to refresh ``token`` (``now``: Unix time); ``None``: it cannot be."""
    claims = token_claims(token)
    expires = claims.get("exp")
    if claims.get("type") != "auth" or claims.get("refreshable") is not True:
        return None
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        return None
    collection = _COLLECTIONS.get(str(claims.get("collectionId", "")))
    if collection is None and record is not None:
        collection = record.get("collectionName") or None
    remaining = expires - now
    if collection is None or remaining <= 0:
        return None
    return RefreshPlan(
        collection=collection,
        delay=max(0.0, remaining - min(REFRESH_AHEAD, remaining / 2)),
        retry_delay=max(0.5, min(RETRY_AFTER, remaining / 2)),
    )


class RefreshSchedule:
    """What both drivers share: the next wait, and what a refresh's outcome changes."""

    def __init__(self) -> None:
        self._given_up = ""
        """A token the server refused to refresh: not tried again."""
        self._retry_at: float | None = None
        """``time.monotonic()`` of the next attempt after a failure."""

    def next(self, token: str) -> tuple[RefreshPlan | None, float | None]:
        """The plan for ``token`` and how long to wait for it (``None``: until woken)."""
        plan = None if token == self._given_up else plan_refresh(token, None, time.time())
        if plan is None:
            return None, None
        if self._retry_at is not None:
            return plan, max(0.0, self._retry_at - time.monotonic())
        return plan, plan.delay

    def woken(self) -> None:
        """The token changed: plan from scratch."""
        self._retry_at = None

    def outcome(self, token: str, plan: RefreshPlan, error: BosBaseError | None) -> None:
        if error is None:
            self._retry_at = None
        elif isinstance(error, ServerError) and error.status in (401, 403, 404):
            log.warning("the server refused to refresh the auth token: %s", error)
            self._given_up, self._retry_at = token, None
        else:
            log.info("refreshing the auth token failed, trying again: %s", error)
            self._retry_at = time.monotonic() + plan.retry_delay


class TokenRefresher:
    """Refreshes ``store``'s token on a daemon thread; ``refresh(collection)`` does the call.

    The thread runs only while the store holds a refreshable token.
    """

    def __init__(self, store: AuthStore, refresh: Callable[[str], object]) -> None:
        self._store = store
        self._refresh = refresh
        self._schedule = RefreshSchedule()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._remove = store.on_change(lambda token, record: self._changed())
        self._changed()

    def _changed(self) -> None:
        with self._lock:
            self._wake.set()
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="bosbase-pubsub-token-refresh", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        self._remove()
        with self._lock:
            self._closed = True
            self._wake.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            token = self._store.token
            plan, wait = self._schedule.next(token)
            with self._lock:
                if self._closed or (plan is None and not self._wake.is_set()):
                    self._thread = None  # nothing to refresh: a change starts a new thread
                    return
            if self._wake.wait(wait):
                self._wake.clear()
                self._schedule.woken()
                continue
            if plan is not None and not self._closed:
                error: BosBaseError | None = None
                try:
                    self._refresh(plan.collection)
                except BosBaseError as failure:
                    error = failure
                self._schedule.outcome(token, plan, error)


class AsyncTokenRefresher:
    """``TokenRefresher`` as an asyncio task, started on the loop of the first change."""

    def __init__(self, store: AuthStore, refresh: Callable[[str], Awaitable[object]]) -> None:
        self._store = store
        self._refresh = refresh
        self._schedule = RefreshSchedule()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._remove = store.on_change(lambda token, record: self._changed())
        self._changed()

    def _changed(self) -> None:
        """Wake the task, or start it on the running loop when it is not running."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop
        if loop is not None and running is not loop and not loop.is_closed():
            loop.call_soon_threadsafe(self._changed)  # saved from another thread
            return
        if running is not None and not self._closed and (self._task is None or self._task.done()):
            self._loop = running
            self._wake = asyncio.Event()  # a new task plans afresh (and binds to this loop)
            self._task = running.create_task(self._run())
        else:
            self._wake.set()

    async def close(self) -> None:
        self._closed = True
        self._remove()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            token = self._store.token
            plan, wait = self._schedule.next(token)
            if plan is None and not self._wake.is_set():
                return  # nothing to refresh: a change starts a new task
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass
            else:
                self._wake.clear()
                self._schedule.woken()
                continue
            if plan is not None:
                error: BosBaseError | None = None
                try:
                    await self._refresh(plan.collection)
                except BosBaseError as failure:
                    error = failure
                self._schedule.outcome(token, plan, error)
