"""Typed TLV layouts against layouts.json, instrument ids, fixed point and TLV numbering."""

from __future__ import annotations

import json
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mycelium import protocol
from mycelium.protocol import (
    TYPED_TLV_CLASSES,
    AssetType,
    EncodeError,
    Header,
    InstrumentId,
    InvalidationReason,
    MessageBuilder,
    OrderBookTLV,
    OrderLevel,
    PayloadSizeMismatch,
    PoolLiquidityTLV,
    PoolSwapTLV,
    PrecisionLoss,
    ProtocolError,
    QuoteCurrency,
    QuoteTLV,
    RelayDomain,
    StateInvalidationTLV,
    TLVType,
    TradeTLV,
    VenueId,
    from_fixed,
    parse_message,
    relay_domain_for_tlv_type,
    tlv_type_name,
    to_fixed,
    to_fixed_exact,
)

USDC = "a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"


def offsets(names: tuple[str, ...], codes: tuple[str, ...] | str) -> dict[str, int]:
    result, at = {}, 0
    for name, code in zip(names, codes, strict=True):
        result[name] = at
        at += struct.calcsize("<" + code)
    return result


GOLDEN_LAYOUTS = ("Trade", "Quote", "PoolSwap", "PoolSync", "GasPrice", "SystemHealth",
                  "RecoveryRequest", "ArbitrageSignal")  # fmt: skip


@pytest.mark.parametrize("name", GOLDEN_LAYOUTS)
def test_typed_layouts_match_the_original_structs(name: str, layouts: dict[str, Any]) -> None:
    cls = getattr(protocol, name + "TLV")
    layout = layouts[cls.__name__]
    ours = offsets(cls._NAMES, cls._CODES)
    assert {name: ours[name] for name in layout["offsets"]} == layout["offsets"]
    assert set(ours) - set(layout["offsets"]) <= {"_padding"}  # tail padding Rust leaves implicit
    assert cls.SIZE == layout["size"] == len(cls().to_bytes())


def test_header_and_instrument_layouts_match(layouts: dict[str, Any]) -> None:
    header = layouts["MessageHeader"]
    assert offsets(Header._fields, "IBBBBQQII") == header["offsets"]
    instrument = layouts["InstrumentId"]
    assert offsets(("asset_id", "venue", "asset_type", "reserved"), "QHBB") == instrument["offsets"]
    assert instrument["size"] == InstrumentId.SIZE


def test_typed_objects_refuse_wrong_sizes_and_out_of_range_fields() -> None:
    with pytest.raises(PayloadSizeMismatch) as info:
        TradeTLV.from_bytes(bytes(39))
    assert (info.value.tlv_type, info.value.expected, info.value.actual) == (1, 40, 39)
    with pytest.raises(EncodeError):
        TradeTLV(price=1 << 63).to_bytes()
    with pytest.raises(EncodeError):
        PoolSwapTLV(amount_in=1 << 128).to_bytes()
    with pytest.raises(TypeError):
        QuoteTLV.from_dict({"bid": 1})


def test_u128_and_address_fields_round_trip() -> None:
    swap = PoolSwapTLV(
        amount_in=(1 << 128) - 1,
        liquidity_after=1 << 127,
        tick_after=-(1 << 31),
        pool_address=bytes(range(20)),
    )
    again = PoolSwapTLV.from_bytes(swap.to_bytes())
    assert again == swap
    assert PoolSwapTLV.from_dict(swap.to_dict()) == swap
    assert swap.to_dict()["amount_in"] == str((1 << 128) - 1)
    assert swap.to_dict()["pool_address"] == bytes(range(20)).hex()


def test_instrument_ids_are_built_as_the_original_builds_them(
    vectors_by_name: dict[str, Any],
) -> None:
    def recorded(name: str) -> dict[str, Any]:
        return vectors_by_name[name]["fields"]["tlvs"][0]["values"]

    btc = InstrumentId.from_symbol(VenueId.BINANCE, "BTC")
    assert (btc.asset_id, btc.venue, btc.asset_type) == (
        recorded("trade_buy_binance")["asset_id"],
        recorded("trade_buy_binance")["venue_id"],
        recorded("trade_buy_binance")["asset_type"],
    )
    assert btc.symbol == "BTC" and btc.asset_type == AssetType.COIN
    eth = InstrumentId.from_symbol(VenueId.KRAKEN, "ETH")
    assert eth.asset_id == recorded("trade_sell_kraken")["asset_id"]
    usdc = InstrumentId.from_evm_address("0x" + USDC)
    evm = recorded("trade_evm_token_instrument")
    assert (usdc.asset_id, usdc.venue, usdc.asset_type) == (
        evm["asset_id"],
        evm["venue_id"],
        evm["asset_type"],
    )
    assert usdc.symbol is None
    # the original's unit test took its instrument from from_u64(0x123456789ABCDEF0)
    unit = InstrumentId.from_u64(0x123456789ABCDEF0)
    values = recorded("trade_unit_test_values")
    assert (unit.asset_id, unit.asset_type, unit.venue) == (
        values["asset_id"],
        values["asset_type"],
        0x1234,
    )
    assert unit.to_u64() == 0x123456789ABCDEF0


