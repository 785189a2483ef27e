"""What the JetStream store and its feed share: the URL, the names, the message layout.

Its own module so that ``jetstream`` (which opens feeds) and ``jetstream_feed``
(which uses these) do not import each other.

Layout, all under one stream (``stream``, by default ``_pubsub_messages``):

* One subject per topic: ``<subjects>.<segment>.<segment>...``, a topic's
  ``/``-separated segments each made a valid subject token (``encode_token``).
  So a topic is a subject filter, and a topic prefix ending in ``/`` is one
  too (``chat/`` is ``<subjects>.chat.>``): replays read only what they need.
* A stored message is its metadata as one line of compact JSON (id, topic,
  origin, publisher, created, key), a newline, then the payload: JSON never
  holds a raw newline, so the split is unambiguous, and no header has to carry
  arbitrary text.
* A publish with an idempotence key carries ``Nats-Msg-Id``, built from the
  publisher and the key (``message_id_header``): JetStream stores it once
  within the stream's duplicate window and acks a repeat with the first
  message's sequence.
* ``seq`` is the stream sequence.
* Accounts, secrets, node reports and locks live in KV buckets named after the
  stream (``<stream>_accounts``, ``<stream>_nodes``, ``<stream>_locks``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats.errors
import nats.js.errors
import orjson

from ..config import parse_duration
from .base import DuplicateRecordError, Message, StoreError

DEFAULT_STREAM = "_pubsub_messages"
DEFAULT_MAX_AGE = 24 * 3600.0
"""Seconds JetStream keeps a message (its own retention, on top of ``--retention``)."""
REQUEST_TIMEOUT = 10.0
"""Seconds any JetStream request may take before the store counts as failed."""
CONNECT_TIMEOUT = 5.0
"""Seconds to connect before the server counts as unreachable."""

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~:@+=,!")
_QUERY_KEYS = (
    "stream",
    "subjects",
    "max_age",
    "duplicate_window",
    "replicas",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "nkey",
    "creds",
)
_FILE_KEYS = ("tls_ca", "tls_cert", "tls_key", "nkey", "creds")


@dataclass(frozen=True, slots=True)
class JetStreamSettings:
    """A ``nats://`` store URL, read: where the server is, how to sign in, the store's name.

    ``nats://[USER:PASSWORD@ | TOKEN@]HOST[:PORT][?stream=NAME&subjects=PREFIX&max_age=24h
    &duplicate_window=24h&replicas=1&tls_ca=FILE&tls_cert=FILE&tls_key=FILE&nkey=FILE
    &creds=FILE]``;
    ``tls://`` instead of ``nats://``, or any ``tls_`` option, makes TLS required.
    """

    server: str
    """The URL nats-py connects to (credentials included, no query)."""
    stream: str = DEFAULT_STREAM
    subjects: str = DEFAULT_STREAM
    """The subject prefix of the stream: ``<subjects>.<topic tokens>``."""
    max_age: float = DEFAULT_MAX_AGE
    duplicate_window: float = DEFAULT_MAX_AGE
    """Seconds within which a repeated idempotence key is not stored again (at most ``max_age``)."""
    replicas: int = 1
    tls: bool = False
    """Whether the connection must be TLS (``tls://``, or a ``tls_`` option)."""
    tls_ca: str | None = None
    """PEM file of the certificate authorities to trust (default: the system's)."""
    tls_cert: str | None = None
    """PEM file of this client's certificate, for servers that verify clients (with ``tls_key``)."""
    tls_key: str | None = None
    nkey: str | None = None
    """File holding the NKEY seed (``SU...``) to sign in with."""
    creds: str | None = None
    """A ``.creds`` file (a user JWT and its NKEY seed: decentralized authentication)."""

    @property
    def where(self) -> str:
        """The server's URL without credentials: for messages and logs."""
        scheme, _, rest = self.server.partition("://")
        return f"{scheme}://{rest.rsplit('@', 1)[-1]}"

    @property
    def accounts_bucket(self) -> str:
        return f"{self.stream}_accounts"

    @property
    def nodes_bucket(self) -> str:
        return f"{self.stream}_nodes"

    @property
    def locks_bucket(self) -> str:
        return f"{self.stream}_locks"

    @property
    def buckets(self) -> tuple[str, ...]:
        """Every KV bucket of the store."""
        return (self.accounts_bucket, self.nodes_bucket, self.locks_bucket)


def parse_url(url: str) -> JetStreamSettings:
    """Read a ``nats://`` URL; raises ``ValueError`` saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls"):
        raise ValueError(f"not a nats:// or tls:// URL: {url!r}")
    try:
        port = parts.port
    except ValueError as error:
        raise ValueError(f"invalid nats URL {url!r}: bad port ({error})") from error
    if not parts.hostname:
        raise ValueError(f"invalid nats URL {url!r}: no host (use nats://HOST:4222)")
    if parts.path not in ("", "/"):
        raise ValueError(f"invalid nats URL {url!r}: no path expected (use ?stream=NAME)")
    try:
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        query = {} if not parts.query else {"": parts.query}
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise ValueError(
            f"invalid nats URL {url!r}: unknown option {unknown[0]!r}"
            f" (known: {', '.join(_QUERY_KEYS)})"
        )
    stream = query.get("stream", DEFAULT_STREAM)
    if not _NAME.fullmatch(stream):
        raise ValueError(
            f"invalid nats URL {url!r}: stream {stream!r} must be 1 to 64 letters,"
            " digits, '_' or '-'"
        )
    subjects = query.get("subjects", stream)
    if not all(token and bytes(token, "utf-8") == _safe(token) for token in subjects.split(".")):
        raise ValueError(
            f"invalid nats URL {url!r}: subjects {subjects!r} must be dot-separated"
            " tokens without wildcards or spaces"
        )
    max_age = _seconds(url, query, "max_age", DEFAULT_MAX_AGE)
    window = _seconds(url, query, "duplicate_window", min(max_age, DEFAULT_MAX_AGE))
    if window > max_age:
        raise ValueError(f"invalid nats URL {url!r}: duplicate_window exceeds max_age")
    replicas_text = query.get("replicas", "1")
    if not replicas_text.isdigit() or not 1 <= int(replicas_text) <= 5:
        raise ValueError(f"invalid nats URL {url!r}: replicas must be 1 to 5")
    files = {key: query[key] for key in _FILE_KEYS if key in query}
    for key, path in files.items():
        if not os.path.isfile(path):
            raise ValueError(f"invalid nats URL {url!r}: {key}: no such file {path!r}")
    if ("tls_cert" in files) != ("tls_key" in files):
        raise ValueError(f"invalid nats URL {url!r}: tls_cert and tls_key go together")
    if "nkey" in files and "creds" in files:
        raise ValueError(f"invalid nats URL {url!r}: nkey or creds, not both")
    tls = parts.scheme == "tls" or any(key.startswith("tls_") for key in files)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"{parts.hostname}:{port or 4222}"
    if ":" in parts.hostname:  # an IPv6 address
        host = f"[{parts.hostname}]:{port or 4222}"
    server = urlunsplit(
        ("tls" if tls else "nats", f"{netloc[0]}@{host}" if len(netloc) == 2 else host, "", "", "")
    )
    return JetStreamSettings(
        server=server,
        stream=stream,
        subjects=subjects,
        max_age=max_age,
        duplicate_window=window,
        replicas=int(replicas_text),
        tls=tls,
        tls_ca=files.get("tls_ca"),
        tls_cert=files.get("tls_cert"),
        tls_key=files.get("tls_key"),
        nkey=files.get("nkey"),
        creds=files.get("creds"),
    )


def connect_options(settings: JetStreamSettings) -> dict[str, Any]:
    """The security options of ``nats.connect`` for ``settings``: TLS, NKEY or creds sign-in.

    Raises ``StoreError`` when a certificate or key file cannot be read.
    """
    options: dict[str, Any] = {}
    if settings.tls:
        try:
            context = ssl.create_default_context(cafile=settings.tls_ca)
            if settings.tls_cert is not None:
                context.load_cert_chain(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as error:
            raise StoreError(f"jetstream: cannot read the TLS files: {error}") from error
        options["tls"] = context
    if settings.nkey is not None:
        options["nkeys_seed"] = settings.nkey
    if settings.creds is not None:
        options["user_credentials"] = settings.creds
    return options


async def probe_tls(settings: JetStreamSettings) -> None:
    """Before signing in: raise ``StoreError`` if TLS was asked for and the server lacks it.

    nats-py upgrades to TLS only when the server's greeting (``INFO``) requires
    it, and would otherwise send its credentials in plain text: this reads the
    greeting on a connection of its own first, and sends nothing.
    """
    if not settings.tls:
        return
    host, _, port = settings.where.partition("://")[2].rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), CONNECT_TIMEOUT
        )
        try:
            line = await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT)
        finally:
            writer.close()
    except (OSError, asyncio.TimeoutError) as error:
        detail = str(error) or type(error).__name__
        raise StoreError(f"jetstream: cannot connect to {settings.where}: {detail}") from error
    try:
        info = orjson.loads(line.removeprefix(b"INFO ")) if line.startswith(b"INFO ") else None
    except orjson.JSONDecodeError:
        info = None
    if not isinstance(info, dict):
        raise StoreError(f"jetstream: cannot connect to {settings.where}: not a NATS server")
    if not info.get("tls_required"):
        raise _plaintext(settings)


def check_secure(connection: Any, settings: JetStreamSettings) -> None:
    """Raise ``StoreError`` if TLS was asked for and ``connection``'s socket is not TLS.

    After ``probe_tls``, for a server that changed its mind in between (and on
    every reconnect, which nats-py makes on its own).
    """
    if not settings.tls:
        return
    transport = getattr(connection, "_transport", None)
    writer = getattr(transport, "_io_writer", None)
    if writer is None or writer.get_extra_info("ssl_object") is None:
        raise _plaintext(settings)


def _plaintext(settings: JetStreamSettings) -> StoreError:
    return StoreError(
        f"jetstream: cannot connect to {settings.where}: TLS was asked for"
        " (tls:// or a tls_ option) and the server does not offer it"
    )


def _seconds(url: str, query: dict[str, str], key: str, default: float) -> float:
    if key not in query:
        return default
    try:
        seconds = parse_duration(query[key]).total_seconds()
    except ValueError as error:
        raise ValueError(f"invalid nats URL {url!r}: {key}: {error}") from error
    if seconds <= 0:
        raise ValueError(f"invalid nats URL {url!r}: {key} must be positive")
    return seconds


def _safe(text: str) -> bytes:
    return bytes(byte for byte in text.encode() if byte in _TOKEN_SAFE)


# ---------------------------------------------------------------------- subjects


def encode_token(segment: str) -> str:
    """A topic segment as a subject token: safe bytes as they are, the rest ``%XX``.

    Injective (``%`` itself is escaped), never empty (an empty segment is ``%``),
    never a wildcard and never holding a ``.`` or a space.
    """
    if not segment:
        return "%"
    return "".join(
        chr(byte) if byte in _TOKEN_SAFE else f"%{byte:02X}" for byte in segment.encode()
    )


def topic_subject(subjects: str, topic: str) -> str:
    """The subject that ``topic``'s messages are stored under."""
    return subjects + "." + ".".join(encode_token(segment) for segment in topic.split("/"))


def delivery_sequences(reply: str | None) -> tuple[int, int] | None:
    """(stream sequence, consumer sequence) of a JetStream delivery, from its reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``,
    or the newer form with a domain and an account hash after ``$JS.ACK`` (11 tokens
    or more); ``None`` for anything else. nats-py's ``Msg.metadata`` reads the same
    subject but builds three objects and a datetime for each message, a sixth of a
    feed's time per message.
    """
    if not reply:
        return None
    tokens = reply.split(".")
    if tokens[0] != "$JS" or len(tokens) < 9 or tokens[1] != "ACK":
        return None
    try:
        if len(tokens) == 9:
            return int(tokens[5]), int(tokens[6])
        if len(tokens) >= 11:
            return int(tokens[7]), int(tokens[8])
    except ValueError:
        return None
    return None


def prefix_filter(subjects: str, prefix: str) -> tuple[str, bool]:
    """The subject filter for the topics starting with ``prefix``, and whether it is exact.

    Exact when ``prefix`` is empty or ends with ``/``; otherwise the filter
    covers more (the topics under its last whole segment) and the caller
    checks ``topic.startswith(prefix)`` itself.
    """
    whole = prefix[: prefix.rfind("/") + 1]
    segments = whole.split("/")[:-1]
    tokens = [encode_token(segment) for segment in segments]
    return ".".join([subjects, *tokens, ">"]), whole == prefix


# ---------------------------------------------------------------------- messages


def encode_message(message: Message) -> bytes:
    """The stored form: one JSON line of metadata, then the payload."""
    if not isinstance(message.topic, str) or not isinstance(message.data, bytes):
        raise StoreError("jetstream: append: a message needs a topic and a payload")
    meta = {
        "i": message.id,
        "t": message.topic,
        "o": message.origin,
        "b": message.created_by,
        "c": message.created,
        "k": message.key,
    }
    return orjson.dumps(meta) + b"\n" + message.data


def decode_message(data: bytes, seq: int) -> Message:
    """A stored message (``encode_message``'s output) at stream sequence ``seq``."""
    head, _, payload = data.partition(b"\n")
    meta = orjson.loads(head)
    return Message(
        id=meta["i"],
        topic=meta["t"],
        data=payload,
        created=meta["c"],
        origin=meta["o"],
        created_by=meta["b"],
        seq=seq,
        key=meta["k"],
    )


def message_id_header(created_by: str, key: str, attempt: int = 0) -> str:
    """``Nats-Msg-Id`` for a keyed publish: each part base64url, so any key is a valid value.

    ``attempt`` (the stream sequence of a first copy already pruned, see
    ``JetStreamStore.append``) makes a new id that is just as deterministic.
    """
    parts = [_b64(created_by), _b64(key)]
    if attempt:
        parts.append(str(attempt))
    return ".".join(parts)


def kv_key(*parts: str) -> str:
    """A KV key from arbitrary text parts (each base64url: KV keys allow few characters)."""
    return ".".join(_b64(part) for part in parts)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=") or "="


# ---------------------------------------------------------------------- errors

CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    OSError,
    asyncio.TimeoutError,
)
"""What ``translate_errors`` turns into ``StoreError``: nats-py's (JetStream's included) and
the socket's."""


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn client and socket errors into ``StoreError`` (the one place that does)."""
    try:
        yield
    except nats.js.errors.KeyWrongLastSequenceError as error:
        raise DuplicateRecordError(f"jetstream: {action}: already taken") from error
    except CLIENT_ERRORS as error:
        detail = str(error) or type(error).__name__
        raise StoreError(f"jetstream: {action}: {detail}") from error


async def delete_store(url: str) -> None:
    """Delete the stream of ``url`` and its KV buckets: every message, account and
    secret of that store (for throw-away stores: tests and benchmarks)."""
    import nats

    settings = parse_url(url)
    await probe_tls(settings)
    connection = await asyncio.wait_for(
        nats.connect(
            settings.server,
            connect_timeout=CONNECT_TIMEOUT,
            max_reconnect_attempts=0,
            **connect_options(settings),
        ),
        2 * CONNECT_TIMEOUT,
    )
    try:
        check_secure(connection, settings)
        manager = connection.jsm()
        for name in (settings.stream, *(f"KV_{bucket}" for bucket in settings.buckets)):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await manager.delete_stream(name)
    finally:
        await connection.close()
