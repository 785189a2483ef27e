"""Helpers for the SDK tests: fast settings, message inboxes, leak counters."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from bosbase_pubsub import Message, Reconnect, Timeouts

FAST_RECONNECT = Reconnect(initial_delay=0.05, max_delay=0.3)
"""Reconnect attempts in tests: soon and often."""
TIMEOUTS = Timeouts(request=5.0, connect=5.0, close=1.0)

JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -17,
    2**63 - 1,
    2**80 + 3,  # beyond 64 bits: kept exact
    3.25,
    -1e-300,
    "",
    'héllo ✓ 😀 \u2028 "quoted" \\ back',
    [],
    {},
    [1, [2, [3, [None]]]],
    {"a": {"b": [None, 1.5, "x", {"c": True}]}, "": 0},
]


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic no other test uses (the shared server lives across tests)."""
    return f"{request.node.name}/{uuid.uuid4().hex[:8]}"


class Inbox:
    """Collects messages from any thread; ``wait_for`` blocks until enough came."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.threads: set[str] = set()
        self._changed = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self._changed:
            self.messages.append(message)
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.messages)} of {count} messages came")
                self._changed.wait(left)
            return list(self.messages)

    @property
    def data(self) -> list[Any]:
        return [message["data"] for message in self.messages]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` (bounded) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def open_sockets() -> int:
    """Sockets this process holds open (``/proc/self/fd`` entries that are sockets)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def client_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("bosbase-pubsub")]


def closed_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