def test_instrument_wire_form_and_typed_accessor() -> None:
    instrument = InstrumentId(0x1122334455667788, VenueId.POLYGON, AssetType.TOKEN)
    assert instrument.to_bytes() == bytes.fromhex("8877665544332211ca003200")
    assert InstrumentId.from_bytes(instrument.to_bytes()) == instrument
    trade = TradeTLV(asset_id=instrument.asset_id, venue_id=202, asset_type=50)
    assert trade.instrument == instrument
    with pytest.raises(ValueError):
        InstrumentId.from_symbol(VenueId.BINANCE, "TOOLONGSYM")


def test_fixed_point_is_exact(vectors_by_name: dict[str, Any]) -> None:
    trade = vectors_by_name["trade_buy_binance"]["fields"]["tlvs"][0]["values"]
    assert to_fixed("45123.456789") == trade["price"]
    assert to_fixed(Decimal("0.12345678")) == trade["volume"]
    assert from_fixed(trade["price"]) == Decimal("45123.456789")
    assert to_fixed(0.1) == 10_000_000  # the float's shortest repr, not its binary value
    assert to_fixed(3) == 300_000_000
    assert to_fixed("-1.5") == -150_000_000
    assert to_fixed("0.000000005") == 0 and to_fixed("0.000000015") == 2  # half-even
    assert to_fixed("92233720368.54775807") == (1 << 63) - 1
    for bad in ("92233720368.54775808", "nan", "inf", "abc", 1e300):
        with pytest.raises(ValueError):
            to_fixed(bad)


def test_relay_domains_follow_the_type_ranges(vectors_by_name: dict[str, Any]) -> None:
    expected = {
        1: RelayDomain.MARKET_DATA,
        19: RelayDomain.MARKET_DATA,
        20: RelayDomain.SIGNAL,
        39: RelayDomain.SIGNAL,
        40: RelayDomain.EXECUTION,
        59: RelayDomain.EXECUTION,
        60: RelayDomain.SIGNAL,  # portfolio/risk, routed as signals by the original
        79: RelayDomain.SIGNAL,
        80: RelayDomain.SYSTEM,  # compliance/audit, routed as system
        99: RelayDomain.SYSTEM,
        100: RelayDomain.SYSTEM,
        119: RelayDomain.SYSTEM,
    }
    for tlv_type, domain in expected.items():
        assert relay_domain_for_tlv_type(tlv_type) is domain
    for unbound in (0, 120, 199, 200, 254, 255):
        assert relay_domain_for_tlv_type(unbound) is None
    # every TLV in the golden vectors travels in its type's domain (vendor types anywhere)
    for vector in vectors_by_name.values():
        for tlv in vector["fields"]["tlvs"]:
            assert relay_domain_for_tlv_type(tlv["tlv_type"]) in (None, vector["fields"]["domain"])


def test_tlv_type_names() -> None:
    assert tlv_type_name(1) == "TRADE" and tlv_type_name(TLVType.GAS_PRICE) == "GAS_PRICE"
    assert tlv_type_name(200) == "VENDOR" and tlv_type_name(17) == "UNKNOWN"


