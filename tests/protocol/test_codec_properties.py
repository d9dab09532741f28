"""Properties: build -> parse round-trips, and hostile bytes only ever raise ProtocolError.

Each test keeps its example count modest (CI has two cores); the TLV walk always advances
by at least two bytes, so no input can make it loop, and the deadline would catch one that
got slow.
"""

from __future__ import annotations

import random
import struct
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.protocol import (
    FIXED_PAYLOAD_SIZES,
    TYPED_TLV_CLASSES,
    FrameDecoder,
    MessageBuilder,
    PayloadSizeMismatch,
    ProtocolError,
    SourceType,
    encode_message,
    message_checksum,
    parse_message,
)
from mycelium.protocol.describe import describe_message

FAST = settings(max_examples=200, deadline=timedelta(seconds=2))
SLOW = settings(
    max_examples=100, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow]
)
BUDGET = 64 * 1024  # total payload bytes per generated message

sources = st.sampled_from(sorted({int(s) for s in SourceType}))
u64 = st.integers(0, (1 << 64) - 1)


@st.composite
def tlv_lists(draw: st.DrawFn) -> list[tuple[int, bytes, bool]]:
    """(type, payload, force_extended) triples within BUDGET bytes; fixed-size types get
    their size whenever they would travel in standard form."""
    budget = BUDGET
    tlvs = []
    for _ in range(draw(st.integers(0, 6))):
        tlv_type = draw(st.integers(0, 254))
        extended = draw(st.booleans())
        big = draw(st.integers(0, 9)) == 0  # now and then an extended-size payload
        length = draw(st.integers(0, 65535 if big else 255))
        if not extended and length <= 255 and tlv_type in FIXED_PAYLOAD_SIZES:
            length = FIXED_PAYLOAD_SIZES[tlv_type]
        if length > budget:
            break
        budget -= length
        seed = draw(st.integers(0, 1 << 32))
        tlvs.append((tlv_type, random.Random(seed).randbytes(length), extended))
    return tlvs


@SLOW
@given(
    domain=st.integers(1, 4),
    source=sources,
    sequence=u64,
    timestamp=u64,
    flags=st.integers(0, 255),
    tlvs=tlv_lists(),
)
def test_build_then_parse_round_trips(
    domain: int,
    source: int,
    sequence: int,
    timestamp: int,
    flags: int,
    tlvs: list[tuple[int, bytes, bool]],
) -> None:
    builder = MessageBuilder(domain, source).sequence(sequence).timestamp(timestamp).flags(flags)
    for tlv_type, payload, extended in tlvs:
        builder.add_tlv(tlv_type, payload, extended=extended)
    raw = builder.build()
    message = parse_message(raw)
    h = message.header
    assert (h.relay_domain, h.source, h.sequence, h.timestamp, h.flags) == (
        domain,
        source,
        sequence,
        timestamp,
        flags,
    )
    assert h.payload_size == len(raw) - 32
    assert [(t.type, bytes(t.payload), t.extended) for t in message.tlvs] == [
        (tlv_type, payload, extended or len(payload) > 255) for tlv_type, payload, extended in tlvs
    ]
    if not any(extended and len(p) <= 255 for _, p, extended in tlvs):
        pairs = [(tlv_type, payload) for tlv_type, payload, _ in tlvs]
        assert (
            encode_message(
                domain, source, pairs, sequence=sequence, timestamp=timestamp, flags=flags
            )
            == raw
        )


@FAST
@given(tlv_type=st.sampled_from(sorted(FIXED_PAYLOAD_SIZES)), length=st.integers(0, 255))
def test_encoders_refuse_exactly_the_fixed_sizes_the_parser_refuses(
    tlv_type: int, length: int
) -> None:
    expected = FIXED_PAYLOAD_SIZES[tlv_type]
    try:
        raw = encode_message(1, 1, [(tlv_type, bytes(length))])
    except PayloadSizeMismatch as exc:
        assert length != expected and (exc.expected, exc.actual) == (expected, length)
        return
    assert length == expected
    assert len(parse_message(raw).tlvs[0].payload) == expected


def must_be_protocol_error_or_valid(raw: bytes, verify_checksum: bool) -> None:
    """Parsing either fails with a ProtocolError or gives a message whose TLVs tile the
    payload exactly."""
    try:
        message = parse_message(raw, verify_checksum=verify_checksum)
    except ProtocolError:
        return
    tiled = sum(len(t.payload) + (5 if t.extended else 2) for t in message.tlvs)
    assert tiled == message.header.payload_size == len(raw) - 32
    describe_message(raw, verify_checksum=verify_checksum)


