"""Compatibility with the original implementation, vector by vector.

Every message in tests/data/protocol-v2/vectors.jsonl must be rebuilt byte for byte from its
builder inputs, parse to the recorded header and TLVs, and decode to the recorded typed
values; every corrupted message in negative.jsonl must raise the mapped error class.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any

import pytest

from mycelium.protocol import (
    FIXED_PAYLOAD_SIZES,
    TYPED_TLV_CLASSES,
    ChecksumMismatch,
    InvalidExtendedTLV,
    InvalidMagic,
    InvalidRelayDomain,
    MessageBuilder,
    MessageTooSmall,
    PayloadSizeMismatch,
    PoolSwapTLV,
    ProtocolError,
    RelayDomain,
    SourceType,
    TLVType,
    TruncatedTLV,
    encode_message,
    parse_message,
)

# The original's error variants, and ours for each (PayloadTooLarge is its name for a
# fixed-size TLV of the wrong length).
ERROR_FOR_VARIANT: dict[str, type[ProtocolError]] = {
    "ParseError::MessageTooSmall": MessageTooSmall,
    "ParseError::InvalidMagic": InvalidMagic,
    "ParseError::ChecksumMismatch": ChecksumMismatch,
    "ParseError::TruncatedTLV": TruncatedTLV,
    "ParseError::InvalidExtendedTLV": InvalidExtendedTLV,
    "ParseError::PayloadTooLarge": PayloadSizeMismatch,
    "ProtocolError::InvalidRelayDomain": InvalidRelayDomain,
}
# vector -> (our payload size, the original registry's size)
DEVIATIONS = {"quote_coinbase": (56, 52), "arbitrage_signal_signal_domain": (170, 168)}
TLV_KEYS = ("tlv_type", "format", "tlv_length", "payload_hex")
PERF_TEST_DATA = struct.Struct("<QQII")  # the original benchmark's 24-byte payload


def upper_snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", camel).upper()


def typed_class(tlv: dict[str, Any]) -> Any:
    cls = TYPED_TLV_CLASSES.get(tlv["tlv_type"])
    return cls if cls is not None and cls.__name__ == tlv.get("struct") else None


def layout_values(cls: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The recorded values that are layout fields (drops derived extras)."""
    return {name: value for name, value in values.items() if name in cls._NAMES}


def test_builder_reproduces_every_vector(vector: dict[str, Any]) -> None:
    f = vector["fields"]
    builder = MessageBuilder(f["domain"], f["source"]).sequence(f["sequence"])
    builder.timestamp(f["timestamp"])
    if f["builder_calls"]["with_flags"]:
        builder.flags(f["flags"])
    for tlv in f["tlvs"]:
        payload = bytes.fromhex(tlv["payload_hex"])
        cls = typed_class(tlv)
        typed_or_raw = cls.from_dict(layout_values(cls, tlv["values"])) if cls else payload
        # Force the extended form only where the size would not choose it by itself.
        forced = tlv["expected_format"] == "extended" and len(payload) <= 255
        builder.add_tlv(tlv["tlv_type"], typed_or_raw, extended=forced)
    assert builder.build().hex() == vector["hex"]


def test_encode_message_reproduces_every_vector(vector: dict[str, Any]) -> None:
    f = vector["fields"]
    raw = encode_message(
        f["domain"],
        f["source"],
        [(t["tlv_type"], bytes.fromhex(t["payload_hex"])) for t in f["tlvs"]],
        sequence=f["sequence"],
        timestamp=f["timestamp"],
        flags=f["flags"],
    )
    assert raw.hex() == vector["hex"]


def test_parse_gives_recorded_header_and_tlvs(vector: dict[str, Any]) -> None:
    message = parse_message(bytes.fromhex(vector["hex"]))
    assert message.header._asdict() == vector["parsed"]["parse_header"]["header"]
    recorded = vector["parsed"]["parse_tlv_extensions"].get("tlvs")
    if recorded is None:  # the original refused it (a deviation): compare with the inputs
        assert vector["name"] in DEVIATIONS
        recorded = [
            {
                "tlv_type": t["tlv_type"],
                "format": t["expected_format"],
                "tlv_length": t["payload_len"],
                "payload_hex": t["payload_hex"],
            }
            for t in vector["fields"]["tlvs"]
        ]
    recorded = [{key: t[key] for key in TLV_KEYS} for t in recorded]  # drop marker/reserved
    ours = [
        {
            "tlv_type": t.type,
            "format": "extended" if t.extended else "standard",
            "tlv_length": len(t.payload),
            "payload_hex": bytes(t.payload).hex(),
        }
        for t in message.tlvs
    ]
    assert ours == recorded


