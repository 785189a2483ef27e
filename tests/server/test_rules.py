"""Topic rules (``--rules FILE``): who may subscribe and publish where.

The decision table runs in process; one real server with a rules file shows
that WebSocket subscribe/publish and HTTP publish obey the same rules with the
contract's envelopes, that a refusal leaves the connection open, and that a
socket signing out loses the subscriptions it may no longer hold.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from bosbase_pubsub.protocol import ERR_FORBIDDEN
from bosbase_pubsub.server.auth import Identity
from bosbase_pubsub.server.rules import Rules, RulesError, load_rules
from bosbase_pubsub.topics import is_pattern, subscription_key

from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer
from ..servers import WsClient, cli, sign_in

SECRET = "a-shared-secret-" * 4
RULES = """\
[defaults]
subscribe = "authenticated"
publish = "authenticated"

[[rules]]
topic = "user/{auth.id}/**"
subscribe = "authenticated"
publish = "authenticated"

[[rules]]
topic = "announcements"
subscribe = "anyone"
publish = "superuser"

[[rules]]
topic = "staff/*"
subscribe = ["staff", "_superusers"]
publish = "staff"

[[rules]]
topic = "archive/**"
subscribe = "anyone"
publish = "nobody"
"""


def identity(collection: str | None, record_id: str = "alice") -> Identity | None:
    if collection is None:
        return None
    collection_id = "pbc_3142635823" if collection == "_superusers" else f"id_{collection}"
    return Identity(record_id, collection_id, collection, 2e9, "header")


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Rules:
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text(RULES)
    return load_rules(path)


@pytest.mark.parametrize(
    ("topic", "who", "subscribe", "publish"),
    [
        # The owner's inbox: only the record whose id is the segment (and superusers).
        ("user/alice/inbox", ("users", "alice"), True, True),
        ("user/alice/a/b", ("users", "alice"), True, True),
        ("user/alice/inbox", ("users", "bob"), False, False),
        ("user/alice/inbox", (None, ""), False, False),
        ("user/alice/inbox", ("_superusers", "root"), True, True),
        ("user/alice", ("users", "alice"), True, True),  # ** needs a segment: the defaults
        ("user/alice", (None, ""), False, False),
        # Read by anyone, written by superusers.
        ("announcements", (None, ""), True, False),
        ("announcements", ("users", "alice"), True, False),
        ("announcements", ("_superusers", "root"), True, True),
        # A collection (external tokens' --jwt-collection) by name.
        ("staff/room", ("staff", "carol"), True, True),
        ("staff/room", ("users", "alice"), False, False),
        ("staff/room", ("_superusers", "root"), True, True),
        ("staff/room/deeper", ("staff", "carol"), True, True),  # * is one segment: defaults
        # Nobody publishes, not even a superuser.
        ("archive/2026/12", ("_superusers", "root"), True, False),
        # No rule: [defaults].
        ("elsewhere", (None, ""), False, False),
        ("elsewhere", ("users", "bob"), True, True),
        # Wildcard subscriptions (subscribed as patterns): allowed only if every topic
        # they can match is. Published, the same text is a plain topic, * a character.
        ("user/alice/*", ("users", "alice"), True, True),
        ("user/*/inbox", ("users", "alice"), False, False),  # other users' inboxes; user "*"
        ("user/*/inbox", ("_superusers", "root"), True, True),
        ("staff/*", ("staff", "carol"), True, True),
        ("staff/**", ("staff", "carol"), True, True),  # staff/x/y falls to the defaults
        ("staff/**", (None, ""), False, False),
        ("**", ("users", "bob"), False, True),  # other users' inboxes are in the pattern
        ("**", ("_superusers", "root"), True, True),
    ],
)
def test_the_decision_table(
    rules: Rules, topic: str, who: tuple[str | None, str], subscribe: bool, publish: bool
) -> None:
    person = identity(who[0], who[1])
    key = subscription_key(topic, is_pattern(topic))
    assert rules.may_subscribe(person, key) is subscribe
    assert rules.may_publish(person, topic) is publish


def test_without_a_file_everything_is_as_before() -> None:
    rules = load_rules(None)
    assert rules.is_default
    assert rules.may_subscribe(None, "anything/at/all")
    assert rules.may_publish(identity("users"), "anything")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rules]]\ntopic = \n", "line 2"),  # TOML syntax: tomllib names the line
        ('[[rules]]\ntopic = "a"\n\n[[rules]]\ntopic = "b/**/c"\n', "rule 2 (line 4)"),
        ('[[rules]]\ntopic = "a"\npublish = "anyone"\n', "publishing always needs a token"),
        ('[[rules]]\ntopic = "a"\nsubscribe = "every one"\n', "rule 1 (line 1)"),
        ('[[rules]]\ntopic = "a*"\n', "use *, ** or {auth.id} as a whole segment"),
        ('[[rules]]\ntopic = "a"\nread = "anyone"\n', "unknown key 'read'"),
        ('[rule]\ntopic = "a"\n', "unknown table 'rule'"),
    ],
)
def test_a_bad_file_is_refused_naming_the_place(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesError) as refused:
        load_rules(path)
    assert str(path) in str(refused.value)
    assert message in str(refused.value)


def test_a_bad_file_stops_the_server_at_start(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\ntopic = "x"\npublish = "anyone"\n')
    result = cli("serve", "--http", "127.0.0.1:0", "--dir", str(tmp_path), "--rules", str(path))
    assert result.returncode == 2
    assert "rule 1 (line 1)" in result.stderr
    missing = cli("serve", "--dir", str(tmp_path), "--rules", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert "cannot read the rules file" in missing.stderr


async def sign_up(url: str, email: str, password: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/api/collections/users/records",
            json={"email": email, "password": password, "passwordConfirm": password},
        ) as response,
    ):
        assert response.status == 200, await response.text()
    return await sign_in(url, "users", email, password)


async def http_publish(url: str, token: str, topic: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/api/pubsub/publish",
            json={"topic": topic, "data": 1},
            headers={"Authorization": token},
        ) as response,
    ):
        return response.status, await response.json()


async def test_real_sockets_and_http_obey_the_rules(
    start_server: StartServer, tmp_path: Path
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    server = start_server("--rules", str(path), "--jwt-secret", SECRET, "--jwt-collection",
                          "staff")  # fmt: skip
    alice = await sign_up(server.url, "alice@example.com", "alice-password")
    bob = await sign_up(server.url, "bob@example.com", "bob-password")
    root = await sign_in(server.url, "_superusers", SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    staff = jwt.encode({"sub": "carol", "exp": 2_000_000_000}, SECRET, algorithm="HS256")
    inbox = f"user/{alice['record']['id']}/inbox"
    clients = {
        "anonymous": await WsClient.connect(server.ws_url),
        "alice": await WsClient.connect(server.ws_url, token=alice["token"]),
        "bob": await WsClient.connect(server.ws_url, token=bob["token"]),
        "root": await WsClient.connect(server.ws_url, token=root["token"]),
        "staff": await WsClient.connect(server.ws_url, token=staff),
    }
    cases = [
        # (client, action, topic, allowed)
        ("alice", "subscribe", inbox, True),
        ("bob", "subscribe", inbox, False),
        ("anonymous", "subscribe", inbox, False),
        ("root", "subscribe", inbox, True),
        ("bob", "publish", inbox, False),  # the owner rule covers publishing too
        ("anonymous", "subscribe", "announcements", True),
        ("alice", "publish", "announcements", False),
        ("root", "publish", "announcements", True),
        ("staff", "subscribe", "staff/room", True),
        ("alice", "subscribe", "staff/room", False),
        ("staff", "publish", "staff/room", True),
        ("root", "publish", "archive/x", False),
        ("anonymous", "subscribe", "elsewhere", False),
        ("alice", "subscribe", f"user/{alice['record']['id']}/*", True),
        ("bob", "subscribe", "user/*/inbox", False),
        ("root", "subscribe", "user/*/inbox", True),
        ("anonymous", "subscribe", "announcements/**", False),  # the defaults: signed in
    ]
    try:
        for name, action, topic, allowed in cases:
            client = clients[name]
            if action == "subscribe":
                reply = await client.subscribe(topic)
                expected = "subscribed"
            else:
                reply = await client.publish(topic, {"from": name})
                expected = "published"
            if allowed:
                assert reply["type"] == expected, (name, action, topic, reply)
            else:
                assert reply == {"type": "error", "requestId": reply["requestId"],
                                 "message": ERR_FORBIDDEN}, (name, action, topic)  # fmt: skip
        # A refusal leaves the connection usable.
        assert (await clients["bob"].request("ping"))["type"] == "pong"
        # HTTP publish: the same rules, 403 with the same message.
        assert (await http_publish(server.url, alice["token"], "announcements"))[0] == 403
        status, body = await http_publish(server.url, bob["token"], inbox)
        assert (status, body["message"]) == (403, ERR_FORBIDDEN)
        assert (await http_publish(server.url, alice["token"], inbox))[0] == 200

        # alice signs out on her socket: her inbox subscription and her pattern over her
        # topics are withdrawn, each with a notice.
        alice_socket = clients["alice"]
        while not alice_socket.messages.empty():
            alice_socket.messages.get_nowait()
        answer = await alice_socket.request("auth", token="")
        assert answer["type"] == "authenticated"
        notices = [await asyncio.wait_for(alice_socket.unmatched.get(), 10) for _ in range(2)]
        assert sorted(notices, key=lambda notice: notice["topic"]) == [
            {"type": "error", "topic": topic, "message": ERR_FORBIDDEN}
            for topic in sorted((inbox, f"user/{alice['record']['id']}/*"))
        ]
        assert (await http_publish(server.url, root["token"], inbox))[0] == 200
        await asyncio.sleep(0.3)
        assert alice_socket.messages.empty()  # no longer delivered
    finally:
        for client in clients.values():
            await client.close()


async def test_an_expired_token_loses_what_only_its_identity_could_hold(
    start_server: StartServer, tmp_path: Path
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    server = start_server("--rules", str(path), "--jwt-secret", SECRET, "--jwt-collection",
                          "staff", "--heartbeat", "1s")  # fmt: skip
    expires = int(time.time()) + 2
    token = jwt.encode({"sub": "carol", "exp": expires}, SECRET, algorithm="HS256")
    client = await WsClient.connect(server.ws_url, token=token)
    try:
        assert (await client.subscribe("staff/room"))["type"] == "subscribed"
        assert (await client.subscribe("announcements"))["type"] == "subscribed"
        notice = await asyncio.wait_for(client.unmatched.get(), 10)
        assert notice == {"type": "error", "topic": "staff/room", "message": ERR_FORBIDDEN}
        # What anyone may hold stays; the connection stays.
        assert (await client.request("ping"))["type"] == "pong"
        assert client.unmatched.empty()
    finally:
        await client.close()
