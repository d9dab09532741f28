"""The ORDER_REQUEST payload (TLV type 40, 32 bytes) the strategy sends to ``execution``.

How this works
--------------
Protocol V2 fixes the type number and the size (32 bytes) but the codec has no typed class
for it yet, so the services define the layout here, little-endian like every TLV:

    signal_id u32 @0, venue u16 @4, side u8 @6 (0 buy, 1 sell), leg u8 @7,
    asset_id u64 @8, quantity i64 @16, limit_price i64 @24

``quantity`` is in units of the asset and ``limit_price`` in USD per unit (fees and
expected slippage included), both 8-decimal fixed point. One arbitrage is one execution
message with two of these, leg 0 (buy) and leg 1 (sell), so a consumer of the queue
always gets both legs together.
"""

from __future__ import annotations

import struct
from dataclasses import astuple, dataclass
from typing import Self

from mycelium.protocol import PayloadSizeMismatch, TLVType

__all__ = ["BUY", "SELL", "OrderRequest"]

BUY, SELL = 0, 1
_LAYOUT = struct.Struct("<IHBBQqq")


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """One leg of an order: buy or sell ``quantity`` of ``asset_id`` at ``venue``."""

    signal_id: int
    venue: int
    side: int
    leg: int
    asset_id: int
    quantity: int
    limit_price: int

    TLV_TYPE = TLVType.ORDER_REQUEST
    SIZE = _LAYOUT.size

    def to_bytes(self) -> bytes:
        return _LAYOUT.pack(*astuple(self))

    @classmethod
    def from_bytes(cls, payload: bytes | bytearray | memoryview) -> Self:
        if len(payload) != cls.SIZE:
            raise PayloadSizeMismatch(cls.TLV_TYPE, cls.SIZE, len(payload))
        return cls(*_LAYOUT.unpack(payload))
