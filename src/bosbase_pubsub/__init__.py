"""bosbase-pubsub: a BosBase-compatible realtime publish/subscribe server and Python SDK."""

__version__ = "0.1.0"
