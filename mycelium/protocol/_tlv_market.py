"""Market-data TLVs of centralised venues: trades, quotes, and the chain's gas price."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from mycelium.protocol._instrument import InstrumentId
from mycelium.protocol._tlv_layout import (
    I64,
    U8,
    U16,
    U32,
    U64,
    TypedTLV,
    typed_tlv,
)
from mycelium.protocol._types import TLVType

__all__ = ["GasPriceTLV", "QuoteTLV", "TradeTLV"]


class _Instrument:
    """Mixin for payloads that carry an instrument as asset_id/venue_id/asset_type/reserved."""

    __slots__ = ()

    asset_id: int
    venue_id: int
    asset_type: int
    reserved: int

    @property
    def instrument(self) -> InstrumentId:
        """The instrument this payload is about."""
        return InstrumentId(self.asset_id, self.venue_id, self.asset_type, self.reserved)


@typed_tlv(TLVType.TRADE, 40)
@dataclass(slots=True)
class TradeTLV(_Instrument, TypedTLV):
    """A trade print. ``price``/``volume`` are 8-decimal fixed point (see ``from_fixed``);
    ``side`` 0 = buy, 1 = sell."""

    asset_id: U64 = 0
    price: I64 = 0
    volume: I64 = 0
    timestamp_ns: U64 = 0
    venue_id: U16 = 0
    asset_type: U8 = 0
    reserved: U8 = 0
    side: U8 = 0
    _padding: Annotated[bytes, "3s"] = bytes(3)


@typed_tlv(TLVType.QUOTE, 56)
@dataclass(slots=True)
class QuoteTLV(_Instrument, TypedTLV):
    """Top of book; prices and sizes are 8-decimal fixed point. 56 bytes (deviation: the
    original registry says 52)."""

    asset_id: U64 = 0
    bid_price: I64 = 0
    bid_size: I64 = 0
    ask_price: I64 = 0
    ask_size: I64 = 0
    timestamp_ns: U64 = 0
    venue_id: U16 = 0
    asset_type: U8 = 0
    reserved: U8 = 0
    _padding: Annotated[bytes, "4s"] = bytes(4)


@typed_tlv(TLVType.GAS_PRICE, 32)
@dataclass(slots=True)
class GasPriceTLV(TypedTLV):
    """Gas prices of a chain at a block, in gwei."""

    block_number: U64 = 0
    timestamp_ns: U64 = 0
    gas_price_gwei: U32 = 0
    base_fee_gwei: U32 = 0
    priority_fee_gwei: U32 = 0
    venue: U16 = 0
    reserved: U16 = 0
