"""What the PostgreSQL store and its cross-node feed share: the notification
channel, the statement timeout, and the one translation of driver errors.

Its own module so that ``postgres`` (which opens feeds) and ``postgres_feed``
(which uses these) do not import each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import asyncpg

from .base import DuplicateRecordError, StoreError

CHANNEL = "_pubsub_messages"
"""The LISTEN/NOTIFY channel. A notification only wakes the feeds: its payload is the
id of the node that stored the batch, never the messages."""

QUERY_TIMEOUT = 10.0
"""Seconds any statement may take before the store counts as failed."""


DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # Raised, for one, by a connection the server just cut while it was idle.
    asyncpg.exceptions.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)
"""What ``translate_errors`` turns into ``StoreError``: the driver's and the socket's."""


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn driver and socket errors into ``StoreError`` (the one place that does)."""
    try:
        yield
    except asyncpg.UniqueViolationError as error:
        raise DuplicateRecordError(f"postgres: {action}: {error}") from error
    except DRIVER_ERRORS as error:
        detail = str(error) or type(error).__name__
        raise StoreError(f"postgres: {action}: {detail}") from error
