"""The BosBase pub/sub wire contract, as pure functions and values (no I/O).

Both the server and the SDK import this module, so it depends on nothing but
orjson. It turns a client frame into one typed request (or a contract error),
and builds the server's reply frames. See ``shared/protocol.md`` in the
project's steering folder and ``docs/reference/protocol.md``.

Rules kept here (the contract's, exactly):

* every frame is one JSON object; anything else is ``invalid message format``
  with no ``requestId``;
* ``type`` is matched after trimming and lower-casing, ``topic`` is trimmed;
* fields that are empty are left out of replies, ``requestId`` included;
* a publish without ``data`` carries ``null``; its raw ``data`` is at most
  256 KiB.

Extensions (ours, see ``docs/reference/resume.md``): a ``subscribe`` may carry
``since`` (a position) and, with ``unsubscribe``, ``pattern`` (``true``: the
topic is a wildcard pattern), a ``publish`` may carry ``key`` (idempotence), and
``message``, ``published`` and ``subscribed`` may carry ``position`` (and
``subscribed`` a ``replay`` status). Frames without them are exactly the
contract's.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

MAX_PAYLOAD_BYTES: Final = 256 * 1024
"""The largest raw ``data`` a publish may carry, in bytes, as the client sent it."""
MAX_STORED_PAYLOAD_BYTES: Final = 2 * MAX_PAYLOAD_BYTES
"""The largest ``data`` stored, as compact JSON: a number written short (``1e9``)
compacts longer (``1000000000.0``), so data within the raw limit may exceed it."""

# The contract's error messages; the official SDKs show them to users verbatim.
ERR_TOPIC_REQUIRED: Final = "topic must be set"
ERR_AUTH_REQUIRED: Final = "authentication required to publish"
ERR_PAYLOAD_TOO_LARGE: Final = "payload too large"
ERR_PAYLOAD_INVALID: Final = "payload must be valid JSON"
ERR_PUBLISH_FAILED: Final = "failed to publish message"
ERR_UNSUPPORTED_TYPE: Final = "unsupported pubsub message type"
ERR_INVALID_FORMAT: Final = "invalid message format"

# Ours (extensions); official SDKs never trigger them.
MAX_KEY_LENGTH: Final = 128
"""The longest idempotence ``key`` a publish may carry, in characters."""
ERR_KEY_TOO_LONG: Final = f"publish key is too long (at most {MAX_KEY_LENGTH} characters)"
ERR_TOPIC_NUL: Final = "topic must not contain the NUL character (U+0000)"
ERR_KEY_NUL: Final = "publish key must not contain the NUL character (U+0000)"
ERR_PAYLOAD_TOO_DEEP: Final = "payload is nested too deeply"
ERR_TOKEN_INVALID: Final = "invalid or expired auth token"
"""``auth`` with a token that proves nothing; the connection keeps its identity."""
ERR_TOKEN_UNCHECKED: Final = "cannot check the auth token now, try again"
"""``auth`` while the account store is unavailable; the connection keeps its identity."""
ERR_FORBIDDEN: Final = "forbidden by the topic rules"
"""A subscribe or publish the server's topic rules refuse for this identity (an
anonymous publish gets the contract's ``ERR_AUTH_REQUIRED`` instead); also the
message of a subscription withdrawn after the identity changed (``topic_error_frame``)."""

REPLAY_COMPLETE: Final = "complete"
"""``subscribed.replay``: every message of the topic stored after ``since`` is replayed."""
REPLAY_PRUNED: Final = "pruned"
"""``subscribed.replay``: retention deleted messages after ``since``: some may be missing."""
REPLAY_UNKNOWN: Final = "unknown"
"""``subscribed.replay``: ``since`` is not a position of this database; nothing is replayed."""

CONTRACT_ERRORS: Final = frozenset(
    {
        ERR_TOPIC_REQUIRED,
        ERR_AUTH_REQUIRED,
        ERR_PAYLOAD_TOO_LARGE,
        ERR_PAYLOAD_INVALID,
        ERR_PUBLISH_FAILED,
        ERR_UNSUPPORTED_TYPE,
        ERR_INVALID_FORMAT,
    }
)


# --- Requests (client to server) ----------------------------------------------------
# Not frozen: a frozen dataclass pays about a microsecond per instance to set
# its fields, and one is made for every frame. Nothing changes them after parsing.


@dataclass(slots=True)
class Ping:
    request_id: str


@dataclass(slots=True)
class Subscribe:
    request_id: str
    topic: str
    since: str = ""
    """The position to resume after (ours: ``EPOCH:SEQ``, opaque to clients); empty: none."""
    pattern: bool = False
    """Ours (``"pattern": true``): ``topic`` is a pattern of ``*`` and ``**`` segments."""


@dataclass(slots=True)
class Unsubscribe:
    request_id: str
    topic: str
    """The topic to leave; empty means every topic."""
    pattern: bool = False
    """Ours: ``topic`` names a pattern subscription (as subscribed with ``"pattern": true``)."""


@dataclass(slots=True)
class Publish:
    request_id: str
    topic: str
    data: bytes
    """The payload as compact JSON text (``b"null"`` when the frame had none)."""
    key: str = ""
    """The publisher's idempotence key (at most ``MAX_KEY_LENGTH`` characters); empty: none."""


