"""Fixtures for the auth tests: a real store, and the auth routes on a loopback port.

``auth_server`` runs a minimal aiohttp application (the auth routes plus two
``/whoami`` routes that report ``identify()``) on 127.0.0.1 with an
``Authenticator`` over a real store: every test runs on a ``SqliteStore`` in
``tmp_path`` and on a ``PostgresStore`` on a fresh database. bcrypt uses its
lowest cost so that the suite stays fast; the cost is not what is tested.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bosbase_pubsub.server.auth import (
    AUTHENTICATOR_KEY,
    Authenticator,
    PasswordHasher,
    add_routes,
    identify,
)
from bosbase_pubsub.server.config import AuthSettings
from bosbase_pubsub.server.errors import json_response
from bosbase_pubsub.server.storage import Store
from bosbase_pubsub.server.storage.postgres import PostgresStore
from bosbase_pubsub.server.storage.sqlite import SqliteStore

from ...conftest import BACKENDS

FAST_ROUNDS = 4


@pytest.fixture(params=BACKENDS)
async def store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        store: Store = SqliteStore(tmp_path / "data.db")
    else:
        store = PostgresStore(request.getfixturevalue("pg_database"))
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(rounds=FAST_ROUNDS)


@pytest.fixture
def auth_settings() -> AuthSettings:
    return AuthSettings()


@pytest.fixture
async def authenticator(
    store: Store, auth_settings: AuthSettings, hasher: PasswordHasher
) -> Authenticator:
    auth = Authenticator(store.accounts, auth_settings, hasher=hasher)
    await auth.start()
    return auth


def identity_json(identity: Any) -> Any:
    return None if identity is None else dataclasses.asdict(identity)


async def whoami(request: web.Request) -> web.Response:
    return json_response({"identity": identity_json(await identify(request))})


async def whoami_header_only(request: web.Request) -> web.Response:
    identity = await identify(request, allow_query_and_cookie=False)
    return json_response({"identity": identity_json(identity)})


async def whoami_identify_header(request: web.Request) -> web.Response:
    identity = await request.app[AUTHENTICATOR_KEY].identify_header(request)
    return json_response({"identity": identity_json(identity)})


@dataclasses.dataclass
class AuthServer:
    """The running test application and a client session for it."""

    url: str
    authenticator: Authenticator
    session: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """Send one request; return the status, the decoded JSON body and the response."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = token
        async with self.session.request(
            method, self.url + path, json=json, headers=sent, **kwargs
        ) as response:
            body = await response.json(content_type=None)
            return response.status, body, response

    async def sign_up(self, email: str, password: str, **fields: Any) -> Any:
        status, body, _ = await self.call(
            "POST",
            "/api/collections/users/records",
            json={"email": email, "password": password, "passwordConfirm": password, **fields},
        )
        assert status == 200, body
        return body

    async def sign_in(self, email: str, password: str, collection: str = "users") -> Any:
        status, body, _ = await self.call(
            "POST",
            f"/api/collections/{collection}/auth-with-password",
            json={"identity": email, "password": password},
        )
        assert status == 200, body
        return body


ServeAuth = Callable[..., Awaitable[AuthServer]]


@pytest.fixture
async def serve_auth(store: Store, hasher: PasswordHasher) -> AsyncIterator[ServeAuth]:
    """Start the test application with the given ``AuthSettings`` fields; stopped after."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def serve(**settings: Any) -> AuthServer:
        auth = Authenticator(store.accounts, AuthSettings(**settings), hasher=hasher)
        await auth.start()
        app = web.Application()
        add_routes(app, auth)
        app.router.add_get("/whoami", whoami)
        app.router.add_get("/whoami/header-only", whoami_header_only)
        app.router.add_get("/whoami/identify-header", whoami_identify_header)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        assert runner.addresses, "the site did not bind"
        host, port = runner.addresses[0][:2]
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        sessions.append(session)
        return AuthServer(url=f"http://{host}:{port}", authenticator=auth, session=session)

    yield serve
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def auth_server(serve_auth: ServeAuth) -> AuthServer:
    """The test application with default settings (sign-up on)."""
    return await serve_auth()
