"""The Python SDK: ``BosBase`` (threads) and ``AsyncBosBase`` (asyncio).

Modules: ``_core`` (the pub/sub protocol, I/O-free), ``_sync`` and ``_async``
(the two shells, file for file parallel), ``_auth`` (the auth store),
``_records`` (the HTTP record API), ``_config`` (settings and the reconnect
schedule), ``_types`` (what handlers and calls receive), ``_exceptions`` (the
error tree), ``_cli`` (``bosbase-pubsub sub`` and ``pub``).
"""

from __future__ import annotations

from ._async import AsyncBosBase, AsyncPubSub, MessageStream
from ._auth import AuthStore
from ._config import Reconnect, Timeouts
from ._exceptions import (
    AuthError,
    BosBaseError,
    ClientClosed,
    ClientError,
    ConnectionClosed,
    InvalidRequest,
    RequestTimeout,
    ServerError,
    TransportError,
)
from ._records import AsyncRecordService, RecordService
from ._sync import BosBase, PubSub
from ._types import (
    AsyncGapHandler,
    AsyncHandler,
    AuthRecord,
    AuthResponse,
    GapHandler,
    Handler,
    Message,
    PublishAck,
    ReplayGap,
)

__all__ = [
    "AsyncBosBase",
    "AsyncGapHandler",
    "AsyncHandler",
    "AsyncPubSub",
    "AsyncRecordService",
    "AuthError",
    "AuthRecord",
    "AuthResponse",
    "AuthStore",
    "BosBase",
    "BosBaseError",
    "ClientClosed",
    "ClientError",
    "ConnectionClosed",
    "GapHandler",
    "Handler",
    "InvalidRequest",
    "Message",
    "MessageStream",
    "PubSub",
    "PublishAck",
    "Reconnect",
    "RecordService",
    "ReplayGap",
    "RequestTimeout",
    "ServerError",
    "Timeouts",
    "TransportError",
]
