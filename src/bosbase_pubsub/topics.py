"""Topic patterns: ``*`` and ``**`` segments, as pure functions (no I/O).

Shared by the server (subscriptions, topic rules, replays) and the SDK
(dispatching a message to the subscriptions it matches). Rules:

* A topic is split on ``/`` into segments (``chat/general`` has two; an
  empty segment is a segment too).
* In a pattern, a segment that is exactly ``*`` matches any one segment; a
  last segment that is exactly ``**`` matches one or more segments, so
  ``chat/**`` matches ``chat/a`` and ``chat/a/b`` but not ``chat``, and
  ``**`` alone matches every topic. Every other segment matches itself.
* A subscription is a pattern only when the client says so (``"pattern":
  true`` on the wire: ours, so that a client that knows nothing of patterns
  gets plain topics, ``*`` included, as the contract has them). Then a
  segment holding ``*`` must be ``*`` or ``**``, ``**`` only last
  (``check_pattern``). A message topic is always literal, stars included:
  a ``*`` segment in it is matched by wildcards, never by a literal ``*``.
* On the server a subscription is named by a key: the topic itself for a
  plain topic, ``PATTERN_MARK`` and the pattern for a pattern
  (``subscription_key``), so that ``a/*`` the topic and ``a/*`` the pattern
  are two subscriptions. NUL is refused in topics, so no topic looks like a
  pattern's key.
* ``is_pattern`` says whether a text has wildcard segments (the SDK, which
  takes such a text as a pattern, and the topic rules use it).

``PatternTrie`` finds the subscriptions a message topic matches in a few
dict lookups per segment, whatever the number of patterns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, Generic, TypeVar

ONE: Final = "*"
"""The segment matching any one segment."""
DEEP: Final = "**"
"""The last segment matching one or more segments."""

ERR_BAD_PATTERN: Final = "invalid topic pattern (* and ** must be whole segments, ** only last)"

PATTERN_MARK: Final = "\x00"
"""Starts the server's key of a pattern subscription (``subscription_key``)."""

Segments = tuple[str, ...]

T = TypeVar("T")


def is_pattern(topic: str) -> bool:
    """Whether ``topic`` has a ``*`` or ``**`` segment (else it is a plain topic)."""
    if ONE not in topic:  # the fast path: most topics hold no star at all
        return False
    return any(segment in (ONE, DEEP) for segment in topic.split("/"))


def check_pattern(pattern: str) -> str | None:
    """The error a subscription pattern earns (``ERR_BAD_PATTERN``), or ``None`` if valid."""
    if ONE not in pattern:
        return None
    segments = pattern.split("/")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if ONE not in segment or segment == ONE or (segment == DEEP and index == last):
            continue
        return ERR_BAD_PATTERN
    return None


def subscription_key(topic: str, pattern: bool) -> str:
    """The server's name of a subscription to ``topic``, a pattern or a plain topic."""
    return PATTERN_MARK + topic if pattern else topic


def is_pattern_key(key: str) -> bool:
    """Whether a subscription key (``subscription_key``) names a pattern."""
    return key.startswith(PATTERN_MARK)


def key_topic(key: str) -> str:
    """The topic or pattern a subscription key names, as the client wrote it."""
    return key[1:] if key.startswith(PATTERN_MARK) else key


def split(topic: str) -> Segments:
    return tuple(topic.split("/"))


def matches(pattern: Sequence[str], topic: Sequence[str]) -> bool:
    """Whether the segments ``topic`` (literal) match the segments ``pattern``."""
    if pattern and pattern[-1] == DEEP:
        fixed = len(pattern) - 1
        if len(topic) <= fixed:
            return False
    else:
        fixed = len(pattern)
        if len(topic) != fixed:
            return False
    for index in range(fixed):
        segment = pattern[index]
        if segment != ONE and segment != topic[index]:
            return False
    return True


def _segment_within(inner: str, outer: str) -> bool:
    return outer == ONE or (inner != ONE and inner == outer)


def _segments_meet(a: str, b: str) -> bool:
    return ONE in (a, b) or a == b


def contains(outer: Sequence[str], inner: Sequence[str]) -> bool:
    """Whether every topic ``inner`` matches is matched by ``outer`` (both patterns)."""
    outer_deep = bool(outer) and outer[-1] == DEEP
    inner_deep = bool(inner) and inner[-1] == DEEP
    if outer_deep:
        fixed = len(outer) - 1
        # inner's shortest topic has len(inner) segments; outer needs more than ``fixed``.
        if len(inner) <= fixed:
            return False
    else:
        fixed = len(outer)
        if inner_deep or len(inner) != fixed:
            return False
    return all(_segment_within(inner[i], outer[i]) for i in range(fixed))


