"""The JetStream backend: one NATS JetStream stream for any number of nodes.

Messages live in one stream (see ``jetstream_common`` for its layout);
accounts, the signing secrets, node reports and locks in KV buckets beside
it. Nodes can start, stop or crash independently, as on PostgreSQL.

What differs from PostgreSQL, and why it is still safe:

* ``seq`` is the stream sequence, which JetStream assigns in the order it
  stores messages; a consumer reads the stream in that order, so a reader
  that has read up to ``n`` never needs to look below ``n`` again (see
  ``jetstream_feed``).
* A batch is not a transaction: its messages are published back to back
  (pipelined, in input order, on one connection) and ``append`` returns once
  JetStream acked every one. Other nodes' messages may land between them,
  so a batch's seqs ascend but need not be consecutive. When any publish of
  a batch fails the whole ``append`` raises ``StoreError``; some of its
  messages may have been stored all the same (as a commit whose answer was
  lost with its connection on PostgreSQL): other nodes deliver those, this
  one does not, and a publisher retrying with its idempotence key gets the
  stored one back.
* Idempotence keys use JetStream's duplicate detection (``Nats-Msg-Id``):
  a key is stored once within the stream's duplicate window (24 h by
  default, as long as messages are kept).
* Retention: the stream's ``max_age`` (24 h by default) lets JetStream drop
  old messages itself; ``prune`` (the node's ``--retention``) purges a
  prefix of the stream too. Either way ``Positions.pruned_through`` is the
  stream's first sequence minus one.
* While the connection is down, appends fail at once (nothing is buffered
  to be sent later, when the publisher has been told it failed); nats-py
  reconnects in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, JetStreamManager, api
from nats.js.kv import KeyValue

import nats

from .base import (
    AccountStore,
    AuthRecord,
    DuplicateRecordError,
    Feed,
    Message,
    Positions,
    Store,
    StoreError,
)
from .jetstream_common import (
    CONNECT_TIMEOUT,
    REQUEST_TIMEOUT,
    JetStreamSettings,
    check_secure,
    connect_options,
    decode_message,
    encode_message,
    kv_key,
    message_id_header,
    parse_url,
    prefix_filter,
    probe_tls,
    topic_subject,
    translate_errors,
)
from .jetstream_feed import JetStreamFeed

log = logging.getLogger("bosbase_pubsub.storage.jetstream")

NODES_TTL = 3600.0
"""Seconds a node's last report is kept (a node killed without a goodbye leaves one)."""
LOCKS_TTL = 300.0
"""Seconds a lock is held at most (a node killed while holding one releases it so)."""
_SCAN_BATCH = 512
_KV_OPERATION = "KV-Operation"


