"""Control-plane framing: round trips, stream reassembly, and refusal of bad input."""

from __future__ import annotations

import struct
from itertools import pairwise
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.control.wire import (
    FRAME_PREFIX_BYTES,
    MAX_CONTROL_FRAME_BYTES,
    PROTOCOL_VERSION,
    ControlFrameDecoder,
    DeleteDurable,
    Error,
    ErrorCode,
    Goodbye,
    Heartbeat,
    Hello,
    Message,
    Ok,
    ProducerRegistered,
    RegisterProducer,
    Reload,
    Reply,
    ReportedTopic,
    ReportFigures,
    Request,
    Shutdown,
    StatsReply,
    StatsRequest,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
    encode_frame,
)
from mycelium.errors import ControlProtocolError

REQUESTS: list[Any] = [
    Hello(version=PROTOCOL_VERSION, pid=1234, role="producer", name="collector", resume_id=7),
    Hello(version=PROTOCOL_VERSION, pid=1, role="admin"),
    RegisterProducer(topic="market_data"),
    Subscribe(topic="execution", group="risk", resume_id=3),
    Subscribe(topic="signals"),
    Subscribe(topic="execution", group="fills", durable="portfolio"),
    Unsubscribe(consumer_id=42),
    Heartbeat(pid=1234),
    StatsRequest(),
    Reload(),
    Shutdown(),
    DeleteDurable(name="portfolio"),
    Goodbye(),
    ReportFigures(
        name="B",
        connected=True,
        server="10.0.0.1:4222",
        reconnects=1,
        topics=[ReportedTopic("signals", "import", {"imported": 5, "lag": 0})],
    ),
]
REPLIES: list[Any] = [
    Welcome(
        version=PROTOCOL_VERSION,
        broker_id="b1",
        registry_name="/myc.b1.reg",
        client_id=9,
        broker_pid=99,
    ),
    ProducerRegistered(topic="market_data", producer_id=5),
    Subscribed(
        topic="execution",
        consumer_id=6,
        group="default",
        state_name="/myc.b1.c6",
        doorbell_name="/myc.b1.d6",
    ),
    Ok(),
    Ok(detail="reloaded"),
    StatsReply(stats={"topics": {"market_data": {"published": 10, "rate": 1.5}}, "up": True}),
    Error(code=ErrorCode.UNKNOWN_TOPIC, message="unknown topic 'x'"),
]


def _body_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _raw_frame(doc: object) -> bytes:
    """A frame around any msgpack-encodable document, bypassing the typed messages."""
    return _body_frame(msgspec.msgpack.encode(doc))


def _drain(decoder: ControlFrameDecoder) -> list[Any]:
    out = []
    while (msg := decoder.next_message()) is not None:
        out.append(msg)
    return out


def _refusal(frame: bytes, expect: Any = Request, **kwargs: Any) -> ControlProtocolError:
    decoder = ControlFrameDecoder(expect=expect, **kwargs)
    decoder.receive_data(frame)
    with pytest.raises(ControlProtocolError) as info:
        decoder.next_message()
    return info.value


def test_samples_cover_every_message_type() -> None:
    assert {type(m) for m in REQUESTS} == set(get_args(Request))
    assert {type(m) for m in REPLIES} == set(get_args(Reply))


@pytest.mark.parametrize(
    ("msg", "expect"),
    [(m, Request) for m in REQUESTS] + [(m, Reply) for m in REPLIES],
    ids=lambda v: type(v).__name__ if not isinstance(v, type) else "",
)
def test_round_trip(msg: Any, expect: Any) -> None:
    for decoder in (ControlFrameDecoder(expect=expect), ControlFrameDecoder(expect=Message)):
        decoder.receive_data(encode_frame(msg))
        assert decoder.next_message() == msg
        assert decoder.next_message() is None


def test_frame_is_length_prefixed_msgpack_tagged_t() -> None:
    frame = encode_frame(Heartbeat(pid=7))
    (length,) = struct.unpack(">I", frame[:FRAME_PREFIX_BYTES])
    assert length == len(frame) - FRAME_PREFIX_BYTES
    assert msgspec.msgpack.decode(frame[FRAME_PREFIX_BYTES:]) == {"t": "Heartbeat", "pid": 7}