@dataclass(frozen=True, slots=True)
class RequestError:
    """A frame the contract rejects; ``message`` is one of the contract's errors."""

    request_id: str
    message: str


@dataclass(slots=True)
class Auth:
    """Ours: replace the connection's token without reconnecting (``""``: sign out)."""

    request_id: str
    token: str


Request = Ping | Subscribe | Unsubscribe | Publish | Auth | RequestError


def parse_request(frame: str | bytes) -> Request:
    """Read one client frame into a request, or the contract error it earns.

    Never raises: a frame that is not a JSON object with string fields gives
    ``RequestError(message=ERR_INVALID_FORMAT)`` without a request id.
    """
    raw = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
    envelope, exotic = _decode(raw)
    if not isinstance(envelope, dict):
        return RequestError("", ERR_INVALID_FORMAT)

    kind = envelope.get("type", "")
    topic = envelope.get("topic", "")
    request_id = envelope.get("requestId", "")
    # The reference server decodes into typed string fields: any other JSON
    # type there fails the whole frame. ``null`` decodes to the empty string.
    kind = "" if kind is None else kind
    topic = "" if topic is None else topic
    request_id = "" if request_id is None else request_id
    if not (isinstance(kind, str) and isinstance(topic, str) and isinstance(request_id, str)):
        return RequestError("", ERR_INVALID_FORMAT)
    if exotic:
        # Decoded by the standard library: its strings may hold lone surrogates,
        # which no reply, socket or store can carry.
        if not is_unicode(request_id):
            return RequestError("", ERR_INVALID_FORMAT)
        fields = (kind, topic, envelope.get("key"), envelope.get("since"), envelope.get("token"))
        if not all(is_unicode(field) for field in fields if isinstance(field, str)):
            return RequestError(request_id, ERR_INVALID_FORMAT)

    kind = kind.strip().lower()
    topic = topic.strip()
    if kind == "publish":  # the most frequent, first
        if not topic:
            return RequestError(request_id, ERR_TOPIC_REQUIRED)
        if "\x00" in topic:
            return RequestError(request_id, ERR_TOPIC_NUL)
        key = envelope.get("key")
        key = "" if key is None else key
        if not isinstance(key, str):
            return RequestError(request_id, ERR_INVALID_FORMAT)
        if len(key) > MAX_KEY_LENGTH:
            return RequestError(request_id, ERR_KEY_TOO_LONG)
        if "\x00" in key:
            return RequestError(request_id, ERR_KEY_NUL)
        data = publish_payload(envelope, raw)
        if isinstance(data, str):
            return RequestError(request_id, data)
        return Publish(request_id, topic, data, key)
    if kind == "ping":
        return Ping(request_id)
    if kind == "subscribe":
        if not topic:
            return RequestError(request_id, ERR_TOPIC_REQUIRED)
        if "\x00" in topic:
            return RequestError(request_id, ERR_TOPIC_NUL)
        pattern = envelope.get("pattern") is True
        since = envelope.get("since")
        if since is None or since == "":
            return Subscribe(request_id, topic, "", pattern)
        if not isinstance(since, str):
            return RequestError(request_id, ERR_INVALID_FORMAT)
        # A malformed position is not an error: the ack says ``unknown``.
        return Subscribe(request_id, topic, since.strip(), pattern)
    if kind == "unsubscribe":
        return Unsubscribe(request_id, topic, envelope.get("pattern") is True)
    if kind == "auth":
        token = envelope.get("token")
        token = "" if token is None else token
        if not isinstance(token, str):
            return RequestError(request_id, ERR_INVALID_FORMAT)
        return Auth(request_id, token.strip())
    return RequestError(request_id, ERR_UNSUPPORTED_TYPE)