# -- the TLVs layouts.json does not cover, against the original's Rust declarations -------
# (field, Rust type) in declaration order, from backend_v2/protocol_v2/src/tlv/market_data.rs
# and pool_state.rs at the golden commit 4bd2b1b. repr(C) places them; u128 is 16-aligned
# as rustc does today (layouts.json shows align 16 for PoolSyncTLV).
_ADDR = [("pool_address", "[u8;20]"), ("pool_address_padding", "[u8;12]")]
_LIQ_EVENT = [
    ("liquidity_delta", "u128"),
    ("amount0", "u128"),
    ("amount1", "u128"),
    ("timestamp_ns", "u64"),
    ("tick_lower", "i32"),
    ("tick_upper", "i32"),
    ("venue", "u16"),
    ("token0_decimals", "u8"),
    ("token1_decimals", "u8"),
    *_ADDR,
    ("provider_addr", "[u8;20]"),
    ("provider_padding", "[u8;12]"),
    ("token0_addr", "[u8;20]"),
    ("token0_padding", "[u8;12]"),
    ("token1_addr", "[u8;20]"),
    ("token1_padding", "[u8;12]"),
    ("_padding", "[u8;12]"),
]
RUST_DECLARATIONS: dict[str, list[tuple[str, str]]] = {
    "PoolMintTLV": _LIQ_EVENT,
    "PoolBurnTLV": _LIQ_EVENT,
    "PoolTickTLV": [("liquidity_net", "i64"), ("price_sqrt", "u64"), ("timestamp_ns", "u64"),
                    ("tick", "i32"), ("venue", "u16"), *_ADDR, ("_padding", "[u8;2]")],
    "PoolStateTLV": [("reserve0", "u128"), ("reserve1", "u128"), ("sqrt_price_x96", "u128"),
                     ("liquidity", "u128"), ("block_number", "u64"), ("timestamp_ns", "u64"),
                     ("tick", "i32"), ("fee_rate", "u32"), ("venue", "u16"),
                     ("pool_type", "u8"), ("token0_decimals", "u8"), ("token1_decimals", "u8"),
                     ("_padding", "[u8;3]"), *_ADDR, ("token0_addr", "[u8;20]"),
                     ("token0_padding", "[u8;12]"), ("token1_addr", "[u8;20]"),
                     ("token1_padding", "[u8;12]")],
    # FixedVec<T, N> is {count: u16, _padding: [u8; 6], elements: [T; N]}
    "PoolLiquidityTLV": [("timestamp_ns", "u64"), ("reserves", "FixedVec<u128,8>"), *_ADDR,
                         ("venue", "u16"), ("_padding", "[u8;6]")],
    "StateInvalidationTLV": [("sequence", "u64"), ("timestamp_ns", "u64"),
                             ("instruments", "FixedVec<InstrumentId,16>"), ("venue", "u16"),
                             ("reason", "u8"), ("_padding", "[u8;5]")],
}  # fmt: skip
_PRIMITIVES = {"u8": 1, "u16": 2, "i32": 4, "u32": 4, "i64": 8, "u64": 8, "u128": 16}


