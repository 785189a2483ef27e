"""Wildcard subscriptions: the matcher and trie in process, then delivery and resume.

In process, every pattern of a small alphabet is checked against every topic
of a larger one (``matches``, ``contains``, ``overlaps``, ``PatternTrie`` and
the rules' "a pattern is allowed only if all its topics are" agree with
brute force). On the shared server (each backend): a message reaches a
connection once however many of its subscriptions match, in order, and a
pattern subscription resumes with no gap and no duplicate. A subscription is a
pattern only with ``"pattern": true`` (ours): without it, ``*`` is a character
like any other, in subscribe and in publish, as the contract has topics.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import aiohttp

from bosbase_pubsub import topics
from bosbase_pubsub.server.auth import SUPERUSERS, Identity
from bosbase_pubsub.server.rules import load_rules

from ..conftest import BOTH_BACKENDS
from ..servers import ServerProcess, WsClient, query

# Every pattern of up to three segments over a, b, * (and ** last), and every
# topic of up to five segments over a, b, c: c and the extra length are the
# witnesses that tell patterns apart.
PATTERNS = [
    "/".join(p)
    for n in (1, 2, 3)
    for p in itertools.product(*[("a", "b", "*")] * (n - 1), ("a", "b", "*", "**"))
]
TOPICS = ["/".join(t) for n in range(1, 6) for t in itertools.product("abc", repeat=n)]
MATCHED = {
    p: {t for t in TOPICS if topics.matches(topics.split(p), topics.split(t))} for p in PATTERNS
}


def test_segments_and_validation() -> None:
    assert topics.matches(topics.split("chat/*"), topics.split("chat/a"))
    assert not topics.matches(topics.split("chat/*"), topics.split("chat/a/b"))
    assert topics.matches(topics.split("chat/**"), topics.split("chat/a/b"))
    assert not topics.matches(topics.split("chat/**"), topics.split("chat"))
    assert topics.matches(topics.split("**"), topics.split("anything/at/all"))
    assert topics.matches(topics.split("a/*"), topics.split("a/"))  # an empty segment
    for good in ("chat", "chat/*", "chat/**", "*/x/*", "**", "a b/*"):
        assert topics.check_pattern(good) is None, good
    for bad in ("chat/**/x", "chat*", "c*t/x", "chat/***", "**/a"):
        assert topics.check_pattern(bad) == topics.ERR_BAD_PATTERN, bad
    assert topics.is_pattern("a/*")
    assert topics.is_pattern("**")
    assert not topics.is_pattern("a/b")
    assert not topics.is_pattern("")
    assert topics.literal_prefix("chat/*/x") == "chat/"
    assert topics.literal_prefix("**") == ""
    assert topics.literal_prefix("a/b/**") == "a/b/"


def test_matches_contains_and_overlaps_agree_with_brute_force() -> None:
    assert MATCHED["*/a"] == {"a/a", "b/a", "c/a"}
    for outer, inner in itertools.product(PATTERNS, repeat=2):
        o, i = topics.split(outer), topics.split(inner)
        assert topics.contains(o, i) == (MATCHED[inner] <= MATCHED[outer]), (outer, inner)
        assert topics.overlaps(o, i) == bool(MATCHED[inner] & MATCHED[outer]), (outer, inner)


def test_the_trie_finds_every_matching_pattern_once() -> None:
    trie: topics.PatternTrie[str] = topics.PatternTrie()
    for pattern in PATTERNS:
        trie.add(pattern, pattern)
        trie.add(pattern, pattern)  # a no-op
    assert len(trie) == len(PATTERNS)
    for topic in TOPICS:
        found = [value for group in trie.match(topic) for value in group]
        assert sorted(found) == sorted(p for p in PATTERNS if topic in MATCHED[p]), topic
    for pattern in PATTERNS:
        trie.remove(pattern, pattern)
        trie.remove(pattern, pattern)  # a no-op
    assert len(trie) == 0
    assert list(trie.match("a/b")) == []
    assert trie._root.empty()  # every node was pruned


def test_a_pattern_is_allowed_only_if_every_topic_it_matches_is(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rules]]\ntopic = "a/{auth.id}/**"\nsubscribe = "authenticated"\n'
        '[[rules]]\ntopic = "b/*"\nsubscribe = "anyone"\n'
        '[[rules]]\ntopic = "*/c"\nsubscribe = "users"\n'
        '[[rules]]\ntopic = "b/**"\nsubscribe = "nobody"\n'
        '[[rules]]\ntopic = "c/**"\nsubscribe = "authenticated"\n'
    )
    rules = load_rules(path)
    me = Identity("a", "_pb_users_auth_", "users", 1e12, "header")
    other = Identity("b", "x", "external", 1e12, "header")
    boss = Identity("s", SUPERUSERS.id, SUPERUSERS.name, 1e12, "header")
    allowed_some = 0
    for who in (None, me, other, boss):
        for pattern in PATTERNS:
            if rules.may_subscribe(who, topics.subscription_key(pattern, True)):
                allowed_some += 1
                # Sound: nothing the pattern matches is refused on its own.
                assert all(rules.may_subscribe(who, t) for t in MATCHED[pattern]), (who, pattern)
    assert allowed_some > 10  # and not vacuous
    assert rules.may_subscribe(me, topics.subscription_key("a/a/*", True))
    # Other users' topics are in it; the plain topic "a/*/a" is not one of them.
    assert not rules.may_subscribe(me, topics.subscription_key("a/*/a", True))
    assert not rules.may_subscribe(me, "a/*/a")  # owned by the user "*": nobody


# --- on a server ----------------------------------------------------------------------------


async def drain(client: WsClient, count: int) -> list[dict[str, Any]]:
    return [await client.next_message() for _ in range(count)]


async def nothing_more(client: WsClient, wait: float = 0.3) -> None:
    await asyncio.sleep(wait)
    assert client.messages.empty(), client.messages.get_nowait()


def seq(position: str) -> int:
    return int(position.rsplit(":", 1)[1])


async def subscribe_pattern(client: WsClient, pattern: str, **fields: Any) -> dict[str, Any]:
    return await client.request("subscribe", topic=pattern, pattern=True, **fields)


async def test_one_delivery_per_connection_however_many_subscriptions_match(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    publisher = await WsClient.connect(shared_server.ws_url, token=superuser_token)
    both = await WsClient.connect(shared_server.ws_url)
    exact = await WsClient.connect(shared_server.ws_url)
    try:
        for pattern in ("wc1/*", "wc1/**", "*/a"):
            assert (await subscribe_pattern(both, pattern))["type"] == "subscribed"
        assert (await both.subscribe("wc1/a"))["type"] == "subscribed"
        assert (await exact.subscribe("wc1/a"))["type"] == "subscribed"
        sent = []
        for topic in ("wc1/a", "wc1/a/b", "wc1x", "wc1", "wc1/b", "wc2/a"):
            sent.append((topic, await publisher.publish(topic, topic)))
        wanted = [ack["id"] for topic, ack in sent if topic not in ("wc1x", "wc1")]
        received = await drain(both, len(wanted))
        assert [m["id"] for m in received] == wanted  # each once, in order
        assert (await exact.next_message())["topic"] == "wc1/a"
        # Leaving a pattern leaves only it.
        await both.request("unsubscribe", topic="wc1/**", pattern=True)
        await both.request("unsubscribe", topic="*/a", pattern=True)
        deep = await publisher.publish("wc1/a/b", "gone")
        last = await publisher.publish("wc1/a", "kept")
        assert (await both.next_message())["id"] == last["id"]
        assert (await exact.next_message())["id"] == last["id"]
        assert deep["id"] != last["id"]
        await nothing_more(both)
    finally:
        for client in (publisher, both, exact):
            await client.close()


async def test_a_batch_reaches_a_pattern_in_seq_order(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    publishers = [
        await WsClient.connect(shared_server.ws_url, token=superuser_token) for _ in range(4)
    ]
    subscriber = await WsClient.connect(shared_server.ws_url)
    try:
        assert (await subscribe_pattern(subscriber, "wcb/**"))["type"] == "subscribed"
        assert (await subscriber.subscribe("wcb/a"))["type"] == "subscribed"
        # Concurrent publishers on several topics: group commits put many in one batch.
        acks = await asyncio.gather(
            *(
                p.publish(f"wcb/{'ab'[n % 2]}/{n % 3}" if n % 5 else "wcb/a", n)
                for n in range(200)
                for p in publishers
            )
        )
        received = await drain(subscriber, len(acks))
        positions = [seq(m["position"]) for m in received]
        assert positions == sorted(set(positions))
        assert {m["id"] for m in received} == {a["id"] for a in acks}
        await nothing_more(subscriber)
    finally:
        for client in (*publishers, subscriber):
            await client.close()


async def test_a_malformed_pattern_is_refused(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    client = await WsClient.connect(shared_server.ws_url, token=superuser_token)
    try:
        for bad in ("wc/**/x", "wc*", "wc/a**"):
            reply = await subscribe_pattern(client, bad)
            assert (reply["type"], reply["message"]) == ("error", topics.ERR_BAD_PATTERN)
        assert (await client.request("ping"))["type"] == "pong"
    finally:
        await client.close()


async def test_without_the_pattern_flag_a_star_is_a_plain_character(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    # What an official SDK sends: topics with * are topics, subscribed and published
    # as such, and a subscription to "wcl/*" is not one to every wcl/ topic.
    publisher = await WsClient.connect(shared_server.ws_url, token=superuser_token)
    plain = await WsClient.connect(shared_server.ws_url)
    pattern = await WsClient.connect(shared_server.ws_url)
    try:
        for topic in ("wcl/*", "deals*", "wcl/**"):
            assert (await plain.subscribe(topic))["type"] == "subscribed"
        assert (await subscribe_pattern(pattern, "wcl/*"))["type"] == "subscribed"
        other = await publisher.publish("wcl/a", "a")
        star = await publisher.publish("wcl/*", "star")
        deals = await publisher.publish("deals*", "deals")
        assert {ack["type"] for ack in (other, star, deals)} == {"published"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{shared_server.url}/api/pubsub/publish",
                json={"topic": "wcl/**", "data": "deep"},
                headers={"Authorization": superuser_token},
            ) as response,
        ):
            assert response.status == 200
            deep = await response.json()
        assert [m["id"] for m in await drain(plain, 3)] == [star["id"], deals["id"], deep["id"]]
        # The pattern takes every one-segment topic under wcl/, "*" and "**" included.
        assert [m["id"] for m in await drain(pattern, 3)] == [other["id"], star["id"], deep["id"]]
        await nothing_more(plain)
        await nothing_more(pattern)
        # The plain "wcl/*" and the pattern "wcl/*" are two subscriptions.
        assert (await subscribe_pattern(plain, "wcl/*"))["type"] == "subscribed"
        await plain.request("unsubscribe", topic="wcl/*")
        again = await publisher.publish("wcl/b", "b")
        assert (await plain.next_message())["id"] == again["id"]
    finally:
        for client in (publisher, plain, pattern):
            await client.close()


@BOTH_BACKENDS
async def test_a_pattern_resumes_without_gap_or_duplicate(
    shared_server: ServerProcess, superuser_token: str
) -> None:
    publisher = await WsClient.connect(shared_server.ws_url, token=superuser_token)
    try:
        # A cursor, then a backlog over several topics, matching and not.
        first = await publisher.publish("wcr/start", 0)
        for n in range(30):
            await publisher.publish(("wcr/a", "wcr/b/c", "wcr", "wcrx/a", "other")[n % 5], n)
        stop = asyncio.Event()

        async def keep_publishing() -> None:
            n = 100
            while not stop.is_set():
                await publisher.publish(("wcr/live", "wcr/live/deep", "nope/live")[n % 3], n)
                n += 1

        racing = asyncio.create_task(keep_publishing())
        await asyncio.sleep(0.05)
        subscriber = await WsClient.connect(shared_server.ws_url)
        try:
            ack = await subscribe_pattern(subscriber, "wcr/*", since=first["position"])
            assert (ack["type"], ack["replay"]) == ("subscribed", "complete")
            await asyncio.sleep(0.3)
            stop.set()
            await racing
            rows = await query(
                shared_server,
                "SELECT id FROM _pubsub_messages WHERE seq > ? AND topic LIKE 'wcr/%'"
                " AND topic NOT LIKE 'wcr/%/%' ORDER BY seq",
                seq(first["position"]),
            )
            expected = [row[0] for row in rows]
            assert len(expected) > 6
            received = await drain(subscriber, len(expected))
            assert [m["id"] for m in received] == expected
            assert all(m["topic"].count("/") == 1 for m in received)
            await nothing_more(subscriber)
        finally:
            await subscriber.close()
    finally:
        await publisher.close()
