"""parse_message, encode_message and MessageBuilder: check order, lazy TLVs, encoder refusals."""

from __future__ import annotations

import ast
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import mycelium.protocol as protocol
from mycelium.errors import MyceliumError
from mycelium.protocol import (
    ChecksumMismatch,
    EncodeError,
    InvalidExtendedTLV,
    InvalidMagic,
    InvalidRelayDomain,
    MessageBuilder,
    MessageTooSmall,
    PayloadSizeMismatch,
    ProtocolError,
    RelayDomain,
    SourceType,
    TLVType,
    TradeTLV,
    TruncatedTLV,
    UnknownSource,
    encode_message,
    message_checksum,
    parse_message,
)

TS = 1_700_000_000_123_456_789
TRADE = TradeTLV(asset_id=7, price=123, volume=456, timestamp_ns=TS, venue_id=100)


def reseal(raw: bytes | bytearray) -> bytes:
    """``raw`` with its checksum recomputed, so later checks can be reached."""
    return bytes(raw[:28]) + struct.pack("<I", message_checksum(raw)) + bytes(raw[32:])


def patched(raw: bytes, offset: int, data: bytes) -> bytes:
    out = bytearray(raw)
    out[offset : offset + len(data)] = data
    return bytes(out)


def one_trade(**header: int) -> bytes:
    fields = {"relay_domain": RelayDomain.MARKET_DATA, "source": SourceType.KRAKEN} | header
    return encode_message(
        fields.pop("relay_domain"),
        fields.pop("source"),
        [(TLVType.TRADE, TRADE.to_bytes())],
        sequence=9,
        timestamp=TS,
        **fields,
    )


def test_errors_are_protocol_mycelium_and_value_errors() -> None:
    for name in protocol.__all__:
        obj = getattr(protocol, name)
        if isinstance(obj, type) and issubclass(obj, ProtocolError):
            assert issubclass(obj, MyceliumError) and issubclass(obj, ValueError), name


