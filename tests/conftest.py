"""Shared fixtures: real server processes on loopback, and tokens to publish with."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .servers import ServerProcess, cli

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


def make_superuser(data_dir: Path) -> None:
    result = cli("superuser", "upsert", SUPERUSER_EMAIL, SUPERUSER_PASSWORD, "--dir", str(data_dir))
    assert result.returncode == 0, result.stderr


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start servers with extra ``serve`` flags; each is stopped after the test.

    ``start_server("--publish-rate", "5")`` returns a running ``ServerProcess``
    whose data folder has a superuser (``SUPERUSER_EMAIL``) ready to sign in.
    """
    started: list[ServerProcess] = []

    def start(*args: str, data_dir: Path | None = None) -> ServerProcess:
        folder = data_dir or tmp_path / f"pb_data_{len(started)}"
        if not (folder / "data.db").exists():
            make_superuser(folder)
        server = ServerProcess(folder, args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests that need no special flags (it is never restarted)."""
    folder = tmp_path_factory.mktemp("shared") / "pb_data"
    make_superuser(folder)
    server = ServerProcess(folder).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def superuser_token(shared_server: ServerProcess) -> str:
    return http_sign_in(shared_server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