_INVALID = object()
# Maps every digit to "0", so that a run of digits is a run of zeros: a
# substring search of the translated frame finds one several times faster than
# a regular expression does (this runs for every frame). 20 digits may exceed
# 64 bits unsigned, a minus and 19 digits 64 bits signed.
_DIGITS_TO_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_TWENTY_ZEROS = b"0" * 20
_MINUS_NINETEEN_ZEROS = b"-" + b"0" * 19


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Unrepresentable:
    """A number the standard library read as infinite (``1e400``): valid JSON, but no
    double holds it, so it cannot be stored or relayed as the same value."""

    __slots__ = ()


_UNREPRESENTABLE = _Unrepresentable()


def _float_or_unrepresentable(text: str) -> float | _Unrepresentable:
    number = float(text)
    return number if math.isfinite(number) else _UNREPRESENTABLE


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate, which UTF-8 cannot hold)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _utf8(frame: str | bytes) -> bytes:
    # ``surrogatepass``: a str holding a lone surrogate gives bytes no decoder takes,
    # instead of an exception (a socket library hands over valid text anyway).
    return frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame


def decode_json(frame: str | bytes) -> Any:
    """Decode JSON text, or return a sentinel that is no JSON value (never raises)."""
    return _decode(_utf8(frame))[0]


def _decode(raw: bytes) -> tuple[Any, bool]:
    """The decoded value, and whether the standard library decoded it (never raises).

    orjson is the fast path, but it reads integers beyond 64 bits as floats
    and so changes them; a frame holding a run of 20 or more digits (19
    after a minus) goes to the standard library instead, which keeps them
    exact (with the non-standard ``NaN`` and ``Infinity`` refused). So does
    valid JSON that orjson refuses (a lone surrogate escape, a number beyond a
    double, nesting past its limit): then the frame's request id is still
    known, and the request gets its error instead of none.
    """
    digits = raw.translate(_DIGITS_TO_ZEROS)
    if _TWENTY_ZEROS not in digits and _MINUS_NINETEEN_ZEROS not in digits:
        try:
            return orjson.loads(raw), False
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(
            raw, parse_constant=_reject_constant, parse_float=_float_or_unrepresentable
        ), True
    except (ValueError, TypeError, RecursionError):
        return _INVALID, False


