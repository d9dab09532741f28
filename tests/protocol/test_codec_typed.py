"""Typed TLV layouts against layouts.json, instrument ids, fixed point and TLV numbering."""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

import pytest

from mycelium.protocol import (
    TYPED_TLV_CLASSES,
    AssetType,
    EncodeError,
    Header,
    InstrumentId,
    PayloadSizeMismatch,
    PoolSwapTLV,
    QuoteTLV,
    RelayDomain,
    TLVType,
    TradeTLV,
    VenueId,
    from_fixed,
    relay_domain_for_tlv_type,
    tlv_type_name,
    to_fixed,
)

USDC = "a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"


def offsets(names: tuple[str, ...], codes: tuple[str, ...] | str) -> dict[str, int]:
    result, at = {}, 0
    for name, code in zip(names, codes, strict=True):
        result[name] = at
        at += struct.calcsize("<" + code)
    return result


@pytest.mark.parametrize("cls", list(TYPED_TLV_CLASSES.values()), ids=lambda c: c.__name__)
def test_typed_layouts_match_the_original_structs(cls: Any, layouts: dict[str, Any]) -> None:
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
