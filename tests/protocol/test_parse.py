"""The pure protocol layer: no event loop, no socket."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bosbase_pubsub import protocol
from bosbase_pubsub.protocol import Auth, Ping, Publish, RequestError, Subscribe, Unsubscribe


def test_publish_compacts_data_and_trims_the_topic() -> None:
    request = protocol.parse_request(
        b'{"type":" Publish ","topic":"  a/b ","requestId":"r","data":{ "x" : [1, 2] }}'
    )
    assert request == Publish("r", "a/b", b'{"x":[1,2]}')


def test_publish_without_data_is_null() -> None:
    assert protocol.parse_request('{"type":"publish","topic":"t"}') == Publish("", "t", b"null")


@pytest.mark.parametrize(
    "number",
    [
        "18446744073709551616",  # 2**64
        "-9223372036854775809",  # -2**63 - 1
        "123456789012345678901234567890",
        "18446744073709551615",  # 2**64 - 1: orjson's own range, exact as well
    ],
)
def test_integers_beyond_64_bits_stay_exact(number: str) -> None:
    request = protocol.parse_request(f'{{"type":"publish","topic":"t","data":[{number},1]}}')
    assert request == Publish("", "t", f"[{number},1]".encode())


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_constants_are_not_json(constant: str) -> None:
    frame = f'{{"type":"publish","topic":"t","data":{constant}}}'
    assert protocol.parse_request(frame) == RequestError("", protocol.ERR_INVALID_FORMAT)


def test_null_fields_read_as_empty() -> None:
    frame = '{"type":"unsubscribe","topic":null,"requestId":null}'
    assert protocol.parse_request(frame) == Unsubscribe("", "")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type":"ping","requestId":"1"}', Ping("1")),
        ('{"type":"SUBSCRIBE","topic":" t "}', Subscribe("", "t")),
        ('{"type":"subscribe"}', RequestError("", protocol.ERR_TOPIC_REQUIRED)),
        ('{"type":"publish","requestId":"9"}', RequestError("9", protocol.ERR_TOPIC_REQUIRED)),
        ('{"type":"nope","requestId":"2"}', RequestError("2", protocol.ERR_UNSUPPORTED_TYPE)),
        ("{}", RequestError("", protocol.ERR_UNSUPPORTED_TYPE)),
        ("[]", RequestError("", protocol.ERR_INVALID_FORMAT)),
        ('{"type":"ping","requestId":7}', RequestError("", protocol.ERR_INVALID_FORMAT)),
        (b"\xff\xfe", RequestError("", protocol.ERR_INVALID_FORMAT)),
    ],
)
def test_requests(frame: str | bytes, expected: protocol.Request) -> None:
    assert protocol.parse_request(frame) == expected


def test_the_sdk_side_limit_is_on_the_compact_data_it_sends() -> None:
    fits = "x" * (protocol.MAX_PAYLOAD_BYTES - 2)
    assert isinstance(protocol.encode_payload(fits), bytes)
    assert protocol.encode_payload(fits + "x") == protocol.ERR_PAYLOAD_TOO_LARGE


LIMIT = protocol.MAX_PAYLOAD_BYTES


@pytest.mark.parametrize(
    ("data", "fits"),
    [
        ('"' + "x" * (LIMIT - 2) + '"', True),  # exactly 256 KiB with its quotes
        ('"' + "x" * (LIMIT - 1) + '"', False),
        ("[1" + " " * (LIMIT - 3) + "]", True),  # whitespace inside data counts
        ("[1" + " " * (LIMIT - 2) + "]", False),
        ('"' + "\\u0041" * (LIMIT // 6) + '"', True),  # so do escapes (6 bytes each)
        ('"' + "\\u0041" * (LIMIT // 6 + 1) + '"', False),
        ("[" + ",".join(["1e9"] * 30_000) + "]", True),  # 120 KB sent, 390 KB compacted
        ("[" + ",".join(["1e9"] * 60_000) + "]", False),  # 780 KB compacted: over 512 KiB
    ],
)
def test_the_server_side_limit_is_on_the_raw_data_as_sent(data: str, fits: bool) -> None:
    # Whitespace around the members is not data: json.dumps puts a space after each : and ,.
    frame = '{"type": "publish", "topic": "t", "requestId": "r", "data":   ' + data + "  }"
    request = protocol.parse_request(frame)
    if fits:
        assert isinstance(request, Publish)
        assert json.loads(request.data) == json.loads(data)
    else:
        assert request == RequestError("r", protocol.ERR_PAYLOAD_TOO_LARGE)


def test_the_last_data_member_is_the_one_measured_as_it_is_the_one_kept() -> None:
    big = '"' + "x" * LIMIT + '"'
    kept_small = protocol.parse_request(
        '{"type":"publish","topic":"t","data":' + big + ',"data":1}'
    )
    assert kept_small == Publish("", "t", b"1")
    kept_big = protocol.parse_request('{"type":"publish","topic":"t","data":1,"data":' + big + "}")
    assert kept_big == RequestError("", protocol.ERR_PAYLOAD_TOO_LARGE)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('"type":"publish","topic":"a\\u0000b"', protocol.ERR_TOPIC_NUL),
        ('"type":"subscribe","topic":"\\u0000"', protocol.ERR_TOPIC_NUL),
        ('"type":"publish","topic":"t","key":"\\u0000"', protocol.ERR_KEY_NUL),
        ('"type":"publish","topic":"t","data":"\\ud83d"', protocol.ERR_PAYLOAD_INVALID),
        ('"type":"publish","topic":"t","data":-1e400', protocol.ERR_PAYLOAD_INVALID),
        ('"type":"publish","topic":"\\udc00"', protocol.ERR_INVALID_FORMAT),
        ('"type":"subscribe","topic":"t","since":"\\udc00"', protocol.ERR_INVALID_FORMAT),
    ],
)
def test_what_no_store_or_socket_can_carry_is_refused_with_the_request_id(
    frame: str, expected: str
) -> None:
    request = protocol.parse_request('{"requestId":"r",' + frame + "}")
    assert request == RequestError("r", expected)


def test_a_request_id_no_reply_can_carry_is_left_out() -> None:
    frame = '{"type":"ping","requestId":"\\udc00"}'
    assert protocol.parse_request(frame) == RequestError("", protocol.ERR_INVALID_FORMAT)


def test_replies_leave_empty_fields_out() -> None:
    assert orjson.loads(protocol.pong_frame("")) == {"type": "pong"}
    assert orjson.loads(protocol.error_frame("", "m")) == {"type": "error", "message": "m"}
    assert orjson.loads(protocol.published_frame("r", "i", "t", "c")) == {
        "type": "published",
        "requestId": "r",
        "id": "i",
        "topic": "t",
        "created": "c",
    }


def test_message_frame_splices_the_raw_data() -> None:
    frame = protocol.message_frame("id1", 't"1', b'{"a":null}', "2024-01-02 03:04:05.006Z")
    assert orjson.loads(frame) == {
        "type": "message",
        "id": "id1",
        "topic": 't"1',
        "data": {"a": None},
        "created": "2024-01-02 03:04:05.006Z",
    }


def test_created_layout_round_trips() -> None:
    moment = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.timezone.utc)
    text = protocol.format_created(moment)
    assert text == "2024-02-29 23:59:58.123Z"
    assert protocol.parse_created(text) == moment.replace(microsecond=123000)


# --- Extensions (resume.md): since, key, positions -------------------------------------


def test_subscribe_since_and_publish_key_are_read() -> None:
    frame = '{"type":"subscribe","topic":"t","requestId":"1","since":" e1:42 "}'
    assert protocol.parse_request(frame) == Subscribe("1", "t", "e1:42")
    assert protocol.parse_request('{"type":"subscribe","topic":"t","since":null}') == Subscribe(
        "", "t"
    )
    frame = '{"type":"publish","topic":"t","data":1,"key":"k-1"}'
    assert protocol.parse_request(frame) == Publish("", "t", b"1", "k-1")
    frame = '{"type":"publish","topic":"t","key":"' + "k" * 129 + '"}'
    assert protocol.parse_request(frame) == RequestError("", protocol.ERR_KEY_TOO_LONG)
    for field in ("since", "key"):
        frame = f'{{"type":"subscribe","topic":"t","{field}":1}}'
        kind = "subscribe" if field == "since" else "publish"
        frame = frame.replace("subscribe", kind)
        assert protocol.parse_request(frame) == RequestError("", protocol.ERR_INVALID_FORMAT)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc:12", ("abc", 12)),
        ("a:b:0", ("a:b", 0)),
        ("abc:", None),
        (":12", None),
        ("12", None),
        ("abc:-1", None),
        ("abc:1.5", None),
        ("abc:\u0661", None),
        ("abc:" + "9" * 19, None),
    ],
)
def test_positions_round_trip_and_garbage_is_none(
    text: str, expected: tuple[str, int] | None
) -> None:
    assert protocol.parse_position(text) == expected
    if expected is not None:
        assert protocol.parse_position(protocol.format_position(*expected)) == expected


def test_new_reply_fields_are_added_only_when_set() -> None:
    assert orjson.loads(protocol.subscribed_frame("r", "e:1", "pruned")) == {
        "type": "subscribed",
        "requestId": "r",
        "position": "e:1",
        "replay": "pruned",
    }
    frame = protocol.message_frame("i", "t", b"[1]", "2024-01-02 03:04:05.006Z", "e:7")
    assert orjson.loads(frame)["position"] == "e:7"
    assert orjson.loads(protocol.published_frame("r", "i", "t", "c", "e:7"))["position"] == "e:7"


@given(
    request_id=st.text(max_size=6),
    topic=st.text(min_size=1, max_size=6),
    position=st.sampled_from(["", "e:7"]),
)
def test_the_published_ack_leaves_out_exactly_the_empty_fields(
    request_id: str, topic: str, position: str
) -> None:
    frame = protocol.published_frame(request_id, "i", topic, "c", position)
    fields = {"requestId": request_id, "id": "i", "topic": topic, "created": "c"}
    fields["position"] = position
    assert orjson.loads(frame) == {"type": "published"} | {
        key: value for key, value in fields.items() if value
    }
    assert frame.startswith(b'{"type":"published"')  # type first, as every reply


# --- Fuzzing: arbitrary frames never crash the parser ---------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_values = st.one_of(st.text(max_size=12), json_values, st.sampled_from(
    ["ping", "PUBLISH", " subscribe ", "unsubscribe", "publish", "", "  "]
))  # fmt: skip
envelopes = st.dictionaries(
    st.sampled_from(["type", "topic", "data", "requestId", "extra", "since", "key"]),
    field_values,
    max_size=6,
)


def _check(request: protocol.Request) -> None:
    assert isinstance(request, (Ping, Subscribe, Unsubscribe, Publish, Auth, RequestError))
    if isinstance(request, RequestError):
        assert request.message in protocol.CONTRACT_ERRORS | OUR_PARSE_ERRORS
    if isinstance(request, Publish):
        assert request.topic
        assert request.topic == request.topic.strip()
        assert "\x00" not in request.topic + request.key  # no store's text refuses them
        json.loads(request.data)  # the stored payload is always valid JSON
        assert len(request.data) <= protocol.MAX_STORED_PAYLOAD_BYTES
        assert len(request.key) <= protocol.MAX_KEY_LENGTH


OUR_PARSE_ERRORS = {
    protocol.ERR_KEY_TOO_LONG,
    protocol.ERR_TOPIC_NUL,
    protocol.ERR_KEY_NUL,
    protocol.ERR_PAYLOAD_TOO_DEEP,
}


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(frame: bytes) -> None:
    _check(protocol.parse_request(frame))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(frame: str) -> None:
    _check(protocol.parse_request(frame))


@settings(max_examples=1000, deadline=None)
@given(envelopes)
def test_arbitrary_envelopes_get_a_request_or_a_contract_error(envelope: dict[str, Any]) -> None:
    request = protocol.parse_request(json.dumps(envelope))
    _check(request)
    kind = envelope.get("type")
    if isinstance(kind, str) and kind.strip().lower() == "publish" and isinstance(request, Publish):
        assert json.loads(request.data) == envelope.get("data")


@settings(max_examples=300, deadline=None)
@given(envelopes, st.integers(min_value=0, max_value=60))
def test_truncated_envelopes_are_invalid_or_parsed(envelope: dict[str, Any], cut: int) -> None:
    text = json.dumps(envelope)
    _check(protocol.parse_request(text[: max(0, len(text) - cut)]))