def rust_layout(fields: list[tuple[str, str]]) -> tuple[dict[str, int], int, int]:
    """(offsets, size, align) of a repr(C) struct."""
    offsets, at, align = {}, 0, 1
    for name, rust in fields:
        size, field_align = rust_size_align(rust)
        at = -(-at // field_align) * field_align
        offsets[name] = at
        at += size
        align = max(align, field_align)
    return offsets, -(-at // align) * align, align


def rust_size_align(rust: str) -> tuple[int, int]:
    if rust in _PRIMITIVES:
        return _PRIMITIVES[rust], _PRIMITIVES[rust]
    if rust.startswith("[u8;"):
        return int(rust[4:-1]), 1
    if rust == "InstrumentId":
        return 12, 1  # repr(C, packed), as layouts.json records
    element, n = rust.removeprefix("FixedVec<").removesuffix(">").split(",")
    el_size, el_align = rust_size_align(element)
    align = max(2, el_align)  # after count: u16 and _padding: [u8; 6]
    start = -(-8 // el_align) * el_align
    return -(-(start + el_size * int(n)) // align) * align, align


# our field -> the original's (fixed vectors: the slots start where the elements do)
_OUR_NAMES = {
    "PoolLiquidityTLV": {"reserve_slots": ("reserves", 16)},
    "StateInvalidationTLV": {"instrument_slots": ("instruments", 8),
                             "invalidation_sequence": ("sequence", 0)},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RUST_DECLARATIONS))
def test_new_typed_layouts_follow_the_rust_declarations(name: str) -> None:
    cls = getattr(protocol, name)
    expected, size, _ = rust_layout(RUST_DECLARATIONS[name])
    ours = offsets(cls._NAMES, cls._CODES)
    for field, at in ours.items():
        rust_name, delta = _OUR_NAMES.get(name, {}).get(field, (field, 0))
        if rust_name in expected:
            assert at == expected[rust_name] + delta, field
    assert cls.SIZE == size == len(cls().to_bytes())
    assert cls in TYPED_TLV_CLASSES.values() and TYPED_TLV_CLASSES[cls.TLV_TYPE] is cls


def _golden() -> list[dict[str, Any]]:
    path = Path(__file__).resolve().parents[1] / "data" / "typed_tlvs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("golden", _golden(), ids=lambda v: v["struct"])
def test_new_typed_payloads_match_their_golden_bytes(golden: dict[str, Any]) -> None:
    vector = golden
    raw = bytes.fromhex(vector["payload_hex"])
    if vector["struct"] == "OrderBookTLV":
        book = OrderBookTLV.from_bytes(raw)
        assert book.to_dict() == vector["values"] and book.to_bytes() == raw
        return
    cls = getattr(protocol, vector["struct"])
    typed = cls.from_bytes(raw)
    assert typed.to_dict() == vector["values"]
    assert cls.from_dict(vector["values"]).to_bytes() == raw


def test_fixed_vectors_and_their_bounds() -> None:
    liq = PoolLiquidityTLV.make([10**30, 5], timestamp_ns=7, venue=400)
    again = PoolLiquidityTLV.from_bytes(liq.to_bytes())
    assert again.reserves == [10**30, 5] and again.venue == 400
    eth = InstrumentId.from_pair(VenueId.KRAKEN, "ETH", "USDT")
    inv = StateInvalidationTLV.make([eth], reason=InvalidationReason.STALENESS, venue=101)
    assert StateInvalidationTLV.from_bytes(inv.to_bytes()).instruments == [eth]
    for bad in ([], list(range(9)), [1 << 128]):
        with pytest.raises(EncodeError):
            PoolLiquidityTLV.make(bad)
    with pytest.raises(EncodeError):
        StateInvalidationTLV.make([eth] * 17)
    with pytest.raises(ValueError):
        _ = PoolLiquidityTLV(reserve_count=9).reserves


def test_order_book_round_trips_and_refuses_bad_counts() -> None:
    book = OrderBookTLV(asset_id=1, venue_id=101, timestamp_ns=5, sequence=9,
                        precision_factor=10**10,
                        bids=[OrderLevel(123_450_000, 10**12, 3)] * 8,
                        asks=[OrderLevel(123_460_000, 2 * 10**12)] * 4)  # fmt: skip
    raw = book.to_bytes()
    assert len(raw) == 44 + 24 * 12 > 255  # the builder sends it in the extended form
    assert OrderBookTLV.from_bytes(raw) == book
    assert book.decimal(book.bids[0].price) == Decimal("0.012345")
    message = parse_message(MessageBuilder(1, 2).add_tlv(3, raw).build())
    assert message.tlvs[0].extended and OrderBookTLV.from_bytes(message.tlvs[0].payload) == book
    for bad in (raw[:43], raw[:-1], raw + b"\0", raw[:36] + (1000).to_bytes(4, "little")):
        with pytest.raises(ProtocolError):
            OrderBookTLV.from_bytes(bad)
    with pytest.raises(EncodeError):
        OrderBookTLV(precision_factor=0).to_bytes()


def test_vendor_types_have_enum_entries() -> None:
    assert [TLVType(n).name for n in range(200, 205)] == [
        "POOL_INFO", "POOL_CACHE_HEADER", "PROPRIETARY_DATA", "CUSTOM_METRICS",
        "EXPERIMENTAL_SIGNAL",
    ]  # fmt: skip
    assert tlv_type_name(TLVType.POOL_INFO) == "VENDOR"  # another vendor may reuse the number


def test_quote_currency_is_part_of_the_instrument() -> None:
    pairs = [InstrumentId.from_pair(VenueId.KRAKEN, "ETH", q) for q in ("USD", "USDT", "USDC")]
    assert len(set(pairs)) == 3 and len({p.to_bytes() for p in pairs}) == 3
    assert [p.quote for p in pairs] == [QuoteCurrency.USD, QuoteCurrency.USDT, QuoteCurrency.USDC]
    assert pairs[0] == InstrumentId.from_symbol(VenueId.KRAKEN, "ETH")  # USD: as the vectors
    with pytest.raises(ValueError, match="unknown quote currency"):
        InstrumentId.from_pair(VenueId.KRAKEN, "ETH", "XYZ")


def test_more_than_eight_decimals_are_refused_not_rounded() -> None:
    assert to_fixed_exact("0.00001234") == 1234
    assert to_fixed_exact(Decimal("2500.5")) == 250_050_000_000 and to_fixed_exact(2) == 2 * 10**8
    with pytest.raises(PrecisionLoss, match="more than 8 decimals"):
        to_fixed_exact("0.000012345")