def overlaps(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether some topic matches both patterns ``a`` and ``b``."""
    a_deep = bool(a) and a[-1] == DEEP
    b_deep = bool(b) and b[-1] == DEEP
    a_fixed = len(a) - 1 if a_deep else len(a)
    b_fixed = len(b) - 1 if b_deep else len(b)
    if not a_deep and not b_deep and a_fixed != b_fixed:
        return False
    if a_deep and not b_deep and b_fixed <= a_fixed:
        return False  # a's topics have more than a_fixed segments
    if b_deep and not a_deep and a_fixed <= b_fixed:
        return False
    return all(_segments_meet(a[i], b[i]) for i in range(min(a_fixed, b_fixed)))


def literal_prefix(pattern: str) -> str:
    """The text every topic ``pattern`` matches starts with (``chat/`` for ``chat/*``).

    Empty when the pattern starts with a wildcard. Stores use it to narrow a
    replay; the pattern itself is matched afterwards with ``matches``.
    """
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        if segment in (ONE, DEEP):
            return "".join(s + "/" for s in segments[:index])
    return pattern


class _Node(Generic[T]):
    __slots__ = ("children", "deep", "here", "one")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.one: _Node[T] | None = None
        """The child for a ``*`` segment."""
        self.here: set[T] = set()
        """Values of the patterns that end at this node."""
        self.deep: set[T] = set()
        """Values of the patterns that end with ``**`` after this node."""

    def empty(self) -> bool:
        return not (self.children or self.one or self.here or self.deep)


class PatternTrie(Generic[T]):
    """Values (subscribers) by pattern; ``match`` yields those a topic matches.

    One node per pattern segment; matching walks the topic's segments down
    the literal and ``*`` children at once, collecting ``**`` values on the
    way, so its cost is set by the topic's depth and the number of ``*``
    branches it meets, not by how many patterns are stored.
    """

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._count = 0

    def __len__(self) -> int:
        """How many (pattern, value) pairs are stored."""
        return self._count

    def add(self, pattern: str, value: T) -> None:
        """Store ``value`` under ``pattern`` (a valid pattern; a second add is a no-op)."""
        node = self._root
        segments = pattern.split("/")
        deep = segments[-1] == DEEP
        if deep:
            segments.pop()
        for segment in segments:
            if segment == ONE:
                if node.one is None:
                    node.one = _Node()
                node = node.one
            else:
                child = node.children.get(segment)
                if child is None:
                    child = node.children[segment] = _Node()
                node = child
        values = node.deep if deep else node.here
        if value not in values:
            values.add(value)
            self._count += 1

    def remove(self, pattern: str, value: T) -> None:
        """Remove ``value`` from ``pattern`` (nothing if it is not there); prunes empty nodes."""
        segments = pattern.split("/")
        deep = segments[-1] == DEEP
        if deep:
            segments.pop()
        path: list[tuple[_Node[T], str]] = []
        node = self._root
        for segment in segments:
            child = node.one if segment == ONE else node.children.get(segment)
            if child is None:
                return
            path.append((node, segment))
            node = child
        values = node.deep if deep else node.here
        if value not in values:
            return
        values.discard(value)
        self._count -= 1
        for parent, segment in reversed(path):
            if not node.empty():
                break
            if segment == ONE:
                parent.one = None
            else:
                del parent.children[segment]
            node = parent

    def match(self, topic: str) -> Iterator[set[T]]:
        """The value sets of every pattern ``topic`` (literal) matches (see ``match_list``)."""
        return iter(self.match_list(topic))

    def match_list(self, topic: str) -> list[set[T]]:
        """The value sets of every pattern ``topic`` (literal) matches, as a new list.

        A value stored under several matching patterns is in several sets:
        the caller deduplicates.
        """
        found: list[set[T]] = []
        if not self._count:
            return found
        nodes = [self._root]
        for segment in topic.split("/"):
            following: list[_Node[T]] = []
            for node in nodes:
                if node.deep:
                    found.append(node.deep)  # ``**`` takes this segment and the rest
                child = node.children.get(segment)
                if child is not None:
                    following.append(child)
                if node.one is not None:
                    following.append(node.one)
            if not following:
                return found
            nodes = following
        for node in nodes:
            if node.here:
                found.append(node.here)
        return found