class JetStreamStore(Store):
    """A ``Store`` on a NATS JetStream server that any number of nodes share.

    ``url`` is ``nats://[USER:PASSWORD@]HOST[:PORT][?stream=NAME&...]`` (see
    ``JetStreamSettings``); raises ``ValueError`` when it is malformed.
    """

    def __init__(self, url: str) -> None:
        self.settings = parse_url(url)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._jsm: JetStreamManager | None = None
        self._buckets: dict[str, KeyValue] = {}
        self._ack_prefix: str | None = None
        self._next_ack = 0
        self._awaiting_acks: dict[int, tuple[_AckWait, int]] = {}
        """Publishes waiting for JetStream's ack, by number: their batch and place in it."""
        self._subject_of: dict[str, str] = {}
        """``topic_subject`` of the topics published lately (a cache, cleared when large)."""
        self.connection_epoch = 0
        """Raised on every disconnect: a feed made in an earlier epoch lost its consumer."""
        self._closed = False
        self._last_error: Exception | None = None
        """The connection's last error (nats-py reports them to ``_on_error``)."""
        self._refused: str | None = None
        """Why the connection was given up for good (a reconnect without the TLS asked for)."""
        self.accounts = JetStreamAccounts(self)

    # ------------------------------------------------------------------ connection

    def connection(self) -> Client:
        """The store's NATS connection; raises ``StoreError`` when closed or not opened."""
        if self._refused is not None:
            raise StoreError(self._refused)
        if self._nc is None or self._closed:
            raise StoreError("the store is closed")
        return self._nc

    def manager(self) -> JetStreamManager:
        self.connection()
        if self._jsm is None:
            raise StoreError("the store is closed")
        return self._jsm

    def _jetstream(self) -> JetStreamContext:
        self.connection()
        if self._js is None:
            raise StoreError("the store is closed")
        return self._js

    async def open(self) -> None:
        nc = Client()
        where = self.settings.where
        self._last_error = None
        await probe_tls(self.settings)
        options = connect_options(self.settings)
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[self.settings.server],
                    name="bosbase-pubsub",
                    connect_timeout=int(CONNECT_TIMEOUT),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,  # type: ignore[arg-type]
                    ping_interval=5,
                    max_outstanding_pings=2,
                    # Nothing is buffered while disconnected: an append fails then.
                    pending_size=0,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    **options,
                ),
                CONNECT_TIMEOUT,
            )
            check_secure(nc, self.settings)
        except (asyncio.TimeoutError, nats.errors.Error, OSError, StoreError) as error:
            with contextlib.suppress(Exception):
                await nc.close()
            if isinstance(error, StoreError):
                raise
            # nats-py retries a failed first attempt until the timeout: say why it failed.
            cause = self._last_error if isinstance(error, asyncio.TimeoutError) else None
            detail = str(cause or error) or type(cause or error).__name__
            raise StoreError(f"jetstream: cannot connect to {where}: {detail}") from error
        self._nc = nc
        self._js = nc.jetstream(timeout=REQUEST_TIMEOUT)
        self._jsm = nc.jsm(timeout=REQUEST_TIMEOUT)
        try:
            await self._ensure_stream()
            for bucket, ttl in (
                (self.settings.accounts_bucket, 0.0),
                (self.settings.nodes_bucket, NODES_TTL),
                (self.settings.locks_bucket, LOCKS_TTL),
            ):
                self._buckets[bucket] = await self._ensure_bucket(bucket, ttl)
        except BaseException:
            await self.close()
            raise

    async def _on_error(self, error: Exception) -> None:
        # The server's refusal or a TLS failure says more than the broken socket after it.
        telling = (nats.errors.Error, ssl.SSLError)
        if isinstance(error, telling) or not isinstance(self._last_error, telling):
            self._last_error = error
        log.debug("nats: %s", error)

    async def _on_disconnected(self) -> None:
        self.connection_epoch += 1
        if not self._closed:
            log.warning("lost the connection to NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        try:
            check_secure(self._nc, self.settings)
        except StoreError as error:
            # Never carry on in plain text: the store stays unusable until restarted.
            self._refused = str(error)
            log.error("%s; closing the store's connection", error)
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()
            return
        log.info("reconnected to NATS")

    async def _ensure_stream(self) -> None:
        """Create the message stream, or bring its limits in line; safe from several nodes."""
        settings = self.settings
        config = api.StreamConfig(
            name=settings.stream,
            description="bosbase-pubsub messages (_pubsub_messages)",
            subjects=[settings.subjects + ".>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            max_age=settings.max_age,
            duplicate_window=settings.duplicate_window,
            num_replicas=settings.replicas,
            allow_direct=True,
        )
        jsm = self.manager()
        with translate_errors("open"):
            try:
                info = await jsm.stream_info(settings.stream)
            except nats.js.errors.NotFoundError:
                try:
                    await jsm.add_stream(config)
                    return
                except nats.js.errors.BadRequestError:  # another node created it meanwhile
                    info = await jsm.stream_info(settings.stream)
            current = info.config
            if (
                abs((current.max_age or 0) - settings.max_age) > 1
                or abs((current.duplicate_window or 0) - settings.duplicate_window) > 1
                or not current.allow_direct
            ):
                log.info("updating the limits of stream %s", settings.stream)
                await jsm.update_stream(_updated(current, settings))

    async def _ensure_bucket(self, bucket: str, ttl: float) -> KeyValue:
        js = self._jetstream()
        with translate_errors("open"):
            try:
                return await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                pass
            try:
                return await js.create_key_value(
                    api.KeyValueConfig(
                        bucket=bucket,
                        history=1,
                        ttl=ttl or None,
                        storage=api.StorageType.FILE,
                        replicas=self.settings.replicas,
                    )
                )
            except nats.js.errors.BadRequestError:  # another node created it meanwhile
                return await js.key_value(bucket)

    def bucket(self, name: str) -> KeyValue:
        self.connection()
        return self._buckets[name]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), CONNECT_TIMEOUT)

    async def stream_state(self) -> api.StreamState:
        """The message stream's state (first and last sequence, count)."""
        with translate_errors("stream info"):
            info = await self.manager().stream_info(self.settings.stream)
        return info.state

    # ------------------------------------------------------------------ messages

    async def append(self, messages: Sequence[Message]) -> list[Message]:
        outgoing = [
            (
                self._subject(message.topic) if isinstance(message.topic, str) else "",
                encode_message(message),
                _id_header(message),
            )
            for message in messages
        ]
        if not self.connection().is_connected:
            raise StoreError("jetstream: append: not connected (reconnecting)")
        with translate_errors("append"):
            acks = await asyncio.wait_for(self._publish_all(outgoing), REQUEST_TIMEOUT)
        stored: list[Message] = []
        by_seq: dict[int, Message] = {}
        for message, (seq, duplicate) in zip(messages, acks, strict=True):
            if not duplicate:
                message.seq = seq
                by_seq[seq] = message
                stored.append(message)
            elif seq in by_seq:  # its key came earlier in this batch
                stored.append(by_seq[seq])
            else:
                first = await self._first_copy(message, seq)
                by_seq[first.seq] = first
                stored.append(first)
        return stored

    def _subject(self, topic: str) -> str:
        subject = self._subject_of.get(topic)
        if subject is None:
            if len(self._subject_of) >= _SUBJECT_CACHE_SIZE:
                self._subject_of.clear()
            subject = self._subject_of[topic] = topic_subject(self.settings.subjects, topic)
        return subject

    async def _publish_all(
        self, outgoing: Sequence[tuple[str, bytes, dict[str, str] | None]]
    ) -> list[tuple[int, bool]]:
        """Publish in order without waiting in between, then wait for every ack.

        Returns each message's stream sequence and whether JetStream found it a
        duplicate. Each publish names its own reply subject under this store's
        ack inbox, so the acks come back to ``_acked`` whatever their order;
        everything this batch registered is removed again, whether it succeeded
        or not. One future per batch, not per message: this runs for every
        message a node publishes.
        """
        if not outgoing:
            return []
        nc = self.connection()
        if self._ack_prefix is None:
            self._ack_prefix = nc.new_inbox()
            with translate_errors("append"):
                await nc.subscribe(self._ack_prefix + ".*", cb=self._acked)
        prefix = self._ack_prefix + "."
        wait = _AckWait(len(outgoing), asyncio.get_running_loop().create_future())
        first = self._next_ack
        self._next_ack += len(outgoing)
        awaiting = self._awaiting_acks
        try:
            for n, (subject, payload, headers) in enumerate(outgoing, first):
                awaiting[n] = (wait, n - first)
                await nc.publish(subject, payload, reply=prefix + str(n), headers=headers)
            await wait.done
        finally:
            for n in range(first, first + len(outgoing)):
                awaiting.pop(n, None)
        acks: list[tuple[int, bool]] = []
        for reply in wait.replies:
            assert reply is not None  # ``done`` is set once every reply came
            if reply.headers and reply.headers.get(api.Header.STATUS) == "503":
                raise StoreError("jetstream: append: no stream answers (503)")
            answer = orjson.loads(reply.data)
            if "error" in answer:
                raise nats.js.errors.APIError.from_error(answer["error"])
            acks.append((answer["seq"], bool(answer.get("duplicate"))))
        return acks

    async def _acked(self, msg: Msg) -> None:
        try:
            n = int(msg.subject.rsplit(".", 1)[1])
        except ValueError:
            return
        waiting = self._awaiting_acks.pop(n, None)
        if waiting is not None:
            waiting[0].arrived(waiting[1], msg)

    async def _first_copy(self, message: Message, seq: int) -> Message:
        """The message stored first with ``message``'s key, at ``seq`` (duplicate detection).

        If it was pruned meanwhile (the duplicate window outlives it), ``message``
        is stored now, under an id derived from the pruned one's sequence: a
        retry of it finds this copy in turn.
        """
        for _attempt in range(3):
            with translate_errors("append"):
                try:
                    raw = await self.manager().get_msg(self.settings.stream, seq, direct=True)
                except nats.js.errors.NotFoundError:
                    raw = None
                if raw is not None and raw.data is not None:
                    first = decode_message(raw.data, seq)
                    return replace(message, id=first.id, created=first.created, seq=seq)
                assert message.created_by is not None
                assert message.key is not None
                headers = {"Nats-Msg-Id": message_id_header(message.created_by, message.key, seq)}
                ack = await self._jetstream().publish(
                    topic_subject(self.settings.subjects, message.topic),
                    encode_message(message),
                    headers=headers,
                )
            if not ack.duplicate:
                message.seq = ack.seq
                return message
            seq = ack.seq
        raise StoreError("jetstream: append: the first copy of a keyed message keeps vanishing")

    async def _scan(
        self,
        filter_subject: str,
        start: int,
        *,
        limit: int,
        through: int | None = None,
        accept: Callable[[Msg], bool] | None = None,
        stream: str | None = None,
        last_per_subject: bool = False,
    ) -> list[Msg]:
        """At most ``limit`` stream messages on ``filter_subject`` from ``start``, by sequence.

        Stops after ``through`` (when given) and at the end of the stream; only the
        messages ``accept`` takes count (all when it is None). ``last_per_subject``
        reads the newest message of each subject instead (for KV buckets). Reads
        through an ephemeral pull consumer, deleted afterwards.
        """
        out: list[Msg] = []
        if limit <= 0 or (through is not None and start > through):
            return out
        stream = stream or self.settings.stream
        nc = self.connection()
        with translate_errors("read"):
            inbox = nc.new_inbox()
            subscription = await nc.subscribe(inbox)
            try:
                if last_per_subject:
                    config = api.ConsumerConfig(
                        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                        ack_policy=api.AckPolicy.NONE,
                        filter_subject=filter_subject,
                        mem_storage=True,
                        num_replicas=1,
                        inactive_threshold=30.0,
                    )
                else:
                    config = api.ConsumerConfig(
                        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                        opt_start_seq=max(1, start),
                        ack_policy=api.AckPolicy.NONE,
                        filter_subject=filter_subject,
                        mem_storage=True,
                        num_replicas=1,
                        inactive_threshold=30.0,
                    )
                info = await self.manager().add_consumer(stream, config)
                try:
                    await self._pull(info, inbox, subscription, out, limit, through, accept)
                finally:
                    with contextlib.suppress(Exception):
                        await self.manager().delete_consumer(stream, info.name)
            finally:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
        return out

    async def _pull(
        self,
        info: api.ConsumerInfo,
        inbox: str,
        subscription: Any,
        out: list[Msg],
        limit: int,
        through: int | None,
        accept: Callable[[Msg], bool] | None,
    ) -> None:
        nc = self.connection()
        pending = info.num_pending or 0
        request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{info.stream_name}.{info.name}"
        while pending > 0 and len(out) < limit:
            wanted = min(pending, _SCAN_BATCH)
            await nc.publish(
                request_subject, orjson.dumps({"batch": wanted, "no_wait": True}), reply=inbox
            )
            got = 0
            while got < wanted:
                msg = await subscription.next_msg(timeout=REQUEST_TIMEOUT)
                status = msg.headers.get(api.Header.STATUS) if msg.headers else None
                if status is not None:
                    if status in ("404", "408"):  # no more messages
                        pending = 0
                        break
                    if status == "100":  # a heartbeat
                        continue
                    description = (msg.headers or {}).get(api.Header.DESCRIPTION, "")
                    raise StoreError(f"jetstream: read: {status} {description}")
                got += 1
                metadata = msg.metadata
                pending = metadata.num_pending
                if through is not None and metadata.sequence.stream > through:
                    return
                if accept is None or accept(msg):
                    out.append(msg)
                    if len(out) >= limit:
                        return
            if got == 0:
                return

    def _messages(self, raw: Sequence[Msg]) -> list[Message]:
        return [decode_message(msg.data, msg.metadata.sequence.stream) for msg in raw]

    async def read_topic(self, topic: str, after: int, through: int, limit: int) -> list[Message]:
        subject = topic_subject(self.settings.subjects, topic)
        return self._messages(await self._scan(subject, after + 1, limit=limit, through=through))

    async def read_prefix(self, prefix: str, after: int, through: int, limit: int) -> list[Message]:
        subject, exact = prefix_filter(self.settings.subjects, prefix)
        accept = None if exact else _topic_starts_with(prefix)
        raw = await self._scan(subject, after + 1, limit=limit, through=through, accept=accept)
        return self._messages(raw)

    async def browse(self, topic: str | None, before: int | None, limit: int) -> list[Message]:
        # No consumer reads backwards: windows of growing size, each read forwards.
        state = await self.stream_state()
        if limit <= 0 or state.messages == 0:
            return []
        subject = (
            topic_subject(self.settings.subjects, topic)
            if topic is not None
            else self.settings.subjects + ".>"
        )
        high = state.last_seq if before is None else min(before - 1, state.last_seq)
        first = max(1, state.first_seq)
        span = max(limit, 16) if topic is None else max(limit * 8, 256)
        found: list[Message] = []
        while high >= first and len(found) < limit:
            low = max(first, high - span + 1)
            window = await self._scan(subject, low, limit=high - low + 1, through=high)
            found.extend(reversed(self._messages(window)[-(limit - len(found)) :]))
            high, span = low - 1, span * 2
        return found

    async def positions(self) -> Positions:
        state = await self.stream_state()
        pruned = max(0, state.first_seq - 1) if state.last_seq else 0
        return Positions(newest=state.last_seq, pruned_through=pruned)

    async def prune(self, before: str, limit: int) -> int:
        state = await self.stream_state()
        if state.messages == 0 or limit <= 0:
            return 0
        oldest = self._messages(
            await self._scan(self.settings.subjects + ".>", state.first_seq, limit=limit)
        )
        cut = next((m.seq for m in oldest if m.created >= before), None)
        if cut is None:
            if not oldest:
                return 0
            cut = oldest[-1].seq + 1
        deleted = sum(1 for m in oldest if m.seq < cut)
        if deleted:
            with translate_errors("prune"):
                # Everything below cut: always a prefix of the stream.
                await self.manager().purge_stream(self.settings.stream, seq=cut)
        return deleted

    async def ping(self) -> None:
        await self.stream_state()

    def feed(self, *, skip_origin: str) -> Feed:
        return JetStreamFeed(self, skip_origin=skip_origin)

    # ------------------------------------------------------------------ KV helpers

    async def kv_values(self, bucket: str, prefix: str) -> list[tuple[str, bytes]]:
        """Every live ``(key, value)`` of ``bucket`` whose key starts with ``prefix.``."""
        self.connection()
        subject = f"$KV.{bucket}.{prefix}.>" if prefix else f"$KV.{bucket}.>"
        raw = await self._scan(
            subject, 0, limit=10**9, stream=f"KV_{bucket}", last_per_subject=True
        )
        head = len(f"$KV.{bucket}.")
        return [
            (msg.subject[head:], msg.data)
            for msg in raw
            if not (msg.headers and msg.headers.get(_KV_OPERATION) in ("DEL", "PURGE"))
        ]

    # ------------------------------------------------------------------ nodes

    async def report_node(self, node_id: str, report: bytes) -> None:
        value = orjson.dumps({"node": node_id, "at": time.time()}) + b"\n" + report
        with translate_errors("report node"):
            await self.bucket(self.settings.nodes_bucket).put(kv_key(node_id), value)

    async def forget_node(self, node_id: str) -> None:
        with translate_errors("forget node"):
            await self.bucket(self.settings.nodes_bucket).delete(kv_key(node_id))

    async def node_reports(self, within: float) -> dict[str, bytes]:
        horizon = time.time() - within
        reports: dict[str, bytes] = {}
        for _key, value in await self.kv_values(self.settings.nodes_bucket, ""):
            head, _, report = value.partition(b"\n")
            meta = orjson.loads(head)
            if meta["at"] >= horizon:
                reports[meta["node"]] = report
        return dict(sorted(reports.items()))

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        bucket = self.bucket(self.settings.locks_bucket)
        key = kv_key(name)
        try:
            with translate_errors(f"lock {name}"):
                await bucket.create(key, b"held")
            held = True
        except DuplicateRecordError:
            held = False
        try:
            yield held
        finally:
            if held:
                with contextlib.suppress(Exception):
                    await bucket.delete(key)


