"""Logging as human-readable text or one JSON object per line."""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal

import orjson


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and exception, worker)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(
    fmt: Literal["text", "json"], level: str, *, worker: int | None = None
) -> None:
    """Send the server's logs to standard error in ``fmt`` (naming the worker, if one)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter(worker)
        formatter.converter = time.gmtime
    else:
        who = "" if worker is None else f"[worker {worker}] "
        formatter = logging.Formatter(f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is per request; keep it quiet unless asked for.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
