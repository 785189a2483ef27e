"""Shared plumbing for the benchmarks: servers as pinned subprocesses, the C load
generator, /proc accounting, tables and result files.

Nothing here imports the server: every server under test is a subprocess, measured
from outside through /proc (CPU: utime+stime of the process and its descendants,
memory: VmRSS), so the figures hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BASELINES = BENCH / "baselines"
LOADGEN_SRC = BENCH / "loadgen" / "wsload.c"
LOADGEN_BIN = BENCH / "loadgen" / "build" / "wsload"
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SUPERUSER_EMAIL = "bench@example.com"
SUPERUSER_PASSWORD = "bench-password-123"  # a throwaway account in a temp data dir

Json = dict[str, Any]


class BenchError(RuntimeError):
    """A benchmark could not run (a server did not start, the load generator failed...)."""


# --------------------------------------------------------------------------- /proc


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (e.g. worker processes of a server)."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its live descendants, from /proc/PID/stat."""
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` and its live descendants: user and kernel seconds."""
    user = system = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` and its live descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def machine_info() -> Json:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    node = shutil.which("node")
    node_version = ""
    if node:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            node_version = subprocess.run(
                [node, "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node_version,
        "taken": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode}; log:\n{tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"server did not listen on {port} within {timeout}s; log:\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def taskset_prefix(cpu: str | None) -> list[str]:
    if not cpu:
        return []
    exe = shutil.which("taskset")
    if not exe:
        raise BenchError("taskset not found (util-linux); pass --server-cpu '' --loadgen-cpu ''")
    return [exe, "-c", cpu]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection in this process meanwhile (collected before and after).

    A client that timestamps deliveries keeps hundreds of thousands of objects;
    a full collection of them stalls it for 10 to 20 ms, which it would then
    report as the servers' latency. Its records hold no reference cycles.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def median(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def ensure_loadgen() -> Path:
    """Compile the C load generator if it is missing or older than its source."""
    if LOADGEN_BIN.exists() and LOADGEN_BIN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return LOADGEN_BIN
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise BenchError("a C compiler is needed for bench/loadgen (apt-get install gcc)")
    LOADGEN_BIN.parent.mkdir(parents=True, exist_ok=True)
    cmd = [cc, "-O2", "-Wall", "-o", str(LOADGEN_BIN), str(LOADGEN_SRC)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise BenchError(f"compiling the load generator failed:\n{res.stderr}")
    return LOADGEN_BIN


NODE_BASELINE_PACKAGES = ("ws", "socket.io", "@socket.io/postgres-adapter", "pg")


def ensure_node_modules() -> None:
    modules = BASELINES / "node_modules"
    if all((modules / name).exists() for name in NODE_BASELINE_PACKAGES):
        return
    npm = shutil.which("npm")
    if not npm:
        raise BenchError("npm is needed for the Node baselines (bench/baselines)")
    print("installing the Node baselines (npm ci in bench/baselines)...", file=sys.stderr)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BASELINES, check=True, timeout=300)


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class ServerKind:
    name: str
    proto: str
    """``env`` (BosBase JSON envelopes) or ``sio`` (Engine.IO 4 / Socket.IO 4)."""
    description: str
    needs_token: bool = False
    needs_node: bool = False
    needs_db: bool = False
    """Needs ``ServerOptions.db_url``, a PostgreSQL database of its own."""
    pythonpath: str = ""
    """A bosbase variant: ``bosbase-pubsub`` run with this source folder first on
    ``PYTHONPATH`` (e.g. another commit's ``src``), to measure a change before/after in
    the same invocation."""

    @property
    def is_bosbase(self) -> bool:
        return self.name == "bosbase" or bool(self.pythonpath)


SERVER_KINDS: dict[str, ServerKind] = {
    k.name: k
    for k in (
        ServerKind("bosbase", "env", "bosbase-pubsub (this project)", needs_token=True),
        ServerKind("ws", "env", "bare Node.js ws fan-out (no auth, no store)", needs_node=True),
        ServerKind("socketio-node", "sio", "Socket.IO 4 on Node, websocket only", needs_node=True),
        ServerKind(
            "socketio-pg",
            "sio",
            "Socket.IO 4 on Node, nodes joined by @socket.io/postgres-adapter (no storage)",
            needs_node=True,
            needs_db=True,
        ),
        ServerKind("socketio-py", "sio", "python-socketio on aiohttp + uvloop, websocket only"),
        ServerKind(
            "pg-group-commit",
            "env",
            "acked publishes only: asyncpg group commit, one multi-row insert per batch"
            " (the issue's reference design)",
            needs_db=True,
        ),
    )
}
BASELINE = "ws"


def bosbase_variant(name: str, src: Path) -> ServerKind:
    """``bosbase`` with the ``bosbase_pubsub`` package imported from ``src`` instead."""
    if not (src / "bosbase_pubsub" / "__init__.py").exists():
        raise SystemExit(f"{src} holds no bosbase_pubsub package (give a checkout's src folder)")
    return ServerKind(
        name, "env", f"bosbase-pubsub, package from {src}", needs_token=True, pythonpath=str(src)
    )


def parse_servers(text: str) -> list[ServerKind]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    choices = sorted(k.name for k in SERVER_KINDS.values() if not k.needs_db)
    unknown = [n for n in names if n not in choices]
    if unknown:
        # pg-group-commit and socketio-pg need a database: bench.cluster runs them.
        raise SystemExit(f"unknown server(s) {unknown}; choose from {choices}")
    return [SERVER_KINDS[n] for n in names]


def bosbase_exe() -> list[str]:
    exe = Path(sys.executable).parent / "bosbase-pubsub"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("bosbase-pubsub")
    if found:
        return [found]
    raise BenchError("bosbase-pubsub is not installed in this environment (run via `uv run`)")


@dataclass
class ServerOptions:
    cpu: str | None = "0"
    extra_args: list[str] = field(default_factory=list)
    """Extra command-line arguments for the bosbase server (none by default: it is
    measured as ``serve`` runs out of the box; the load generator spreads its
    connections over enough loopback addresses for the per-address limit)."""
    db_url: str | None = None
    """The PostgreSQL database of a server kind that ``needs_db`` (it creates its table)."""
    start_timeout: float = 60.0


class Server:
    """One server under test, as a subprocess pinned to ``opts.cpu``, on a free port,
    with a fresh temporary data folder. Use as a context manager."""

    def __init__(self, kind: ServerKind, opts: ServerOptions, workdir: Path) -> None:
        self.kind = kind
        self.opts = opts
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{kind.name}-", dir=workdir))
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None

    def argv(self) -> list[str]:
        port = str(self.port)
        if self.kind.is_bosbase:
            return [
                *bosbase_exe(),
                "serve",
                "--http",
                f"127.0.0.1:{port}",
                "--dir",
                str(self.dir / "pb_data"),
                *self.opts.extra_args,
            ]
        if self.kind.name == "ws":
            return [_node(), str(BASELINES / "ws_server.js"), "--port", port]
        if self.kind.name == "socketio-node":
            return [_node(), str(BASELINES / "socketio_server.js"), "--port", port]
        if self.kind.name == "socketio-pg":
            if not self.opts.db_url:
                raise BenchError("socketio-pg needs a PostgreSQL database (ServerOptions.db_url)")
            script = str(BASELINES / "socketio_server.js")
            return [_node(), script, "--port", port, "--pg", self.opts.db_url]
        if self.kind.name == "socketio-py":
            return [sys.executable, str(BASELINES / "socketio_py.py"), "--port", port]
        if self.kind.name == "pg-group-commit":
            if not self.opts.db_url:
                raise BenchError(
                    "pg-group-commit needs a PostgreSQL database (ServerOptions.db_url)"
                )
            script = str(BASELINES / "pg_group_commit.py")
            return [sys.executable, script, "--port", port, "--db", self.opts.db_url]
        raise BenchError(f"unknown server {self.kind.name}")

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        env = None
        if self.kind.pythonpath:
            env = {**os.environ, "PYTHONPATH": self.kind.pythonpath}
        if self.kind.is_bosbase:
            data = str(self.dir / "pb_data")
            cmd = [*bosbase_exe(), "superuser", "upsert", SUPERUSER_EMAIL, SUPERUSER_PASSWORD]
            res = subprocess.run(
                [*cmd, "--dir", data],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=self.dir,
                env=env,
            )
            if res.returncode != 0:
                raise BenchError(f"`{' '.join(cmd)}` failed: {res.stderr or res.stdout}")
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                [*taskset_prefix(self.opts.cpu), *self.argv()],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
                start_new_session=True,
            )
        _LIVE.add(self.proc)
        wait_port(self.port, self.proc, self.opts.start_timeout, self.log)
        if self.kind.needs_token:
            self.token = self._login()

    def _login(self) -> str:
        url = f"http://127.0.0.1:{self.port}/api/collections/_superusers/auth-with-password"
        body = json.dumps({"identity": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD}).encode()
        req = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                token = json.loads(resp.read())["token"]
        except Exception as e:
            raise BenchError(f"superuser sign-in failed: {e}\n{tail(self.log)}") from e
        if not isinstance(token, str) or not token:
            raise BenchError("superuser sign-in returned no token")
        return token

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _terminate(proc)
            _LIVE.discard(proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def _node() -> str:
    node = shutil.which("node")
    if not node:
        raise BenchError("node is needed for the Node baselines")
    return node


# Every subprocess we started, so that they are ended on exit, Ctrl-C or SIGTERM.
_LIVE: set[subprocess.Popen[Any]] = set()


def _terminate(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """End a process we started (by its pid; its own session/process group too, since
    ``taskset`` execs and the servers run in a session of their own)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)


def cleanup_all() -> None:
    for proc in list(_LIVE):
        _terminate(proc, grace=2.0)
        _LIVE.discard(proc)


@contextlib.contextmanager
def managed() -> Iterator[None]:
    """Run a benchmark so that every subprocess is ended on exit, error, Ctrl-C or SIGTERM."""

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        cleanup_all()
        signal.signal(signal.SIGTERM, old)


# --------------------------------------------------------------------------- load generator


@dataclass
class LoadgenOptions:
    cpu: str | None = "1"
    payload: int = 64
    probes: int = 10
    bulk_interval_ms: int = 50
    setup_timeout: float = 120.0


PER_ADDRESS = 8000
"""Connections per loopback source address: under ``serve``'s default per-address limit."""


def source_addresses(connections: int) -> int:
    """Loopback source addresses (127.0.0.1, .2, ...) for ``connections`` connections."""
    return max(1, -(-connections // PER_ADDRESS))


class LoadGen:
    """The C load generator as a subprocess, driven line by line (see wsload.c)."""

    def __init__(
        self,
        server: Server,
        subs: int,
        pubs: int,
        opts: LoadgenOptions,
        on_line: Callable[[Json], None] | None = None,
    ) -> None:
        self.server = server
        argv = [
            *taskset_prefix(opts.cpu),
            str(ensure_loadgen()),
            "--port",
            str(server.port),
            "--proto",
            server.kind.proto,
            "--subs",
            str(subs),
            "--pubs",
            str(pubs),
            "--payload",
            str(opts.payload),
            "--probes",
            str(opts.probes),
            "--bulk-interval-ms",
            str(opts.bulk_interval_ms),
            "--setup-timeout",
            str(opts.setup_timeout),
            "--max-lifetime",
            "7200",
            "--src-addrs",
            str(source_addresses(subs + pubs)),
        ]
        if server.token:
            argv += ["--token", server.token]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        _LIVE.add(self.proc)
        self.lines: queue.Queue[Json | None] = queue.Queue()
        self.on_line = on_line
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: TextIO | None) -> None:
        assert stream is not None
        for raw in stream:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                self.lines.put({"event": "error", "message": f"bad line {raw!r}"})
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def expect(self, event: str, timeout: float) -> Json:
        msg = self.poll(event, timeout)
        if msg is None:
            raise BenchError(f"load generator: no {event!r} within {timeout:.0f}s")
        return msg

    def poll(self, event: str, timeout: float) -> Json | None:
        """The next ``event`` line within ``timeout`` seconds, else None (other lines skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                if not self.server.alive():
                    raise BenchError(
                        f"{self.server.kind.name} server died; log:\n{tail(self.server.log)}"
                    ) from None
                continue
            if msg is None:
                raise BenchError(f"load generator exited ({self.proc.poll()}) before {event!r}")
            if msg.get("event") == "error":
                raise BenchError(f"load generator: {msg.get('message')}")
            if msg.get("event") == event:
                return msg

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send("quit")
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            _terminate(self.proc)
        _LIVE.discard(self.proc)

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Snapshot:
    wall: float
    server_cpu: float
    loadgen_cpu: float
    server_core_busy: float | None = None
    """Busy seconds of the server's core (when pinned to one), from /proc/stat."""
    server_kernel_cpu: float = 0.0
    """The server's system time (stime): its share of ``server_cpu`` spent in the kernel."""

    @staticmethod
    def take(server: Server, lg: LoadGen) -> Snapshot:
        core = server.opts.cpu
        busy = core_busy_seconds(int(core)) if core and core.isdigit() else None
        user, system = cpu_split(server.pid)
        return Snapshot(time.monotonic(), user + system, lg.cpu(), busy, system)


def core_busy_seconds(cpu: int) -> float | None:
    """Non-idle time of one CPU since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{cpu} "):
                    v = [int(x) for x in line.split()[1:]]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    guest = sum(v[8:10]) if len(v) > 9 else 0  # already inside user/nice
                    return (sum(v) - idle - guest) / CLK_TCK
    except OSError:
        pass
    return None


def other_load(a: Snapshot, b: Snapshot) -> float | None:
    """Share of the server's core used by anything but the server between two snapshots:
    other processes that ran there (noise) or interrupts. The CPU-per-delivery figures do
    not depend on it; throughput at saturation does."""
    if a.server_core_busy is None or b.server_core_busy is None or b.wall <= a.wall:
        return None
    other = (b.server_core_busy - a.server_core_busy) - (b.server_cpu - a.server_cpu)
    return max(0.0, other / (b.wall - a.wall))


# --------------------------------------------------------------------------- output


def add_common_args(p: argparse.ArgumentParser, servers: str) -> None:
    choices = sorted(k.name for k in SERVER_KINDS.values() if not k.needs_db)
    p.add_argument("--servers", default=servers, help=f"comma list of {choices}")
    p.add_argument("--repeat", type=int, default=3, help="repetitions; the table shows medians")
    p.add_argument("--server-cpu", default="0", help="taskset CPU list for servers ('' = none)")
    p.add_argument("--loadgen-cpu", default="1", help="taskset CPU list for the load generator")
    p.add_argument("--payload", type=int, default=64, help="padding bytes in each message's data")
    p.add_argument(
        "--bosbase-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `bosbase-pubsub serve` (repeatable, e.g. --bosbase-arg=--x=1)",
    )
    p.add_argument("--out", type=Path, default=None, help="result JSON (default bench/results/)")


def server_options(args: argparse.Namespace) -> ServerOptions:
    return ServerOptions(cpu=args.server_cpu or None, extra_args=list(args.bosbase_arg))


def loadgen_options(args: argparse.Namespace) -> LoadgenOptions:
    return LoadgenOptions(
        cpu=args.loadgen_cpu or None,
        payload=args.payload,
        probes=getattr(args, "probes", 10),
        bulk_interval_ms=getattr(args, "bulk_interval_ms", 50),
    )


def prepare(kinds: Sequence[ServerKind]) -> None:
    ensure_loadgen()
    if any(k.needs_node for k in kinds):
        ensure_node_modules()


def write_result(kind: str, payload: Json, out: Path | None) -> Path:
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS / f"{kind}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def run_servers(
    kinds: Sequence[ServerKind],
    args: argparse.Namespace,
    prefix: str,
    run_once: Callable[[ServerKind, argparse.Namespace, Path], Any],
    summarize: Callable[[list[Any]], Json],
) -> dict[str, Json]:
    """Run ``run_once`` ``args.repeat`` times per server; each entry gets its runs and median.

    The repetitions are interleaved (run 1 of every server, then run 2...), so that a
    busy spell of a shared machine spoils one run of each rather than every run of one.
    A server whose run fails gets ``error`` instead of ``median`` (and the others go on).
    """
    runs: dict[str, list[Any]] = {kind.name: [] for kind in kinds}
    errors: dict[str, str] = {}
    with managed(), tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        prepare(kinds)
        for i in range(args.repeat):
            for kind in kinds:
                if kind.name in errors:
                    continue
                print(f"[{kind.name}] run {i + 1}/{args.repeat}", file=sys.stderr)
                try:
                    runs[kind.name].append(run_once(kind, args, Path(tmp)))
                except BenchError as e:
                    errors[kind.name] = str(e)
                    print(f"[{kind.name}] failed: {e}", file=sys.stderr)
    results: dict[str, Json] = {}
    for kind in kinds:
        entry: dict[str, Any] = {"description": kind.description, "runs": runs[kind.name]}
        if runs[kind.name] and kind.name not in errors:
            entry["median"] = summarize(runs[kind.name])
        if kind.name in errors:
            entry["error"] = errors[kind.name]
        results[kind.name] = entry
    return results


def finish(kind: str, args: argparse.Namespace, results: dict[str, Json]) -> int:
    """Write the result file of a baseline-compared benchmark; exit status 1 if a server failed."""
    out = write_result(
        kind,
        {
            "benchmark": kind,
            "machine": machine_info(),
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "baseline": BASELINE,
            "servers": results,
        },
        args.out,
    )
    print(f"\nresults: {out}")
    return 0 if all("median" in r for r in results.values()) else 1


def run_main(main: Callable[[], int]) -> None:
    """Run a benchmark's ``main`` as a script: its status, or 130 after Ctrl-C."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers and load generators stopped", file=sys.stderr)
        sys.exit(130)


def fmt(v: float | None, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def ratio(v: float | None, base: float | None) -> str:
    if v is None or base is None or base == 0:
        return "-"
    return f"{v / base:.2f}x"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    cells = [[*r[: len(headers)], *[""] * (len(headers) - len(r))] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(cols: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        )

    head = line(headers)
    print(head)
    print("-" * len(head))
    for r in cells:
        print(line(r))