@FAST
@given(raw=st.binary(max_size=300), verify=st.booleans())
def test_arbitrary_bytes_raise_only_protocol_errors(raw: bytes, verify: bool) -> None:
    must_be_protocol_error_or_valid(raw, verify)


@FAST
@given(
    payload=st.binary(max_size=400),
    domain=st.integers(0, 255),
    source=st.integers(0, 255),
    size_delta=st.sampled_from([0, 0, 0, -1, 1, 7]),
)
def test_random_payloads_behind_a_valid_header_reach_the_tlv_walk(
    payload: bytes, domain: int, source: int, size_delta: int
) -> None:
    size = max(0, len(payload) + size_delta)
    head = struct.pack("<IBBBBQQII", 0xDEADBEEF, domain, 1, source, 0, 1, 2, size, 0)
    raw = head + payload
    raw = raw[:28] + struct.pack("<I", message_checksum(raw)) + raw[32:]
    must_be_protocol_error_or_valid(raw, True)


def valid_messages() -> list[bytes]:
    rng = random.Random(3)
    messages = [
        encode_message(1, 1, [(1, bytes(40))], sequence=1, timestamp=2),
        encode_message(2, 20, [(200, b"abcd"), (20, bytes(16))], sequence=3, timestamp=4),
        MessageBuilder(1, 3).timestamp(5).add_tlv(3, rng.randbytes(300)).build(),
        MessageBuilder(4, 60).timestamp(6).add_tlv(110, bytes(24), extended=True).build(),
    ]
    for kind in TYPED_TLV_CLASSES.values():
        messages.append(encode_message(1, 4, [(kind.TLV_TYPE, rng.randbytes(kind.SIZE))]))
    return messages


@FAST
@given(
    base=st.sampled_from(valid_messages()),
    edits=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, 8),
    extra=st.binary(max_size=8),
    reseal=st.booleans(),
    verify=st.booleans(),
)
def test_mutated_messages_raise_only_protocol_errors(
    base: bytes,
    edits: list[tuple[int, int]],
    cut: int,
    extra: bytes,
    reseal: bool,
    verify: bool,
) -> None:
    raw = bytearray(base)
    for position, flip in edits:
        raw[position % len(raw)] ^= flip
    raw = raw[: len(raw) - cut] + extra
    if reseal and len(raw) >= 32:
        raw[28:32] = struct.pack("<I", message_checksum(raw))
    must_be_protocol_error_or_valid(bytes(raw), verify)


@FAST
@given(cuts=st.lists(st.integers(1, 200), min_size=1, max_size=30))
def test_frame_decoder_reassembles_any_chunking(cuts: list[int]) -> None:
    messages = valid_messages()
    stream = b"".join(messages)
    decoder = FrameDecoder()
    frames = []
    at = 0
    for step in cuts * (len(stream) // sum(cuts) + 1):
        decoder.receive_data(stream[at : at + step])
        at += step
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
        if at >= len(stream):
            break
    assert frames == messages


@st.composite
def typed_objects(draw: st.DrawFn) -> Any:
    """A typed TLV object with every field drawn over its full range."""
    cls = draw(st.sampled_from(list(TYPED_TLV_CLASSES.values())))
    values = {}
    for name, code in zip(cls._NAMES, cls._CODES, strict=True):
        if code.endswith("s"):
            width = int(code[:-1])
            if name in {cls._NAMES[i] for i in cls._U128}:
                values[name] = draw(st.integers(0, (1 << 128) - 1))
            else:
                values[name] = draw(st.binary(min_size=width, max_size=width))
        else:
            bits = struct.calcsize(code) * 8
            signed = code.islower()  # struct: lower case is signed
            low, high = (-(1 << bits - 1), (1 << bits - 1) - 1) if signed else (0, (1 << bits) - 1)
            values[name] = draw(st.integers(low, high))
    return cls(**values)


@FAST
@given(obj=typed_objects())
def test_typed_objects_round_trip(obj: Any) -> None:
    payload = obj.to_bytes()
    assert len(payload) == obj.SIZE
    assert type(obj).from_bytes(payload) == obj
    assert type(obj).from_dict(obj.to_dict()) == obj
    raw = MessageBuilder(1, 1).timestamp(0).add_tlv(obj.TLV_TYPE, obj).build()
    assert bytes(parse_message(raw).tlvs[0].payload) == payload
