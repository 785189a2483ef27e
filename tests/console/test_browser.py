"""The operator console in a real headless Chromium, against a real server process.

One server (the session's shared one) and one browser for the module; each
test gets a fresh browser context (no shared session storage). Chromium is
the system's (``chromium`` on PATH, which ``./scripts/test`` installs when it
can): the tests skip, saying so, only when there is none. A page that logs an
error (a Content-Security-Policy violation included) fails its test.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from websockets.sync.client import connect

from bosbase_pubsub import AuthStore, BosBase

from ..client.conftest import Inbox
from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD
from ..servers import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip(
            "no chromium on PATH: install it (apt-get install chromium) for the console tests"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    # 401/403 answers are logged by Chromium as failed loads: those are expected.
    assert [error for error in errors if "status of 40" not in error] == []


def sign_in(page: Page, server: ServerProcess, email: str, password: str) -> None:
    page.goto(server.url + "/_/")
    page.fill("#signin-email", email)
    page.fill("#signin-password", password)
    page.click("#signin-form button[type=submit]")


def signed_in(page: Page, server: ServerProcess) -> Page:
    sign_in(page, server, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#live")).to_have_class("live on")  # the overview stream is open
    return page


def settled_count(page: Page, selector: str) -> int:
    """The number shown at ``selector`` once two overview events agree on it.

    The shared server may still be closing the sockets of earlier tests.
    """
    seen = None
    for _ in range(10):
        count = int(page.locator(selector).inner_text().replace(",", ""))
        if count == seen:
            return count
        seen = count
        page.wait_for_timeout(1100)  # the overview comes every second
    raise AssertionError(f"{selector} never settled")


def admin(server: ServerProcess, token: str, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(
        method, server.url + path, json=body, headers={"Authorization": token}, timeout=10
    )
    assert response.is_success, response.text
    return response.json()


def test_sign_in_then_see_a_connection_appear(page: Page, shared_server: ServerProcess) -> None:
    signed_in(page, shared_server)
    anonymous = page.locator("#conn-anon")
    expect(anonymous).not_to_have_text("–")
    before = settled_count(page, "#conn-anon")
    with connect(shared_server.ws_url) as socket:
        assert json.loads(socket.recv(timeout=5))["type"] == "ready"
        expect(anonymous).to_have_text(str(before + 1))  # live: no reload
    expect(anonymous).to_have_text(str(before))
    expect(page.locator("#nodes tbody tr")).to_have_count(1)


def test_a_published_message_shows_in_the_inspector_and_live(
    page: Page, shared_server: ServerProcess, superuser_token: str
) -> None:
    topic = f"inspect/{uuid.uuid4().hex[:8]}"
    ack = admin(
        shared_server,
        superuser_token,
        "POST",
        "/api/pubsub/publish",
        {"topic": topic, "data": {"n": 1}},
    )
    signed_in(page, shared_server)
    page.click("nav a[data-view=messages]")
    page.fill("#search-topic", topic)
    page.click("#search-form button[type=submit]")
    rows = page.locator("#messages tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td.data")).to_have_text('{"n":1}')
    rows.first.click()
    expect(page.locator("#message-json")).to_contain_text(ack["id"])

    page.check("#follow")
    expect(page.locator("#follow-state")).to_have_text(f"following {topic}")
    admin(
        shared_server,
        superuser_token,
        "POST",
        "/api/pubsub/publish",
        {"topic": topic, "data": {"n": 2}},
    )
    expect(rows).to_have_count(2)
    expect(rows.first.locator("td.data")).to_have_text('{"n":2}')


def test_publish_from_the_form_reaches_a_subscribed_sdk_client(
    page: Page, shared_server: ServerProcess
) -> None:
    topic = f"form/{uuid.uuid4().hex[:8]}"
    inbox = Inbox()
    with BosBase(shared_server.url, auth_store=AuthStore()) as client:
        client.pubsub.subscribe(topic, inbox)
        signed_in(page, shared_server)
        page.click("nav a[data-view=publish]")
        page.fill("#publish-topic", topic)
        page.fill("#publish-data", '{"from": "the console"}')
        page.click("#publish-form button[type=submit]")
        expect(page.locator("#publish-result")).to_contain_text('"position"')
        [message] = inbox.wait_for(1)
    assert message["data"] == {"from": "the console"}
    assert message["topic"] == topic


def test_a_non_superuser_is_refused(
    page: Page, shared_server: ServerProcess, superuser_token: str
) -> None:
    email = f"user-{uuid.uuid4().hex[:8]}@example.com"
    admin(
        shared_server,
        superuser_token,
        "POST",
        "/api/admin/users",
        {"email": email, "password": "pw-12345678"},
    )
    # The console signs in to _superusers: a user's credentials do not get in.
    sign_in(page, shared_server, email, "pw-12345678")
    expect(page.locator("#signin-error")).to_have_text("Failed to authenticate.")
    expect(page.locator("#app")).to_be_hidden()
    # Nor does a user's token, however it got into the page.
    token = httpx.post(
        f"{shared_server.url}/api/collections/users/auth-with-password",
        json={"identity": email, "password": "pw-12345678"},
    ).json()["token"]
    page.evaluate("token => sessionStorage.setItem('bosbase-pubsub.console.token', token)", token)
    page.reload()
    expect(page.locator("#signin-error")).to_have_text("Only superusers can perform this action.")
    expect(page.locator("#app")).to_be_hidden()
