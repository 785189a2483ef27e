"""The storage interface: one ``Store`` per node, chosen by URL scheme.

The hub, the protocol code and the HTTP routes talk only to this interface,
so a backend (SQLite, PostgreSQL, NATS JetStream) slots in without touching them.
Group commit lives above it (``server.commits``): a backend only needs to
write a whole batch in one transaction.

A store that several nodes share (PostgreSQL, JetStream) also offers a ``Feed``: the
messages every node stores, in commit order, which ``server.cluster`` hands
to this node's hub. A store only one node uses (SQLite) has none: a node
delivers its own messages itself, right after their commit.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass


class StoreError(Exception):
    """The store failed (unreachable, full, corrupt...): the operation did not happen."""


class DuplicateRecordError(StoreError):
    """A unique field (an account's email) is already taken."""


@dataclass(slots=True)
class Message:
    """One published message, as stored in ``_pubsub_messages``.

    Not frozen, for speed on the publish path (a frozen dataclass pays for
    every field it sets): only the store sets ``seq``, once, when it stored
    the message. Everything else treats it as read-only.
    """

    id: str
    topic: str
    data: bytes
    """The payload as compact JSON text."""
    created: str
    """UTC in the contract's layout ``YYYY-MM-DD HH:MM:SS.mmmZ`` (sorts as text)."""
    origin: str
    """The id of the node that stored it."""
    created_by: str | None
    """The publisher's record id."""
    seq: int = 0
    """The global sequence number (``seq``), increasing in commit order; 0 until stored."""
    key: str | None = None
    """The publisher's idempotence key: one message per (``created_by``, ``key``)."""


@dataclass(frozen=True, slots=True)
class Positions:
    """Where the message sequence of a store stands (for resuming subscriptions)."""

    newest: int
    """The highest ``seq`` ever stored (pruned messages included); 0 when none."""
    pruned_through: int
    """The highest ``seq`` retention ever deleted; 0 when none."""


@dataclass(frozen=True, slots=True)
class AuthRecord:
    """One account of an auth collection (``users`` or ``_superusers``)."""

    id: str
    collection: str
    email: str
    password_hash: str
    token_key: str
    """Part of the token signing key; replaced on a password change so that
    tokens issued before stop verifying."""
    verified: bool
    email_visibility: bool
    name: str
    created: str
    updated: str


AUTH_TABLES = ("users", "_superusers")
"""The auth collections, each one table in every store."""


class AccountStore(abc.ABC):
    """Accounts of the auth collections, and the node-shared signing secrets."""

    @staticmethod
    def _table(collection: str) -> str:
        """The table of ``collection``; raises ``ValueError`` for anything else."""
        if collection not in AUTH_TABLES:
            raise ValueError(f"not an auth collection: {collection!r}")
        return collection

    @abc.abstractmethod
    async def find_by_email(self, collection: str, email: str) -> AuthRecord | None:
        """The record whose email matches (case-insensitively), if any."""

    @abc.abstractmethod
    async def find_by_id(self, collection: str, record_id: str) -> AuthRecord | None:
        """The record with this id, if any."""

    @abc.abstractmethod
    async def insert(self, record: AuthRecord) -> None:
        """Add a record. Raises ``DuplicateRecordError`` when its email is taken."""

    @abc.abstractmethod
    async def update_password(
        self, collection: str, record_id: str, password_hash: str, token_key: str, updated: str
    ) -> None:
        """Replace a record's password hash and token key."""

    @abc.abstractmethod
    async def list_records(self, collection: str, *, offset: int, limit: int) -> list[AuthRecord]:
        """At most ``limit`` records of ``collection`` after the first ``offset``, newest first."""

    @abc.abstractmethod
    async def count(self, collection: str) -> int:
        """How many records ``collection`` holds."""

    @abc.abstractmethod
    async def delete(self, collection: str, record_id: str) -> bool:
        """Delete a record (its tokens stop verifying); ``False`` if there was none."""

    async def token_keys(self, collection: str, record_ids: Iterable[str]) -> dict[str, str]:
        """The token key of each record of ``record_ids`` that exists, by id.

        What the open connections' identities are checked against (a changed key:
        the password changed; a missing record: deleted). One lookup per record
        here, up to 64 at once; the SQL stores read them in one query.
        """
        ids = list(record_ids)
        keys: dict[str, str] = {}
        for start in range(0, len(ids), 64):
            chunk = ids[start : start + 64]
            found = await asyncio.gather(*(self.find_by_id(collection, i) for i in chunk))
            keys.update((r.id, r.token_key) for r in found if r is not None)
        return keys

    @abc.abstractmethod
    async def secret(self, name: str, candidate: str) -> str:
        """The secret stored under ``name``; stores ``candidate`` first if there is none.

        Every node sharing a database gets the same value, whichever asked first.
        """


class Feed(abc.ABC):
    """The messages that the other nodes sharing a store commit to it, in commit order.

    Call ``open`` once, then ``next_batch`` in a loop; ``close`` at the end.
    The feed starts at the newest message stored when it opens: it returns
    every message stored after that, each exactly once, in ``seq`` order.
    The node's own messages come back as *markers*: only their ``seq`` and
    ``origin`` are set (the node has their content already).
    """

    @property
    def position(self) -> int:
        """The highest ``seq`` read so far (the newest stored one right after ``open``)."""
        return 0

    def wake(self) -> None:
        """Make a pending or the next ``next_batch`` read the store now, not at its next poll."""
        return  # a feed without a poll interval reads at once anyway

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and take the newest stored message as the starting point.

        Raises ``StoreError`` when the store is unreachable.
        """

    @abc.abstractmethod
    async def next_batch(self) -> Sequence[Message]:
        """Wait a little for messages stored after the last batch; return them in commit order.

        Returns an empty batch when none came within the feed's poll interval
        (the store answered: the feed is healthy). Raises ``StoreError`` when
        the store fails; the position is kept, so a later call (which
        reconnects) returns everything stored meanwhile, once.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect. Idempotent; a pending ``next_batch`` raises ``StoreError``."""


class Store(abc.ABC):
    """Durable storage of messages and accounts for one node."""

    accounts: AccountStore
    _node_reports: dict[str, tuple[float, bytes]]
    """This node's reports, where no other node shares the store (see ``report_node``)."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or upgrade the schema."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads. Idempotent."""

    @abc.abstractmethod
    async def append(self, messages: Sequence[Message]) -> list[Message]:
        """Store every message (in one transaction where the store has them); returns once stored.

        Returns one message per input, in order: the input itself, its
        ``seq`` now set (ascending in input order; consecutive on a store one
        writer uses at a time, SQLite and PostgreSQL, but on JetStream other
        nodes' messages may sit between a batch's), or,
        for an input whose (``created_by``, ``key``) was stored before (or
        earlier in the same batch), that first message, which is not stored
        again (its ``id`` differs from the input's). Raises ``StoreError`` when the
        batch was not stored (on JetStream, which has no transactions, part of it may
        have been: see ``storage.jetstream``).
        """

    @abc.abstractmethod
    async def read_topic(self, topic: str, after: int, through: int, limit: int) -> list[Message]:
        """At most ``limit`` messages of ``topic`` with ``after < seq <= through``, by ``seq``."""

    @abc.abstractmethod
    async def browse(self, topic: str | None, before: int | None, limit: int) -> list[Message]:
        """At most ``limit`` messages with ``seq < before`` (any when None), newest first.

        Only ``topic``'s when it is given. Pages through the index on
        ``(topic, seq)`` (or the primary key): pass the last ``seq`` of a page
        as the next page's ``before``.
        """

    async def position_at(self, created: str) -> int:
        """The ``seq`` of the newest message created at or before ``created``; 0 if none.

        A binary search over ``seq`` with one primary-key lookup per step
        (``created`` has no index): it takes ``created`` to grow with ``seq``,
        which holds but for the clock differences between nodes, so the
        answer is exact on one node and close on a cluster.
        """
        low, high = 0, (await self.positions()).newest
        while low < high:  # the answer is in [low, high]
            middle = (low + high + 1) // 2
            found = await self.browse(None, middle + 1, 1)  # the newest at or below middle
            if not found or found[0].created <= created:
                low = middle
            else:
                high = middle - 1
        found = await self.browse(None, low + 1, 1)
        return found[0].seq if found and found[0].created <= created else 0

    @abc.abstractmethod
    async def read_prefix(self, prefix: str, after: int, through: int, limit: int) -> list[Message]:
        """At most ``limit`` messages with ``after < seq <= through`` and topic prefix ``prefix``.

        By ``seq``, for replaying a pattern subscription (the caller matches
        the pattern itself, and pages on from the last row's ``seq``). It
        walks ``seq`` (the primary key) from ``after``: a resume's cost is the
        messages stored since, not the topics' whole history.
        """

    @abc.abstractmethod
    async def positions(self) -> Positions:
        """The newest ``seq`` and the highest pruned one."""

    @abc.abstractmethod
    async def prune(self, before: str, limit: int) -> int:
        """Delete the oldest messages created before ``before``; return how many.

        Goes in ``seq`` order, deletes at most ``limit``, and stops at the
        first message not created before ``before``: what is deleted is
        always a prefix of the stream, so ``Positions.pruned_through`` (raised
        to the highest ``seq`` deleted) means "nothing at or below it is left".
        A message stored with an earlier ``created`` than one before it (the
        nodes' clocks differ) waits until that one is old enough too.
        """

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreError`` unless the store answers."""

    def feed(self, *, skip_origin: str) -> Feed | None:
        """A new ``Feed`` of what the other nodes store (``origin`` other than ``skip_origin``).

        ``None`` when only this node uses the store.
        """
        return None

    async def report_node(self, node_id: str, report: bytes) -> None:
        """Publish ``report`` (a JSON object) as what node ``node_id`` says about itself now.

        Every node sharing the store sees it in ``node_reports``. A store only
        one node uses keeps it in memory.
        """
        self._reports()[node_id] = (time.time(), report)

    async def forget_node(self, node_id: str) -> None:
        """Drop ``node_id``'s report (it is shutting down)."""
        self._reports().pop(node_id, None)

    async def node_reports(self, within: float) -> dict[str, bytes]:
        """The latest report of every node that reported in the last ``within`` seconds."""
        horizon = time.time() - within
        return {node: report for node, (at, report) in self._reports().items() if at >= horizon}

    def _reports(self) -> dict[str, tuple[float, bytes]]:
        # Created on first use: the backends' __init__ need not know about it.
        if "_node_reports" not in self.__dict__:
            self._node_reports = {}
        return self._node_reports

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Hold the store-wide lock ``name`` while the block runs, if no other node holds it.

        Yields ``True`` when this node got the lock, ``False`` when another
        node holds it (the block should then skip its work). A store only one
        node uses always yields ``True``. Raises ``StoreError`` when the store
        is unreachable.
        """
        yield True
