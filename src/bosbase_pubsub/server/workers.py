"""``serve --workers N``: N worker processes on one port, under one supervisor.

Each worker is a full node of the cluster design (its own node id, hub,
commit queue and feed of the other nodes' rows from the shared PostgreSQL
database or NATS JetStream stream), so a message published to any worker reaches the subscribers of
all of them, in order, none lost: exactly as between machines. SQLite has no
cross-process feed, so it serves with one process (``check_workers``).

How the pieces fit:

- **One port.** The supervisor binds the address with ``SO_REUSEPORT`` and
  never listens on it: that resolves port 0 and holds the port while workers
  come and go. Each worker binds the same address with ``SO_REUSEPORT`` and
  listens; the kernel spreads new connections across the listening workers.
- **Readiness.** A worker writes one byte on a pipe once it listens; the
  supervisor logs ``serving on ...`` when every worker has.
- **Lifeline.** A worker watches a second pipe whose other end only the
  supervisor holds: if the supervisor dies (even ``kill -9``), the pipe ends
  and the worker shuts down gracefully instead of lingering.
- **Crashes.** A worker that exits on its own is started again, after a
  back-off that grows while it keeps crashing; its clients reconnect to the
  port (another worker, or the new one) and resume from their positions.
- **Signals.** SIGTERM or SIGINT: every worker gets SIGTERM and shuts down
  gracefully (closes its sockets with 1001, so the SDKs reconnect and
  resume, and commits what it acked); stragglers are killed after
  ``shutdown_timeout``.
- **Metrics.** Each worker also serves its own exposition on a Unix socket in
  a private folder; ``/metrics`` on any worker gathers every worker's, each
  sample labelled ``worker="i"``, so a scrape sees the whole installation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .config import ServerConfig
from .storage import is_shared

log = logging.getLogger("bosbase_pubsub.workers")

WORKER_ENV = "BOSBASE_PUBSUB__WORKER"
"""Internal: ``INDEX:COUNT:READY_FD:LIFELINE_FD:RUN_DIR`` for a worker process."""
STARTUP_TIMEOUT = 60.0
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Back-off between restarts of a worker that keeps crashing."""
STABLE_AFTER = 30.0
"""A worker that ran this long before it exited starts the back-off afresh."""
GATHER_TIMEOUT = 1.0
"""How long ``/metrics`` waits for another worker's exposition."""


def check_workers(workers: int, db_url: str | None) -> None:
    """Raise ``ValueError`` when ``workers`` processes cannot share the store."""
    if workers > 1 and not is_shared(db_url):
        raise ValueError(
            f"--workers {workers} needs a PostgreSQL or NATS store (--db postgres://... or"
            " --db nats://...): the workers deliver each other's messages through the"
            " shared store's feed, which SQLite does not have; on SQLite one process"
            " serves (--workers 1)"
        )


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: ``taskset``, a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def default_workers(db_url: str | None) -> int:
    """``auto``: one worker per usable CPU on PostgreSQL and NATS, one process on SQLite.

    Usable, not present: a server pinned to one core (``taskset -c 0``, a
    cpuset) gets one process, not as many nodes as the machine has cores
    taking turns on that one core (each also reading every other's rows).
    """
    if is_shared(db_url):
        return usable_cpus()
    return 1


