"""Shared fixtures: real server processes on loopback, and tokens to publish with.

Servers run on SQLite unless a test module opts into both backends with
``pytestmark = BOTH_BACKENDS`` (or a test asks for ``backend`` itself): then
each of its tests runs once on SQLite and once on a fresh PostgreSQL
database (see ``tests/postgres.py`` for where that database comes from).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import nats as test_nats
from .postgres import ENV_ADMIN_URL, PgServer, ThrowawayCluster, find_bin_dir
from .servers import ServerProcess, cli

BACKENDS = ("sqlite", "postgres")
BOTH_BACKENDS = pytest.mark.parametrize("backend", BACKENDS, indirect=True)
"""Mark a module or test to run on each backend (``pytestmark = BOTH_BACKENDS``)."""
STORE_BACKENDS = (*BACKENDS, "nats")
"""Every store: the storage contract tests run on each (NATS JetStream included)."""

SUPERUSER_EMAIL = "admin@example.com"
SUPERUSER_PASSWORD = "admin-password-1"


def http_sign_in(base_url: str, email: str, password: str, collection: str = "_superusers") -> str:
    """Sign in over HTTP (blocking, for synchronous fixtures) and return the token."""
    request = urllib.request.Request(
        f"{base_url}/api/collections/{collection}/auth-with-password",
        data=json.dumps({"identity": email, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        token: str = json.load(response)["token"]
        return token


def make_superuser(data_dir: Path, db_url: str | None = None) -> None:
    database = ["--db", db_url] if db_url else []
    result = cli(
        "superuser",
        "upsert",
        SUPERUSER_EMAIL,
        SUPERUSER_PASSWORD,
        "--dir",
        str(data_dir),
        *database,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server the tests create their databases on.

    ``BOSBASE_PUBSUB_TEST_PG`` when set; else a throw-away cluster for the
    session (skipped when PostgreSQL is not installed).
    """
    admin_url = os.environ.get(ENV_ADMIN_URL)
    if admin_url:
        server = PgServer(admin_url)
        yield server
        server.drop_all()
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL: set {ENV_ADMIN_URL} or install the server binaries")
    cluster = ThrowawayCluster(bin_dir).start()
    try:
        yield PgServer(cluster.admin_url)
    finally:
        cluster.destroy()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(scope="session")
def nats_server() -> str:
    """The URL of the NATS server the tests make their streams on (skipped if unreachable).

    ``BOSBASE_PUBSUB_TEST_NATS``, else ``nats://127.0.0.1:4222``.
    """
    url = test_nats.server_url()
    reason = test_nats.unreachable_reason(url)
    if reason is not None:
        pytest.skip(reason)
    return url


@pytest.fixture
def nats_stream(nats_server: str) -> Iterator[str]:
    """A store URL with a stream (and KV buckets) of its own, deleted after the test."""
    url = test_nats.stream_url(nats_server)
    yield url
    test_nats.drop_stream(url)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite``, ``postgres`` or ``nats``: the store the test's servers use (SQLite unless
    parametrized)."""
    return getattr(request, "param", "sqlite")


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> Iterator[StartServer]:
    """Start servers with extra ``serve`` flags; each is stopped after the test.

    ``start_server("--publish-rate", "5")`` returns a running ``ServerProcess``
    whose store has a superuser (``SUPERUSER_EMAIL``) ready to sign in. Its
    store is new, unless ``data_dir`` names the folder of a server started
    before (a restart: same store). On the ``postgres`` backend each new
    folder gets a new database; ``db_url`` puts a node on a given database
    instead (a cluster: several folders, one database).
    """
    started: list[ServerProcess] = []
    databases: dict[Path, str] = {}

    def start(*args: str, data_dir: Path | None = None, db_url: str | None = None) -> ServerProcess:
        folder = data_dir or tmp_path / f"pb_data_{len(started)}"
        if db_url is None and backend in ("postgres", "nats"):
            db_url = databases.get(folder)
            if db_url is None:
                if backend == "postgres":
                    db_url = request.getfixturevalue("pg_server").create_database()
                else:
                    db_url = test_nats.stream_url(request.getfixturevalue("nats_server"))
                make_superuser(folder, db_url)
        elif db_url is None and not (folder / "data.db").exists():
            make_superuser(folder)
        if db_url is not None:
            databases[folder] = db_url
        server = ServerProcess(folder, args, db_url=db_url).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    if backend == "postgres":
        pg: PgServer = request.getfixturevalue("pg_server")
        for url in set(databases.values()):
            if url.rsplit("/", 1)[-1].startswith(pg.prefix):
                pg.drop_database(url)
    for url in set(databases.values()):
        if url.startswith("nats:") and "stream=t_bbps_" in url:
            test_nats.drop_stream(url)


@pytest.fixture(scope="session")
def _shared_servers() -> Iterator[dict[str, ServerProcess]]:
    servers: dict[str, ServerProcess] = {}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def shared_server(
    backend: str,
    _shared_servers: dict[str, ServerProcess],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> ServerProcess:
    """One server per backend for the tests that need no special flags (never restarted)."""
    server = _shared_servers.get(backend)
    if server is None:
        folder = tmp_path_factory.mktemp(f"shared-{backend}") / "pb_data"
        db_url = None
        if backend == "postgres":
            db_url = request.getfixturevalue("pg_server").create_database()
        make_superuser(folder, db_url)
        server = _shared_servers[backend] = ServerProcess(folder, db_url=db_url).start()
    return server


@pytest.fixture(scope="session")
def _superuser_tokens() -> dict[str, str]:
    return {}


@pytest.fixture
def superuser_token(shared_server: ServerProcess, _superuser_tokens: dict[str, str]) -> str:
    token = _superuser_tokens.get(shared_server.url)
    if token is None:
        token = _superuser_tokens[shared_server.url] = http_sign_in(
            shared_server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD
        )
    return token
