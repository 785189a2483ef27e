"""Topic rules: who may subscribe to and publish on which topics (``serve --rules FILE``).

A TOML file of rules, tried in order; the first whose ``topic`` pattern
matches decides, and a topic no rule matches gets ``[defaults]``::

    [defaults]                      # optional; these are the defaults without a file
    subscribe = "anyone"
    publish = "authenticated"

    [[rules]]
    topic = "user/{auth.id}/**"     # a user's private inbox
    subscribe = "authenticated"
    publish = "authenticated"

    [[rules]]
    topic = "announcements"         # everyone reads, superusers write
    subscribe = "anyone"
    publish = "superuser"

Patterns are ``/``-separated segments: a literal, ``*`` (any one segment),
``**`` (one or more segments, last only), or ``{auth.id}`` (any one segment
when finding the rule, which then allows only the identity whose record id
is that segment). Who: ``anyone``, ``authenticated``, ``superuser``,
``nobody``, or a collection name (``users``, ``_superusers``, or the
``--jwt-collection`` of external tokens); a list means any of them.
Superusers pass every rule but ``nobody``. Publishing always needs a token
(the contract), so ``publish = "anyone"`` is refused.
A wildcard subscription (``chat/*``, see ``topics``) is allowed only if every
topic it can match is (``Rules._decide_pattern``).

Invariants: ``Rules.default()`` allows exactly what the server allowed before
rules existed (anyone subscribes, any identity publishes); a bad file raises
``RulesError`` naming the file and the line of the offending rule.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..topics import DEEP, ONE, contains, is_pattern_key, key_topic, overlaps
from .auth import Identity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found]  # not installed on 3.11+


_KEYWORDS = ("anyone", "authenticated", "superuser", "nobody")
_OWNER = "{auth.id}"


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Who:
    """One ``subscribe`` or ``publish`` value: the identities it lets through."""

    names: tuple[str, ...]

    def allows(self, identity: Identity | None) -> bool:
        names = self.names
        if "nobody" in names:
            return False
        if "anyone" in names:
            return True
        if identity is None:
            return False
        if identity.is_superuser or "authenticated" in names:
            return True
        return identity.collection_name in names


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: str
    segments: tuple[str, ...]
    subscribe: Who
    publish: Who
    line: int

    def match(self, topic: Sequence[str]) -> str | None:
        """``""`` when the rule covers the topic (the owner segment, if any); else None."""
        owner = ""
        for index, segment in enumerate(self.segments):
            if segment == "**":
                return owner if len(topic) > index else None
            if index >= len(topic):
                return None
            if segment == _OWNER:
                owner = topic[index]
            elif segment != "*" and segment != topic[index]:
                return None
        return owner if len(topic) == len(self.segments) else None

    @property
    def has_owner(self) -> bool:
        return _OWNER in self.segments

    @property
    def plain(self) -> tuple[str, ...]:
        """The pattern with the owner segment as ``*``: the topics it covers."""
        return tuple(ONE if segment == _OWNER else segment for segment in self.segments)

    def owner_allows_all(self, record_id: str, pattern: Sequence[str]) -> bool:
        """Whether every topic of ``pattern`` this rule covers has ``record_id`` as owner.

        Only when the pattern's segment at the owner's place is that literal id.
        """
        index = self.segments.index(_OWNER)
        fixed = len(pattern) - 1 if pattern and pattern[-1] == DEEP else len(pattern)
        return index < fixed and pattern[index] == record_id


class Rules:
    """The rules of one server; ``may_subscribe`` / ``may_publish`` decide."""

    def __init__(self, rules: Sequence[Rule], defaults: tuple[Who, Who]) -> None:
        self.rules = tuple(rules)
        self.default_subscribe, self.default_publish = defaults
        self.is_default = not self.rules and defaults == _DEFAULTS
        """No file, or one that changes nothing: the checks can be skipped."""

    @classmethod
    def default(cls) -> Rules:
        return cls((), _DEFAULTS)

    def _decide(self, identity: Identity | None, topic: str, action: str) -> bool:
        if is_pattern_key(topic):
            return self._decide_pattern(identity, key_topic(topic).split("/"), action)
        segments = topic.split("/")  # a topic: a ``*`` in it is a character like any other
        for rule in self.rules:
            owner = rule.match(segments)
            if owner is None:
                continue
            who = rule.subscribe if action == "subscribe" else rule.publish
            if not who.allows(identity):
                return False
            if rule.has_owner and not (identity is not None and identity.is_superuser):
                return identity is not None and identity.record_id == owner
            return True
        who = self.default_subscribe if action == "subscribe" else self.default_publish
        return who.allows(identity)

    def _decide_pattern(self, identity: Identity | None, pattern: list[str], action: str) -> bool:
        """A wildcard subscription: allowed only if every topic it can match is.

        The rules are walked in order, as for a topic; each one whose topics
        overlap the pattern's must allow all of that overlap, and the walk
        ends at one that covers the whole pattern (else ``[defaults]`` decide
        what is left). A topic an earlier rule allowed may be judged again
        by a later one, so this errs on the side of refusing, never allowing.
        """
        superuser = identity is not None and identity.is_superuser
        for rule in self.rules:
            covered = rule.plain
            if not overlaps(covered, pattern):
                continue
            who = rule.subscribe if action == "subscribe" else rule.publish
            if not who.allows(identity):
                return False
            if (
                rule.has_owner
                and not superuser
                and (identity is None or not rule.owner_allows_all(identity.record_id, pattern))
            ):
                return False
            if contains(covered, pattern):
                return True
        who = self.default_subscribe if action == "subscribe" else self.default_publish
        return who.allows(identity)

    def may_subscribe(self, identity: Identity | None, key: str) -> bool:
        """Whether ``identity`` may subscribe to ``key``, a subscription key
        (``topics.subscription_key``: a pattern's is marked)."""
        return True if self.is_default else self._decide(identity, key, "subscribe")

    def may_publish(self, identity: Identity | None, topic: str) -> bool:
        """Whether ``identity`` (already known to be signed in) may publish on ``topic``
        (a topic: literal, ``*`` included)."""
        return True if self.is_default else self._decide(identity, topic, "publish")


_DEFAULTS = (Who(("anyone",)), Who(("authenticated",)))


def load_rules(path: Path | None) -> Rules:
    """The rules of the TOML file at ``path`` (``Rules.default()`` for ``None``).

    Raises ``RulesError`` naming the file and line of what is wrong.
    """
    if path is None:
        return Rules.default()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RulesError(f"cannot read the rules file {path}: {error.strerror}") from error
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RulesError(f"{path}: {error}") from error
    headers = [n for n, line in enumerate(text.splitlines(), 1) if line.strip() == "[[rules]]"]
    unknown = set(document) - {"rules", "defaults"}
    if unknown:
        raise RulesError(
            f"{path}: unknown table {sorted(unknown)[0]!r} (use [[rules]], [defaults])"
        )
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise RulesError(f"{path}: [defaults] must be a table")
    where = f"{path}: [defaults]"
    default_pair = (
        _who(defaults.get("subscribe", "anyone"), where, "subscribe"),
        _who(defaults.get("publish", "authenticated"), where, "publish"),
    )
    entries = document.get("rules", [])
    if not isinstance(entries, list):
        raise RulesError(f"{path}: rules must be [[rules]] tables")
    rules = []
    for index, entry in enumerate(entries):
        line = headers[index] if index < len(headers) else 0
        where = f"{path}: rule {index + 1} (line {line})"
        rules.append(_rule(entry, where, line))
    return Rules(rules, default_pair)


def _rule(entry: Any, where: str, line: int) -> Rule:
    if not isinstance(entry, dict):
        raise RulesError(f"{where}: must be a table")
    extra = set(entry) - {"topic", "subscribe", "publish"}
    if extra:
        raise RulesError(f"{where}: unknown key {sorted(extra)[0]!r} (topic, subscribe, publish)")
    pattern = entry.get("topic")
    if not isinstance(pattern, str) or not pattern:
        raise RulesError(f"{where}: topic must be a non-empty string")
    segments = tuple(pattern.split("/"))
    for position, segment in enumerate(segments):
        if not segment:
            raise RulesError(f"{where}: empty segment in topic {pattern!r}")
        if segment == "**" and position != len(segments) - 1:
            raise RulesError(f"{where}: ** must be the last segment of {pattern!r}")
        if segment not in ("*", "**", _OWNER) and re.search(r"[*{}]", segment):
            raise RulesError(
                f"{where}: segment {segment!r} of {pattern!r}: use *, ** or {_OWNER} as a whole"
                " segment"
            )
    if segments.count(_OWNER) > 1:
        raise RulesError(f"{where}: {_OWNER} may appear once in {pattern!r}")
    return Rule(
        pattern=pattern,
        segments=segments,
        subscribe=_who(entry.get("subscribe", "anyone"), where, "subscribe"),
        publish=_who(entry.get("publish", "authenticated"), where, "publish"),
        line=line,
    )


def _who(value: Any, where: str, action: str) -> Who:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RulesError(f"{where}: {action} must be a name or a list of names")
    for name in names:
        if not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise RulesError(
                f"{where}: {action} = {name!r}: use anyone, authenticated, superuser, nobody"
                " or a collection name"
            )
    if action == "publish" and "anyone" in names:
        raise RulesError(f"{where}: publish = 'anyone': publishing always needs a token")
    return Who(tuple(names))