# --- inside a worker ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What a worker process got from its supervisor."""

    index: int
    """1 to ``count``."""
    count: int
    """How many workers the supervisor runs."""
    ready_fd: int
    lifeline_fd: int
    run_dir: Path

    @classmethod
    def from_environment(cls) -> WorkerRole | None:
        value = os.environ.get(WORKER_ENV)
        if not value:
            return None
        index, count, ready, lifeline, run_dir = value.split(":", 4)
        return cls(int(index), int(count), int(ready), int(lifeline), Path(run_dir))

    def metrics_socket(self, index: int | None = None) -> Path:
        return self.run_dir / f"worker-{self.index if index is None else index}.sock"

    def report_ready(self) -> None:
        os.write(self.ready_fd, b"1")
        os.close(self.ready_fd)

    def watch_lifeline(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
        """Call ``stop`` when the supervisor is gone (its end of the pipe closed)."""

        def readable() -> None:
            with contextlib.suppress(OSError):
                if os.read(self.lifeline_fd, 64):
                    return
            loop.remove_reader(self.lifeline_fd)
            log.warning("the supervisor is gone: worker %d shuts down", self.index)
            stop()

        loop.add_reader(self.lifeline_fd, readable)

    async def gather_metrics(self, own: str) -> str:
        """Every worker's exposition (``own`` for this one), merged with worker labels."""

        async def fetch(index: int) -> str | None:
            connector = aiohttp.UnixConnector(path=str(self.metrics_socket(index)))
            timeout = aiohttp.ClientTimeout(total=GATHER_TIMEOUT)
            try:
                async with (
                    aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                    session.get("http://worker/metrics") as response,
                ):
                    return await response.text() if response.status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                return None  # restarting: it shows as pubsub_worker_up 0

        others = [i for i in range(1, self.count + 1) if i != self.index]
        texts = await asyncio.gather(*(fetch(i) for i in others))
        found = {self.index: own, **dict(zip(others, texts, strict=True))}
        return merge_expositions(found)


def merge_expositions(texts: dict[int, str | None]) -> str:
    """Prometheus texts of several workers as one: families kept together, samples labelled.

    ``None`` marks a worker that did not answer; ``pubsub_worker_up`` says which.
    """
    families: dict[str, list[str]] = {}
    for index in sorted(texts):
        text = texts[index]
        if text is None:
            continue
        family = ""
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split(" ", 3)[2]
                lines = families.setdefault(family, [])
                if line not in lines:
                    lines.append(line)
            elif line and not line.startswith("#"):
                families.setdefault(family, []).append(_labelled(line, index))
    up = ["# HELP pubsub_worker_up 1 when the worker answered this scrape.",
          "# TYPE pubsub_worker_up gauge"]  # fmt: skip
    up += [f'pubsub_worker_up{{worker="{i}"}} {int(texts[i] is not None)}' for i in sorted(texts)]
    return "\n".join([line for lines in families.values() for line in lines] + up) + "\n"


def _labelled(sample: str, worker: int) -> str:
    name, _, rest = sample.partition(" ")
    label = f'worker="{worker}"'
    if name.endswith("}"):
        head, _, labels = name.partition("{")
        return f"{head}{{{label},{labels} {rest}"
    return f"{name}{{{label}}} {rest}"


# --- the supervisor ----------------------------------------------------------------


class Worker:
    """One worker process as the supervisor sees it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.lifeline: int | None = None
        """The supervisor's end of the lifeline pipe (closed when the worker is done)."""
        self.started_at = 0.0
        self.crashes = 0


class Supervisor:
    """Starts, watches and stops the workers of ``serve --workers N``."""

    def __init__(self, config: ServerConfig, workers: int, argv: Sequence[str]) -> None:
        self.config = config
        self.argv = list(argv)
        self.workers = [Worker(i) for i in range(1, workers + 1)]
        self.stopping = False
        self.port = config.port
        self.run_dir = Path(tempfile.mkdtemp(prefix="bosbase-pubsub-workers-"))

    def _reserve_port(self) -> socket.socket:
        family, kind, proto, _, address = socket.getaddrinfo(
            self.config.host, self.config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        reserved = socket.socket(family, kind, proto)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind(address)  # never listens: holds the port, takes no connections
        self.port = reserved.getsockname()[1]
        return reserved

    async def _start(self, worker: Worker) -> bool:
        """Start ``worker`` and wait until it listens; ``False`` if it did not."""
        ready_read, ready_write = os.pipe()
        lifeline_read, lifeline_write = os.pipe()
        host = self.config.host
        address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        env = dict(os.environ)
        env[WORKER_ENV] = (
            f"{worker.index}:{len(self.workers)}:{ready_write}:{lifeline_read}:{self.run_dir}"
        )
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bosbase_pubsub.cli", "serve", *self.argv,
                "--http", address, "--workers", "1",
                env=env, pass_fds=(ready_write, lifeline_read),
            )  # fmt: skip
        finally:
            os.close(ready_write)
            os.close(lifeline_read)
        worker.lifeline = lifeline_write
        worker.started_at = time.monotonic()
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)
        loop = asyncio.get_running_loop()
        try:
            ready = await asyncio.wait_for(
                loop.run_in_executor(None, os.read, ready_read, 1), STARTUP_TIMEOUT
            )
        except asyncio.TimeoutError:
            ready = b""
        finally:
            os.close(ready_read)
        return ready == b"1"

    def _ended(self, worker: Worker) -> None:
        if worker.lifeline is not None:
            os.close(worker.lifeline)
            worker.lifeline = None

    async def _watch(self, worker: Worker) -> None:
        """Keep ``worker`` running until the supervisor stops."""
        while not self.stopping:
            assert worker.process is not None
            code = await worker.process.wait()
            self._ended(worker)
            if self.stopping:
                return
            if time.monotonic() - worker.started_at > STABLE_AFTER:
                worker.crashes = 0
            delay = RESTART_DELAYS[min(worker.crashes, len(RESTART_DELAYS) - 1)]
            worker.crashes += 1
            log.error(
                "worker %d (pid %d) exited with code %s; restarting it in %gs",
                worker.index, worker.process.pid, code, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
            if not self.stopping and not await self._start(worker):
                log.error("worker %d did not get ready after a restart", worker.index)

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit code of the whole installation."""
        reserved = self._reserve_port()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        watchers: list[asyncio.Task[None]] = []
        try:
            started = await asyncio.gather(*(self._start(w) for w in self.workers))
            if not all(started):
                log.error("a worker did not start; see its log above")
                return 1
            host = self.config.host
            shown = f"[{host}]" if ":" in host else host
            log.info(
                "serving on http://%s:%d (WebSocket: /api/pubsub) with %d workers",
                shown, self.port, len(self.workers),
            )  # fmt: skip
            watchers = [loop.create_task(self._watch(w)) for w in self.workers]
            await stop.wait()
            log.info("shutting down %d workers", len(self.workers))
            return await self._stop_all()
        finally:
            self.stopping = True
            for task in watchers:
                task.cancel()
            reserved.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    async def _stop_all(self) -> int:
        self.stopping = True
        running = [w for w in self.workers if w.process and w.process.returncode is None]
        for worker in running:
            assert worker.process is not None
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = self.config.shutdown_timeout + 5.0
        codes: list[int] = []
        for worker in running:
            assert worker.process is not None
            try:
                codes.append(await asyncio.wait_for(worker.process.wait(), deadline))
            except asyncio.TimeoutError:
                log.error("worker %d did not stop in time: killed", worker.index)
                worker.process.kill()
                codes.append(await worker.process.wait())
            self._ended(worker)
        log.info("stopped")
        return 0 if all(code == 0 for code in codes) else 1
