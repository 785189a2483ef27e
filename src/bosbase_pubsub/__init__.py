"""bosbase-pubsub: a BosBase-compatible realtime publish/subscribe server and Python SDK.

The SDK's public names are importable from here (``from bosbase_pubsub import
BosBase``). They load on first use, so that importing the package (or its
``protocol`` module, as the server does) loads neither the SDK's dependencies
nor, ever, the server's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import (
        AsyncBosBase,
        AsyncGapHandler,
        AsyncHandler,
        AsyncPubSub,
        AsyncRecordService,
        AuthError,
        AuthRecord,
        AuthResponse,
        AuthStore,
        BosBase,
        BosBaseError,
        ClientClosed,
        ClientError,
        ConnectionClosed,
        GapHandler,
        Handler,
        InvalidRequest,
        Message,
        MessageStream,
        PublishAck,
        PubSub,
        Reconnect,
        RecordService,
        ReplayGap,
        RequestTimeout,
        ServerError,
        Timeouts,
        TransportError,
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
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import client

        value = getattr(client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
