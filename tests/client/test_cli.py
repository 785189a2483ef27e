"""``bosbase-pubsub sub`` and ``pub`` as a user runs them: real processes, real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD
from ..servers import ServerProcess
from .conftest import closed_port


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bosbase_pubsub.cli", *args]


def environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOSBASE_PUBSUB_")}
    env.update(variables)
    return env


def run(*args: str, stdin: str = "", **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(**variables),
        check=False,
    )


def test_sub_prints_json_lines_and_pub_prints_acks(
    shared_server: ServerProcess, topic: str
) -> None:
    subscriber = subprocess.Popen(
        command("sub", topic, f"{topic}/other", "--count", "4", "--url", shared_server.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        assert subscriber.stderr is not None
        # The subscriber says so on stderr once subscribed (stdout is only messages).
        assert "subscribed to" in subscriber.stderr.readline()
        login = {"BOSBASE_PUBSUB_URL": shared_server.url}
        login |= {"BOSBASE_PUBSUB_EMAIL": SUPERUSER_EMAIL}
        login |= {"BOSBASE_PUBSUB_PASSWORD": SUPERUSER_PASSWORD}
        one = run("pub", topic, '{"text": "hi"}', **login)
        assert one.returncode == 0, one.stderr
        [ack] = [json.loads(line) for line in one.stdout.splitlines()]
        assert set(ack) == {"id", "topic", "created", "position"}
        many = run(
            "pub",
            f"{topic}/other",
            stdin='1\n\n"two"\n[3, 123456789012345678901234567890]\n',
            **login,
        )
        assert many.returncode == 0, many.stderr
        assert len(many.stdout.splitlines()) == 3
        out, _ = subscriber.communicate(timeout=20)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
    assert subscriber.returncode == 0
    messages: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    assert messages[0] == {**ack, "data": {"text": "hi"}}
    assert [m["data"] for m in messages[1:]] == [1, "two", [3, 123456789012345678901234567890]]


def test_pub_with_a_token_and_the_users_fallback(shared_server: ServerProcess, topic: str) -> None:
    token = run(
        "pub", topic, "1", "--url", shared_server.url,
        "--email", SUPERUSER_EMAIL, "--password", SUPERUSER_PASSWORD, "--collection", "_superusers",
    )  # fmt: skip
    assert token.returncode == 0, token.stderr
    from ..conftest import http_sign_in

    value = http_sign_in(shared_server.url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    ok = run("pub", topic, "2", BOSBASE_PUBSUB_URL=shared_server.url, BOSBASE_PUBSUB_TOKEN=value)
    assert ok.returncode == 0, ok.stderr


def test_errors_are_one_line_on_stderr_with_an_exit_code(
    shared_server: ServerProcess, topic: str
) -> None:
    anonymous = run("pub", topic, "1", "--url", shared_server.url)
    assert anonymous.returncode == 1
    assert anonymous.stderr.strip() == "error: authentication required to publish"
    assert anonymous.stdout == ""
    bad_json = run("pub", topic, "hello", "--url", shared_server.url, "--token", "x")
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr
    wrong = run(
        "pub", topic, "1", "--url", shared_server.url,
        "--email", SUPERUSER_EMAIL, "--password", "wrong-password",
    )  # fmt: skip
    assert wrong.returncode == 1
    assert wrong.stderr.strip().endswith("error: Failed to authenticate.")
    down = run("pub", topic, "1", "--url", f"http://127.0.0.1:{closed_port()}", "--timeout", "0.5",
               "--token", "x")  # fmt: skip
    assert down.returncode == 1
    assert "no connection to the server within 0.5s" in down.stderr


def test_sub_ends_cleanly_on_sigterm(shared_server: ServerProcess, topic: str) -> None:
    with subprocess.Popen(
        command("sub", topic, "--url", shared_server.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    ) as subscriber:
        assert subscriber.stderr is not None
        assert "subscribed to" in subscriber.stderr.readline()
        subscriber.terminate()
        out, err = subscriber.communicate(timeout=10)
    assert subscriber.returncode == 0, err
    assert out == ""