def _id_header(message: Message) -> dict[str, str] | None:
    if message.key is None or message.created_by is None:
        return None
    return {"Nats-Msg-Id": message_id_header(message.created_by, message.key)}


def _updated(current: api.StreamConfig, settings: JetStreamSettings) -> api.StreamConfig:
    current.max_age = settings.max_age
    current.duplicate_window = settings.duplicate_window
    current.allow_direct = True
    return current


def _topic_starts_with(prefix: str) -> Callable[[Msg], bool]:
    def accept(msg: Msg) -> bool:
        return decode_message(msg.data, 0).topic.startswith(prefix)

    return accept


class JetStreamAccounts(AccountStore):
    """Accounts and secrets in a KV bucket: every node sees the same ones.

    Keys: ``<collection>.id.<id>`` holds the record (JSON), and
    ``<collection>.email.<lowercased email>`` its id (created only if absent:
    that is what keeps emails unique); ``secret.<name>`` a secret. Every part
    base64url (``kv_key``).
    """

    def __init__(self, store: JetStreamStore) -> None:
        self._store = store

    def _bucket(self) -> KeyValue:
        return self._store.bucket(self._store.settings.accounts_bucket)

    async def _get(self, key: str) -> bytes | None:
        with translate_errors("find account"):
            try:
                entry = await self._bucket().get(key)
            except nats.js.errors.KeyNotFoundError:  # KeyDeletedError included
                return None
        return entry.value

    async def find_by_email(self, collection: str, email: str) -> AuthRecord | None:
        table = self._table(collection)
        record_id = await self._get(kv_key(table, "email", email.lower()))
        if record_id is None:
            return None
        return await self.find_by_id(collection, record_id.decode())

    async def find_by_id(self, collection: str, record_id: str) -> AuthRecord | None:
        table = self._table(collection)
        value = await self._get(kv_key(table, "id", record_id))
        return None if value is None else AuthRecord(**orjson.loads(value))

    async def insert(self, record: AuthRecord) -> None:
        table = self._table(record.collection)
        bucket = self._bucket()
        email_key = kv_key(table, "email", record.email.lower())
        with translate_errors("insert account"):
            await bucket.create(email_key, record.id.encode())  # DuplicateRecordError if taken
        try:
            with translate_errors("insert account"):
                await bucket.put(kv_key(table, "id", record.id), orjson.dumps(asdict(record)))
        except StoreError:
            with contextlib.suppress(Exception):
                await bucket.delete(email_key)
            raise

    async def update_password(
        self, collection: str, record_id: str, password_hash: str, token_key: str, updated: str
    ) -> None:
        record = await self.find_by_id(collection, record_id)
        if record is None:
            return
        changed = replace(record, password_hash=password_hash, token_key=token_key, updated=updated)
        with translate_errors("update account"):
            await self._bucket().put(
                kv_key(self._table(collection), "id", record_id), orjson.dumps(asdict(changed))
            )

    async def _all(self, collection: str) -> list[AuthRecord]:
        table = self._table(collection)
        prefix = kv_key(table, "id")
        values = await self._store.kv_values(self._store.settings.accounts_bucket, prefix)
        return [AuthRecord(**orjson.loads(value)) for _key, value in values]

    async def list_records(self, collection: str, *, offset: int, limit: int) -> list[AuthRecord]:
        records = sorted(await self._all(collection), key=lambda r: (r.created, r.id), reverse=True)
        return records[offset : offset + limit]

    async def count(self, collection: str) -> int:
        return len(await self._all(collection))

    async def delete(self, collection: str, record_id: str) -> bool:
        record = await self.find_by_id(collection, record_id)
        if record is None:
            return False
        table = self._table(collection)
        with translate_errors("delete account"):
            await self._bucket().delete(kv_key(table, "id", record_id))
            await self._bucket().delete(kv_key(table, "email", record.email.lower()))
        return True

    async def secret(self, name: str, candidate: str) -> str:
        key = kv_key("secret", name)
        try:
            with translate_errors("secret"):
                await self._bucket().create(key, candidate.encode())
            return candidate
        except DuplicateRecordError:
            value = await self._get(key)
        if value is None:
            raise StoreError("jetstream: secret: vanished right after it was stored")
        return value.decode()


_SUBJECT_CACHE_SIZE = 10_000


class _AckWait:
    """One batch's publishes waiting for their acks from JetStream."""

    __slots__ = ("done", "missing", "replies")

    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.replies: list[Msg | None] = [None] * size
        self.missing = size
        self.done = done
        """Resolved once every reply came (never, if one does not: the caller times out)."""

    def arrived(self, index: int, reply: Msg) -> None:
        if self.replies[index] is None:
            self.replies[index] = reply
            self.missing -= 1
            if not self.missing and not self.done.done():
                self.done.set_result(None)