def test_public_names_exist_and_package_does_no_io() -> None:
    assert all(hasattr(protocol, name) for name in protocol.__all__)
    forbidden = {"socket", "asyncio", "mmap", "posix_ipc", "selectors"}
    for path in Path(protocol.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & forbidden, f"{path.name} imports {roots & forbidden}"


def test_parse_exposes_header_and_payload() -> None:
    raw = one_trade(flags=3)
    message = parse_message(raw)
    assert message.raw is raw
    h = message.header
    assert (h.magic, h.relay_domain, h.version, h.source, h.flags) == (0xDEADBEEF, 1, 1, 2, 3)
    assert (h.sequence, h.timestamp, h.payload_size) == (9, TS, 42)
    assert h.checksum == message_checksum(raw)
    (tlv,) = message.tlvs
    assert (tlv.type, tlv.extended) == (TLVType.TRADE, False)
    assert type(tlv.payload) is bytes  # a standard TLV: a slice, cheaper than a view
    assert TradeTLV.from_bytes(tlv.payload) == TRADE
    assert message.tlvs is message.tlvs  # built once
    assert "TradeTLV" not in repr(message) and "relay_domain=1" in repr(message)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_parse_accepts_any_contiguous_byte_buffer(kind: type) -> None:
    raw = encode_message(1, 1, [(3, b"abc"), (200, b"x" * 300)], sequence=1, timestamp=TS)
    message = parse_message(kind(raw))
    assert [(t.type, bytes(t.payload), t.extended) for t in message.tlvs] == [
        (3, b"abc", False),
        (200, b"x" * 300, True),
    ]


def test_checks_run_in_the_documented_order() -> None:
    raw = one_trade()
    # magic is checked before the checksum it also breaks
    with pytest.raises(InvalidMagic):
        parse_message(patched(raw, 0, b"\0"))
    # checksum before payload bounds: payload_size grown without resealing
    grown = patched(raw, 24, struct.pack("<I", 50))
    with pytest.raises(ChecksumMismatch):
        parse_message(grown)
    with pytest.raises(MessageTooSmall) as too_small:
        parse_message(grown, verify_checksum=False)
    assert (too_small.value.need, too_small.value.got) == (82, 74)
    # TLV errors before relay domain, relay domain before source
    cut_short = patched(patched(raw, 4, b"\x09"), 24, struct.pack("<I", 41))[:-1]
    with pytest.raises(TruncatedTLV):
        parse_message(reseal(cut_short))
    with pytest.raises(InvalidRelayDomain) as domain:
        parse_message(reseal(patched(raw, 4, b"\x09\x01\x63")))
    assert domain.value.domain == 9
    with pytest.raises(UnknownSource) as source:
        parse_message(reseal(patched(raw, 6, b"\x63")))
    assert source.value.source == 99


def test_checksum_can_be_skipped_but_nothing_else() -> None:
    raw = patched(one_trade(), 28, b"\0\0\0\0")
    assert parse_message(raw, verify_checksum=False).header.checksum == 0
    with pytest.raises(InvalidRelayDomain):
        parse_message(patched(raw, 4, b"\x00"), verify_checksum=False)


@pytest.mark.parametrize(
    ("payload", "error", "offset"),
    [
        (b"\x03", TruncatedTLV, 0),  # one byte: no room for type + length
        (b"\x03\x00\xff\x00\x03\x01", TruncatedTLV, 2),  # extended header cut short
        (b"\x03\x02\x01", TruncatedTLV, 0),  # length says 2, one byte present
        (b"\xff\x00\x03\x05\x00abcd", TruncatedTLV, 0),  # extended length says 5, 4 present
        (b"\xff\x07\x03\x01\x00a", InvalidExtendedTLV, 0),  # reserved byte not zero
        (b"\x03\x00\x01\x02ab", PayloadSizeMismatch, 2),  # a 2-byte Trade, second TLV
    ],
)
def test_tlv_walk_errors_name_the_offset(payload: bytes, error: type, offset: int) -> None:
    head = struct.pack("<IBBBBQQII", 0xDEADBEEF, 1, 1, 1, 0, 0, 0, len(payload), 0)
    with pytest.raises(error) as info:
        parse_message(reseal(head + payload))
    assert info.value.offset == offset


def test_fixed_sizes_are_not_checked_in_extended_form_as_in_the_original() -> None:
    raw = MessageBuilder(1, 1).add_tlv(TLVType.TRADE, b"short", extended=True).build()
    (tlv,) = parse_message(raw).tlvs
    assert (tlv.type, bytes(tlv.payload), tlv.extended) == (TLVType.TRADE, b"short", True)


def test_builder_and_encode_message_agree() -> None:
    built = (
        MessageBuilder(RelayDomain.SIGNAL, SourceType.ARBITRAGE_STRATEGY)
        .sequence(5)
        .timestamp(TS)
        .flags(1)
        .add_tlv(200, b"\x01" * 300)
        .add_tlv(TLVType.SIGNAL_IDENTITY, bytearray(16))
        .build()
    )
    encoded = encode_message(
        2, 20, [(200, b"\x01" * 300), (20, bytes(16))], sequence=5, timestamp=TS, flags=1
    )
    assert built == encoded
    assert built[32:35] == b"\xff\x00\xc8"  # extended form chosen for 300 bytes


def test_builder_forces_the_extended_form_and_accepts_typed_payloads() -> None:
    raw = MessageBuilder(1, 2).timestamp(TS).add_tlv(TLVType.TRADE, TRADE, extended=True).build()
    assert raw[32:37] == b"\xff\x00\x01\x28\x00"
    (tlv,) = parse_message(raw).tlvs
    assert tlv.extended and TradeTLV.from_bytes(tlv.payload) == TRADE


def test_builder_copies_mutable_payloads_when_added() -> None:
    payload = bytearray(b"before")
    builder = MessageBuilder(1, 1).timestamp(TS).add_tlv(3, payload)
    payload[:] = b"after!"
    assert bytes(parse_message(builder.build()).tlvs[0].payload) == b"before"


def test_timestamp_defaults_to_now() -> None:
    before = time.time_ns()
    stamps = [
        parse_message(encode_message(1, 1, [])).header.timestamp,
        parse_message(MessageBuilder(1, 1).build()).header.timestamp,
    ]
    assert all(before <= stamp <= time.time_ns() for stamp in stamps)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda b: b.add_tlv(255, b"x"), EncodeError),
        (lambda b: b.add_tlv(-1, b"x"), EncodeError),
        (lambda b: b.add_tlv(3, bytes(65536)), EncodeError),
        (lambda b: b.add_tlv(TLVType.QUOTE, TRADE), EncodeError),
        (lambda b: b.add_tlv(TLVType.TRADE, bytes(39)), PayloadSizeMismatch),
        (lambda b: b.sequence(1 << 64).build(), EncodeError),
        (lambda b: b.flags(256).build(), EncodeError),
    ],
)
def test_builder_refuses_what_cannot_be_sent(
    call: Callable[[MessageBuilder], object], error: type
) -> None:
    with pytest.raises(error):
        call(MessageBuilder(1, 1))


def test_encoders_refuse_unknown_domain_and_source() -> None:
    with pytest.raises(InvalidRelayDomain):
        encode_message(5, 1, [])
    with pytest.raises(UnknownSource):
        MessageBuilder(1, 99).build()
    with pytest.raises(PayloadSizeMismatch) as info:
        encode_message(1, 1, [(TLVType.TRADE, bytes(41))])
    assert (info.value.expected, info.value.actual) == (40, 41)


def test_extended_payloads_are_zero_copy_views_and_standard_ones_are_slices() -> None:
    raw = encode_message(1, 1, [(3, b"abc"), (200, b"x" * 300)], sequence=1, timestamp=TS)
    standard, extended = parse_message(raw).tlvs
    assert type(standard.payload) is bytes and standard.payload == b"abc"
    assert isinstance(extended.payload, memoryview) and extended.payload.obj is raw
