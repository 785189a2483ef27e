"""Take the console's screenshots for the docs: docs/images/console-{overview,inspector}.png.

Starts a throw-away server on a free loopback port (SQLite in a temporary
folder), gives it a little bounded traffic (a few subscribers, one publisher,
about 35 seconds), and photographs the console in headless Chromium (the
system's ``chromium``). Run it with ``./scripts/screenshots``.
"""

from __future__ import annotations

import math
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

from bosbase_pubsub import AuthStore, BosBase

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
EMAIL, PASSWORD = "admin@example.com", "a-long-password"
TOPICS = ("chat/general", "chat/random", "sensors/temperature", "orders/created")
TRAFFIC_SECONDS = 35.0


def start_server(folder: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "bosbase_pubsub.cli"]
    subprocess.run(
        [*command, "superuser", "upsert", EMAIL, PASSWORD, "--dir", str(folder)],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [*command, "serve", "--http", "127.0.0.1:0", "--dir", str(folder)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    for line in server.stderr:
        found = re.search(r"serving on (http://[^ ]+:\d+)", line)
        if found:
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep draining
            return server, found.group(1)
    raise RuntimeError("the server did not start")


def traffic(url: str, token: str, stop: threading.Event) -> None:
    """One publisher, at a rate that rises and falls, to every topic; bounded in time."""
    with BosBase(url, auth_store=AuthStore(token)) as publisher:
        started = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() - started < TRAFFIC_SECONDS:
            elapsed = time.monotonic() - started
            rate = 30 + 25 * math.sin(elapsed / 2)
            topic = TOPICS[n % 3] if n % 7 else TOPICS[3]
            publisher.pubsub.publish(
                topic, {"n": n, "text": f"message {n}", "celsius": round(20 + 3 * math.sin(n), 1)}
            )
            n += 1
            time.sleep(1 / rate)


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs chromium on PATH (apt-get install chromium)")
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        server, url = start_server(Path(folder) / "pb_data")
        subscribers: list[BosBase] = []
        stop = threading.Event()
        try:
            token = httpx.post(
                f"{url}/api/collections/_superusers/auth-with-password",
                json={"identity": EMAIL, "password": PASSWORD},
            ).json()["token"]
            for name in ("ada", "grace", "linus"):
                httpx.post(
                    f"{url}/api/admin/users",
                    json={"email": f"{name}@example.com", "password": "a-long-password"},
                    headers={"Authorization": token},
                ).raise_for_status()
            for n in range(7):
                client = BosBase(url, auth_store=AuthStore(token if n % 3 == 0 else ""))
                for topic in TOPICS[: 1 + n % 4]:
                    client.pubsub.subscribe(topic, lambda message: None)
                subscribers.append(client)
            publisher = threading.Thread(target=traffic, args=(url, token, stop))
            publisher.start()

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium)
                page = browser.new_page(viewport={"width": 1280, "height": 820})
                page.goto(f"{url}/_/")
                page.fill("#signin-email", EMAIL)
                page.fill("#signin-password", PASSWORD)
                page.click("#signin-form button[type=submit]")
                page.wait_for_selector("#live.on")
                time.sleep(TRAFFIC_SECONDS - 3)  # the charts fill up
                page.screenshot(path=str(IMAGES / "console-overview.png"))
                page.click("nav a[data-view=messages]")
                page.fill("#search-topic", TOPICS[0])
                page.click("#search-form button[type=submit]")
                page.locator("#messages tbody tr").nth(2).click()
                # (not wait_for_function: the console's CSP forbids evaluating strings)
                expect(page.locator("#message-json")).to_contain_text('"position"')
                page.screenshot(path=str(IMAGES / "console-inspector.png"))
                browser.close()
        finally:
            stop.set()
            for client in subscribers:
                client.close()
            server.send_signal(signal.SIGTERM)
            server.wait(20)
    print(f"wrote {IMAGES / 'console-overview.png'} and {IMAGES / 'console-inspector.png'}")


if __name__ == "__main__":
    main()