def test_typed_payloads_decode_to_recorded_values(vector: dict[str, Any]) -> None:
    message = parse_message(bytes.fromhex(vector["hex"]))
    for tlv, recorded in zip(message.tlvs, vector["fields"]["tlvs"], strict=True):
        if "values" not in recorded:
            continue
        values = recorded["values"]
        cls = typed_class(recorded)
        if cls is None:
            assert recorded["struct"] == "PerfTestData"
            assert PERF_TEST_DATA.unpack(tlv.payload) == tuple(values.values())
            continue
        typed = cls.from_bytes(tlv.payload)
        decoded = typed.to_dict()
        assert {name: decoded[name] for name in values if name in decoded} == layout_values(
            cls, values
        )
        assert set(decoded) - set(values) <= {"_padding"}  # only tail padding goes unrecorded
        assert typed.to_bytes() == bytes(tlv.payload)
        if isinstance(typed, PoolSwapTLV):
            low16 = int(values["sqrt_price_x96_after_u128_le_low16"])
            assert typed.sqrt_price_x96_after_int == low16


@pytest.mark.parametrize("name", sorted(DEVIATIONS))
def test_we_accept_what_the_original_refused(
    name: str, vectors_by_name: dict[str, Any], layouts: dict[str, Any]
) -> None:
    vector = vectors_by_name[name]
    assert vector["parse_ok"] is False
    assert vector["first_parse_error"]["error"]["variant"] == "PayloadTooLarge"
    ours, theirs = DEVIATIONS[name]
    assert vector["first_parse_error"]["error"]["debug"] == f"PayloadTooLarge {{ size: {ours} }}"
    (tlv,) = parse_message(bytes.fromhex(vector["hex"])).tlvs
    assert len(tlv.payload) == ours == FIXED_PAYLOAD_SIZES[tlv.type]
    registry = layouts["fixed_sizes_from_TLVType_expected_payload_size"]
    assert [size for key, size in registry.items() if int(key.split(":")[0]) == tlv.type] == [
        theirs
    ]


def debug_fields(debug: str) -> dict[str, int]:
    """``Name { a: 1, b: 2 }`` or ``Name(9)`` -> {"a": 1, "b": 2} / {"value": 9}."""
    if m := re.fullmatch(r"\w+\((\d+)\)", debug):
        return {"value": int(m.group(1))}
    return {k: int(v) for k, v in re.findall(r"(\w+): (\d+)", debug)}


def test_negative_vectors_raise_the_mapped_error(negative: dict[str, Any]) -> None:
    raw = bytes.fromhex(negative["hex"])
    expected = ERROR_FOR_VARIANT[negative["error_variant"]]
    with pytest.raises(ProtocolError) as info:
        parse_message(raw)
    exc = info.value
    assert type(exc) is expected
    facts = debug_fields(negative["expected_error"]["error"]["debug"])
    if isinstance(exc, InvalidMagic):
        assert (exc.expected, exc.actual) == (facts["expected"], facts["actual"])
    elif isinstance(exc, ChecksumMismatch):
        assert exc.expected == facts["expected"]
        real = zlib.crc32(raw[:28] + raw[32:])
        assert exc.calculated == real != facts["calculated"]  # the original reports 0
    elif isinstance(exc, MessageTooSmall):
        assert (exc.need, exc.got) == (facts["need"], facts["got"])
    elif isinstance(exc, PayloadSizeMismatch):
        assert exc.actual == facts["size"]
        assert exc.expected == FIXED_PAYLOAD_SIZES[exc.tlv_type]
    elif isinstance(exc, TruncatedTLV):
        parsed = negative["parsed"]
        # Where bytes follow the declared payload we name the offset where they start.
        declared = parsed["parse_header"]["header"]["payload_size"]
        matches = parsed["payload_size_matches_buffer"]
        assert exc.offset == (facts["offset"] if matches else declared)
    elif isinstance(exc, InvalidRelayDomain):
        assert exc.domain == facts["value"]


def test_header_names_match_the_vectors(vector: dict[str, Any]) -> None:
    f = vector["fields"]
    assert RelayDomain[upper_snake(f["domain_name"])] == f["domain"]
    assert SourceType[upper_snake(f["source_name"])] == f["source"]


def test_fixed_sizes_are_the_originals_except_the_two_deviations(layouts: dict[str, Any]) -> None:
    registry = layouts["fixed_sizes_from_TLVType_expected_payload_size"]
    originals = {}
    for key, size in registry.items():
        number, name = key.split(":")
        assert TLVType[upper_snake(name)] == int(number)
        originals[int(number)] = size
    ours = dict(FIXED_PAYLOAD_SIZES)
    assert ours.pop(TLVType.QUOTE) == 56 and originals.pop(TLVType.QUOTE) == 52
    assert ours.pop(TLVType.ARBITRAGE_SIGNAL) == 170
    assert originals.pop(TLVType.ARBITRAGE_SIGNAL) == 168
    assert ours == originals