def encode_payload(value: Any, *, limit: int = MAX_PAYLOAD_BYTES) -> bytes | str:
    """Compact a decoded ``data`` value, or return the contract error it earns.

    ``limit``: the most bytes the compact form may take (``ERR_PAYLOAD_TOO_LARGE``).
    """
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError:
        try:
            # Integers beyond 64 bits (see ``decode_json``) and very deep nesting.
            data = json.dumps(
                value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode()
        except RecursionError:
            return ERR_PAYLOAD_TOO_DEEP
        except (TypeError, ValueError):  # a lone surrogate, an unrepresentable number
            return ERR_PAYLOAD_INVALID
    if len(data) > limit:
        return ERR_PAYLOAD_TOO_LARGE
    return data


def publish_payload(envelope: dict[str, Any], raw: bytes) -> bytes | str:
    """The compact ``data`` of a publish envelope (decoded from ``raw``), or the error.

    The contract limits the raw ``data``, as sent: over ``MAX_PAYLOAD_BYTES`` it
    is ``payload too large`` (``_raw_data_too_large``); what is stored is its
    compact form, up to ``MAX_STORED_PAYLOAD_BYTES``.
    """
    data = encode_payload(envelope.get("data"), limit=MAX_STORED_PAYLOAD_BYTES)
    if (
        isinstance(data, bytes)
        and len(raw) > MAX_PAYLOAD_BYTES
        and _raw_data_too_large(envelope, raw)
    ):
        return ERR_PAYLOAD_TOO_LARGE
    return data


def _raw_data_too_large(envelope: dict[str, Any], raw: bytes) -> bool:
    """Whether the ``data`` of ``raw`` (decoded: ``envelope``) is over the contract's limit
    as sent, whitespace and escapes in it counted. Only a frame larger than the limit
    can hold such data: call it for those."""
    size = _raw_data_size(raw)
    if size is None:  # unreadable this way: bound it by the rest of the envelope
        rest = encode_payload({k: v for k, v in envelope.items() if k != "data"})
        size = len(raw) - (len(rest) if isinstance(rest, bytes) else 2)
    return size > MAX_PAYLOAD_BYTES


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_RAW_DECODER = json.JSONDecoder()


def _skip_whitespace(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)
    assert match is not None  # ``*``: it always matches
    return match.end()


def _raw_data_size(raw: bytes) -> int | None:
    """The bytes of the top-level ``data`` value as sent, or ``None`` (no ``data``, or
    not readable here). Each member is read by the standard library's decoder,
    which says where it ends; only the object's own punctuation is stepped over."""
    try:
        text = raw.decode()
        at = _skip_whitespace(text, 0)
        if text[at : at + 1] != "{":
            return None
        at = _skip_whitespace(text, at + 1)
        size = None
        while text[at : at + 1] != "}":
            key, at = _RAW_DECODER.raw_decode(text, at)
            at = _skip_whitespace(text, at)
            if not isinstance(key, str) or text[at : at + 1] != ":":
                return None
            start = _skip_whitespace(text, at + 1)
            _value, at = _RAW_DECODER.raw_decode(text, start)
            if key == "data":  # the last one counts, as in decoding
                size = len(text[start:at].encode())
            at = _skip_whitespace(text, at)
            if text[at : at + 1] == ",":
                at = _skip_whitespace(text, at + 1)
            elif text[at : at + 1] != "}":
                return None
        return size
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


# --- Positions (ours) ---------------------------------------------------------------


def format_position(epoch: str, seq: int) -> str:
    """The position of stored message ``seq`` of the database ``epoch``: ``EPOCH:SEQ``."""
    return f"{epoch}:{seq}"


def parse_position(text: str) -> tuple[str, int] | None:
    """``(epoch, seq)`` from a position, or ``None`` when ``text`` is not one."""
    epoch, sep, seq = text.rpartition(":")
    if not sep or not epoch or not seq.isascii() or not seq.isdigit() or len(seq) > 18:
        return None
    return epoch, int(seq)


# --- Replies (server to client) -----------------------------------------------------


def format_created(moment: _dt.datetime) -> str:
    """Render a UTC moment in the contract's layout ``YYYY-MM-DD HH:MM:SS.mmmZ``."""
    moment = moment.astimezone(_dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_created(text: str) -> _dt.datetime:
    """Read a ``created`` value back into an aware UTC datetime."""
    return _dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%fZ").replace(tzinfo=_dt.timezone.utc)


def _reply(fields: dict[str, Any]) -> bytes:
    # Empty strings are left out, as the reference server's ``omitempty`` does.
    return orjson.dumps({key: value for key, value in fields.items() if value != ""})


def ready_frame(client_id: str, position: str = "") -> bytes:
    """The first frame; ``position`` (ours) announces the resume extension."""
    return _reply({"type": "ready", "clientId": client_id, "position": position})


def pong_frame(request_id: str) -> bytes:
    return _reply({"type": "pong", "requestId": request_id})


def subscribed_frame(request_id: str, position: str = "", replay: str = "") -> bytes:
    """The ``subscribed`` ack; ``position`` and ``replay`` are ours (left out when empty)."""
    return _reply(
        {"type": "subscribed", "requestId": request_id, "position": position, "replay": replay}
    )


def unsubscribed_frame(request_id: str) -> bytes:
    return _reply({"type": "unsubscribed", "requestId": request_id})


def authenticated_frame(
    request_id: str, collection: str | None, record_id: str | None, expires: float | None
) -> bytes:
    """Ours: the answer to ``auth``; ``None`` fields when the connection is now anonymous."""
    return _reply(
        {
            "type": "authenticated",
            "requestId": request_id,
            "collectionName": collection,
            "recordId": record_id,
            "expires": None if expires is None else int(expires),
        }
    )


def topic_error_frame(topic: str, message: str) -> bytes:
    """Ours: a subscription ended by the server (no request asked for it)."""
    return _reply({"type": "error", "topic": topic, "message": message})


def error_frame(request_id: str, message: str) -> bytes:
    return _reply({"type": "error", "requestId": request_id, "message": message})


def published_frame(
    request_id: str, message_id: str, topic: str, created: str, position: str = ""
) -> bytes:
    """The ``published`` ack; ``position`` is ours (left out when empty)."""
    reply = {
        "type": "published",
        "requestId": request_id,
        "id": message_id,
        "topic": topic,
        "created": created,
        "position": position,
    }
    if request_id and position:  # the usual ack: nothing to leave out (ids are never empty)
        return orjson.dumps(reply)
    return _reply(reply)


def message_frame(
    message_id: str, topic: str, data: bytes, created: str, position: str = ""
) -> bytes:
    """Build the ``message`` frame once; ``data`` is already compact JSON text.

    ``position`` is ours (left out when empty).
    """
    # ``data`` is spliced in as raw JSON so that it is never decoded and
    # re-encoded on the fan-out path.
    head = orjson.dumps({"type": "message", "id": message_id, "topic": topic})
    if position:
        tail = orjson.dumps(created)[:-1] + b'","position":' + orjson.dumps(position)
    else:
        tail = orjson.dumps(created)
    return b"".join((head[:-1], b',"data":', data, b',"created":', tail, b"}"))