def test_byte_by_byte_feeding() -> None:
    stream = b"".join(encode_frame(m) for m in REQUESTS)
    decoder = ControlFrameDecoder()
    got = []
    for i in range(len(stream)):
        decoder.receive_data(stream[i : i + 1])
        got.extend(_drain(decoder))
    assert got == REQUESTS


def test_incomplete_frame_needs_more_data() -> None:
    frame = encode_frame(Hello(version=PROTOCOL_VERSION, pid=1, role="consumer"))
    for cut in (1, FRAME_PREFIX_BYTES, len(frame) - 1):
        decoder = ControlFrameDecoder()
        decoder.receive_data(frame[:cut])
        assert decoder.next_message() is None
    decoder.receive_data(frame[cut:])
    assert isinstance(decoder.next_message(), Hello)


def test_many_frames_in_one_chunk() -> None:
    decoder = ControlFrameDecoder(expect=Reply)
    decoder.receive_data(b"".join(encode_frame(m) for m in REPLIES))
    assert _drain(decoder) == REPLIES


@given(st.lists(st.integers(min_value=0, max_value=400), max_size=20))
def test_any_chunking_yields_the_same_messages(cuts: list[int]) -> None:
    stream = b"".join(encode_frame(m) for m in REQUESTS)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    decoder = ControlFrameDecoder()
    got = []
    for lo, hi in pairwise(bounds):
        decoder.receive_data(stream[lo:hi])
        got.extend(_drain(decoder))
    assert got == REQUESTS


def test_oversize_declared_length_is_refused_from_the_prefix_alone() -> None:
    err = _refusal(struct.pack(">I", MAX_CONTROL_FRAME_BYTES + 1))
    assert err.code == ErrorCode.TOO_LARGE


def test_declared_length_at_the_limit_waits_for_the_body() -> None:
    decoder = ControlFrameDecoder(max_frame=16)
    decoder.receive_data(struct.pack(">I", 16))
    assert decoder.next_message() is None
    assert _refusal(struct.pack(">I", 17), max_frame=16).code == ErrorCode.TOO_LARGE


def test_encoding_an_oversize_message_is_refused() -> None:
    with pytest.raises(ControlProtocolError) as info:
        encode_frame(StatsReply(stats={"blob": "x" * MAX_CONTROL_FRAME_BYTES}))
    assert info.value.code == ErrorCode.TOO_LARGE


BAD_BODIES = {
    "never-used msgpack byte": (b"\xc1", ErrorCode.MALFORMED),
    "truncated map": (b"\x82\xa1t", ErrorCode.MALFORMED),
    "trailing bytes": (msgspec.msgpack.encode({"t": "Goodbye"}) + b"\x00", ErrorCode.MALFORMED),
    "empty body": (b"", ErrorCode.MALFORMED),
    "not a map": (msgspec.msgpack.encode(5), ErrorCode.MALFORMED),
    "map without tag": (msgspec.msgpack.encode({"pid": 1}), ErrorCode.MALFORMED),
    "non-string tag": (msgspec.msgpack.encode({"t": 3}), ErrorCode.MALFORMED),
    "unknown tag": (msgspec.msgpack.encode({"t": "Frobnicate"}), ErrorCode.UNKNOWN_MESSAGE),
    "reply sent as request": (msgspec.msgpack.encode({"t": "Ok"}), ErrorCode.UNKNOWN_MESSAGE),
    "string not UTF-8": (b"\xa2\xc3\x28", ErrorCode.MALFORMED),
    "field value not UTF-8": (b"\x82\xa1t\xa5Hello\xa4role\xa2\xc3\x28", ErrorCode.MALFORMED),
    "map key not UTF-8": (b"\x81\xa2\xc3\x28\x01", ErrorCode.MALFORMED),
    "unhashable map key": (b"\x81\x81\x01\x01\x01", ErrorCode.MALFORMED),
    "bad timestamp ext": (b"\xc7\x05\xff" + b"\x00" * 5, ErrorCode.MALFORMED),
    "nested too deep": (b"\x91" * 100_000 + b"\x00", ErrorCode.MALFORMED),
    "deep inside a known message": (
        b"\x82\xa1t\xa9Heartbeat\xa3pid" + b"\x91" * 100_000 + b"\x00",
        ErrorCode.MALFORMED,
    ),
}


