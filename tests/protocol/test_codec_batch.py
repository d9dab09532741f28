"""Batch encode/decode: same bytes as the per-message codec, every check with its index."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest

from mycelium.protocol import (
    TYPED_TLV_CLASSES,
    ChecksumMismatch,
    InvalidMagic,
    InvalidRelayDomain,
    LayoutMismatch,
    MessageTooSmall,
    ProtocolError,
    QuoteTLV,
    TradeTLV,
    UnknownSource,
    encode_message,
    parse_message,
)
from mycelium.protocol.batch import (
    QUOTE_MESSAGE_DTYPE,
    TRADE_MESSAGE_DTYPE,
    decode_batch,
    encode_batch,
    message_dtype,
)

TS = 1_700_000_000_123_456_789


def random_records(kind: Any, n: int, seed: int = 1) -> np.ndarray:
    """Records with random bytes everywhere, then a valid domain and source."""
    rng = np.random.default_rng(seed)
    dtype = message_dtype(kind)
    records = np.frombuffer(rng.bytes(n * dtype.itemsize), dtype=dtype).copy()
    records["relay_domain"] = rng.integers(1, 5, n)
    records["source"] = rng.choice([1, 2, 3, 4, 20, 42, 60, 80], n)
    return records


def trades(n: int) -> np.ndarray:
    records = np.zeros(n, TRADE_MESSAGE_DTYPE)
    records["relay_domain"] = 1
    records["source"] = 2
    records["sequence"] = np.arange(n)
    records["timestamp"] = TS
    records["price"] = np.arange(n) * 100_000_000
    records["volume"] = 5
    records["venue_id"] = 101
    return records


def test_record_dtypes_are_the_wire_layout(layouts: dict[str, Any]) -> None:
    assert TRADE_MESSAGE_DTYPE.itemsize == 32 + 2 + 40 == 74
    assert QUOTE_MESSAGE_DTYPE.itemsize == 32 + 2 + 56
    header = layouts["MessageHeader"]["offsets"]
    for kind in (TradeTLV, QuoteTLV):
        fields = message_dtype(kind).fields
        assert {name: fields[name][1] for name in header} == header
        assert (fields["tlv_type"][1], fields["tlv_length"][1]) == (32, 33)
        for name, offset in layouts[kind.__name__]["offsets"].items():
            assert fields[name][1] == 34 + offset, name


@pytest.mark.parametrize("kind", list(TYPED_TLV_CLASSES.values()), ids=lambda c: c.__name__)
def test_encode_batch_equals_encode_message_for_every_kind(kind: Any) -> None:
    records = random_records(kind, 300)
    encoded = bytes(encode_batch(records))
    size = records.dtype.itemsize
    assert len(encoded) == 300 * size
    for i in (0, 1, 150, 299):
        r = records[i]
        expected = encode_message(
            int(r["relay_domain"]),
            int(r["source"]),
            [(kind.TLV_TYPE, r.tobytes()[34:])],
            sequence=int(r["sequence"]),
            timestamp=int(r["timestamp"]),
            flags=int(r["flags"]),
        )
        assert encoded[i * size : (i + 1) * size] == expected
    # and every checksum is zlib's
    rows = np.frombuffer(encoded, np.uint8).reshape(300, size)
    stored = decode_batch(encoded, kind)["checksum"]
    assert [zlib.crc32(row[:28].tobytes() + row[32:].tobytes()) for row in rows] == list(stored)


def test_decode_batch_reads_per_message_encodings() -> None:
    payloads = [TradeTLV(price=i, volume=2 * i, venue_id=100).to_bytes() for i in range(50)]
    buf = b"".join(
        encode_message(1, 1, [(1, p)], sequence=i, timestamp=TS) for i, p in enumerate(payloads)
    )
    records = decode_batch(buf)  # kind taken from the first TLV
    assert records.dtype == TRADE_MESSAGE_DTYPE
    assert list(records["sequence"]) == list(range(50))
    assert list(records["volume"]) == [2 * i for i in range(50)]
    assert np.shares_memory(records, np.frombuffer(buf, np.uint8))  # a view, not a copy


def test_encode_into_a_caller_buffer() -> None:
    out = bytearray(10 * 74 + 5)
    view = encode_batch(trades(10), out)
    assert len(view) == 740 and view.obj is out
    assert parse_message(bytes(out[74:148])).header.sequence == 1
    with pytest.raises(ValueError):
        encode_batch(trades(10), bytearray(739))


def test_encode_refuses_bad_headers_before_writing() -> None:
    records = trades(8)
    records["relay_domain"][5] = 7
    records["source"][3] = 250
    out = bytearray(8 * 74)
    with pytest.raises(UnknownSource) as info:
        encode_batch(records, out)
    assert (info.value.index, info.value.source) == (3, 250)
    assert out == bytearray(8 * 74)
    records["source"][3] = 1
    with pytest.raises(InvalidRelayDomain) as domain:
        encode_batch(records)
    assert domain.value.index == 5
    with pytest.raises(TypeError):
        encode_batch(np.zeros(3, [("a", "u1")]))


def corrupt(buf: bytes, index: int, offset: int, value: int, reseal: bool = False) -> bytearray:
    out = bytearray(buf)
    at = index * 74
    out[at + offset] = value
    if reseal:
        crc = zlib.crc32(bytes(out[at : at + 28] + out[at + 32 : at + 74]))
        out[at + 28 : at + 32] = crc.to_bytes(4, "little")
    return out


@pytest.mark.parametrize(
    ("offset", "value", "reseal", "error", "facts"),
    [
        (0, 0x00, False, InvalidMagic, {"actual": 0xDEADBE00}),
        (50, 0x77, False, ChecksumMismatch, {}),
        (24, 41, True, LayoutMismatch, {"field": "payload_size", "expected": 42, "actual": 41}),
        (32, 2, True, LayoutMismatch, {"field": "tlv_type", "expected": 1, "actual": 2}),
        (33, 39, True, LayoutMismatch, {"field": "tlv_length", "expected": 40, "actual": 39}),
        (4, 0, True, InvalidRelayDomain, {"domain": 0}),
        (6, 7, True, UnknownSource, {"source": 7}),
    ],
)
def test_decode_names_the_bad_message(
    offset: int, value: int, reseal: bool, error: type, facts: dict[str, Any]
) -> None:
    buf = bytes(encode_batch(trades(20)))
    with pytest.raises(error) as info:
        decode_batch(corrupt(buf, 13, offset, value, reseal))
    assert info.value.index == 13
    assert "message 13" in str(info.value)
    for name, expected in facts.items():
        assert getattr(info.value, name) == expected


def test_decode_reports_the_lowest_index_and_its_first_failed_check() -> None:
    buf = bytes(encode_batch(trades(20)))
    buf = corrupt(buf, 15, 0, 0)  # bad magic at 15
    buf = corrupt(buf, 4, 6, 7, reseal=True)  # unknown source at 4
    buf = corrupt(buf, 4, 60, 1)  # ... and a bad checksum at 4, which is checked first
    with pytest.raises(ChecksumMismatch) as info:
        decode_batch(buf)
    assert info.value.index == 4
    with pytest.raises(UnknownSource):
        decode_batch(buf, verify_checksum=False)


def test_partial_trailing_record_and_edge_inputs() -> None:
    buf = bytes(encode_batch(trades(3)))
    with pytest.raises(MessageTooSmall) as info:
        decode_batch(buf + b"\xef\xbe")
    assert (info.value.index, info.value.need, info.value.got) == (3, 74, 2)
    assert len(decode_batch(b"", TradeTLV)) == 0
    with pytest.raises(MessageTooSmall):
        decode_batch(b"")
    with pytest.raises(ProtocolError):
        decode_batch(encode_message(1, 1, [(3, bytes(40))]))  # type 3 has no fixed layout