@pytest.mark.parametrize(("body", "code"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_body_is_refused(body: bytes, code: ErrorCode) -> None:
    assert _refusal(_body_frame(body)).code == code


WRONG_FIELDS = {
    "version as string": {"t": "Hello", "version": "1", "pid": 1, "role": "producer"},
    "unknown role": {"t": "Hello", "version": 1, "pid": 1, "role": "root"},
    "missing pid": {"t": "Hello", "version": 1, "role": "producer"},
    "float pid": {"t": "Heartbeat", "pid": 1.0},
    "topic as bytes": {"t": "RegisterProducer", "topic": b"market_data"},
    "group as int": {"t": "Subscribe", "topic": "a", "group": 1},
    "consumer_id as bool": {"t": "Unsubscribe", "consumer_id": True},
}


@pytest.mark.parametrize("doc", WRONG_FIELDS.values(), ids=WRONG_FIELDS.keys())
def test_wrong_field_types_are_malformed(doc: dict[str, Any]) -> None:
    assert _refusal(_raw_frame(doc)).code == ErrorCode.MALFORMED


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    decoder = ControlFrameDecoder()
    decoder.receive_data(_raw_frame({"t": "Heartbeat", "pid": 3, "added_in_v2": [1, 2]}))
    assert decoder.next_message() == Heartbeat(pid=3)


def test_a_refused_frame_is_consumed() -> None:
    """The decoder can still report what follows (the caller closes anyway)."""
    decoder = ControlFrameDecoder()
    decoder.receive_data(_raw_frame({"t": "Nope"}) + encode_frame(Goodbye()))
    with pytest.raises(ControlProtocolError):
        decoder.next_message()
    assert decoder.next_message() == Goodbye()


def test_error_codes_are_the_wire_strings() -> None:
    assert {c.value for c in ErrorCode} == {
        "bad_version",
        "malformed",
        "too_large",
        "unknown_message",
        "out_of_order",
        "unknown_topic",
        "not_allowed",
        "too_many_connections",
        "timeout",
        "config_error",
        "limit_exceeded",
        "segment_error",
        "shutting_down",
        "internal",
    }
    decoder = ControlFrameDecoder(expect=Reply)
    decoder.receive_data(encode_frame(Error(code=ErrorCode.TIMEOUT, message="slow")))
    assert decoder.next_message().code == "timeout"


_TAGS = [cls.__name__ for cls in get_args(Message)] + ["Unknown"]
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=12))
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
_FIELDS = ["version", "pid", "role", "topic", "group", "stats", "code", "x"]
_DOCS = st.builds(
    lambda tag, fields: {"t": tag, **fields},
    st.sampled_from(_TAGS),
    st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=4),
)


def _feed_all(data: bytes, max_frame: int = MAX_CONTROL_FRAME_BYTES) -> None:
    decoder = ControlFrameDecoder(max_frame=max_frame)
    decoder.receive_data(data)
    try:
        _drain(decoder)
    except ControlProtocolError as exc:
        assert exc.code in set(ErrorCode)


#: Generating nested documents is slow on a loaded box: no health check or deadline on it.
LOADED_BOX = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@LOADED_BOX
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes_only_raise_control_protocol_error(data: bytes) -> None:
    _feed_all(data, max_frame=256)


@LOADED_BOX
@given(st.lists(st.binary(max_size=64) | _DOCS.map(msgspec.msgpack.encode), max_size=4))
def test_fuzz_well_framed_bodies_only_raise_control_protocol_error(bodies: list[bytes]) -> None:
    _feed_all(b"".join(_body_frame(b) for b in bodies))
