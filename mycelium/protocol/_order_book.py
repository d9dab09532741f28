"""``OrderBookTLV`` (type 3): a book snapshot of variable depth.

How this works. The original (``tlv/market_data.rs``, ``OrderBookTLV::to_bytes``) writes a
36-byte head, asset_id u64 @0, venue_id u16 @8, asset_type u8 @10, reserved u8 @11,
timestamp_ns u64 @12, sequence u64 @20, precision_factor i64 @28, then the bids (highest
first) and the asks (lowest first), each as a u32 count and that many 24-byte
``OrderLevel``s (price i64, size i64, order_count u32, reserved u32). Prices and sizes are
integers scaled by ``precision_factor`` (10**8 for the 8-decimal exchanges, more where a
venue quotes finer), so a price with more than 8 decimals is carried exactly. The payload
may exceed 255 bytes: the builder then uses the extended TLV form.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Self

from mycelium.protocol._errors import EncodeError, ProtocolError
from mycelium.protocol._instrument import InstrumentId
from mycelium.protocol._types import MAX_EXTENDED_PAYLOAD, TLVType

__all__ = ["OrderBookTLV", "OrderLevel"]

_HEAD = struct.Struct("<QHBBQQq")
_COUNT = struct.Struct("<I")
_LEVEL = struct.Struct("<qqII")


@dataclass(frozen=True, slots=True)
class OrderLevel:
    """One price level: ``price`` and ``size`` scaled by the book's precision factor."""

    price: int
    size: int
    order_count: int = 0
    reserved: int = 0


@dataclass(slots=True)
class OrderBookTLV:
    """A book snapshot; ``from_bytes`` raises ``ProtocolError`` for a payload whose counts
    do not match its length, ``to_bytes`` raises ``EncodeError`` for out-of-range fields."""

    asset_id: int = 0
    venue_id: int = 0
    asset_type: int = 0
    reserved: int = 0
    timestamp_ns: int = 0
    sequence: int = 0
    precision_factor: int = 100_000_000
    bids: list[OrderLevel] = field(default_factory=list)
    asks: list[OrderLevel] = field(default_factory=list)

    TLV_TYPE: ClassVar[int] = TLVType.ORDER_BOOK
    HEAD_SIZE: ClassVar[int] = _HEAD.size

    @property
    def instrument(self) -> InstrumentId:
        """The instrument this book is of."""
        return InstrumentId(self.asset_id, self.venue_id, self.asset_type, self.reserved)

    def decimal(self, scaled: int) -> Decimal:
        """A level's scaled price or size as its exact decimal value."""
        return Decimal(scaled) / Decimal(self.precision_factor)

    def to_bytes(self) -> bytes:
        """The wire payload."""
        if self.precision_factor <= 0:
            raise EncodeError(
                f"OrderBookTLV: precision_factor must be > 0: {self.precision_factor}"
            )
        try:
            parts = [
                _HEAD.pack(self.asset_id, self.venue_id, self.asset_type, self.reserved,
                           self.timestamp_ns, self.sequence, self.precision_factor)
            ]  # fmt: skip
            for side in (self.bids, self.asks):
                parts.append(_COUNT.pack(len(side)))
                parts.extend(_LEVEL.pack(x.price, x.size, x.order_count, x.reserved) for x in side)
        except struct.error as exc:
            raise EncodeError(f"OrderBookTLV: {exc}") from None
        payload = b"".join(parts)
        if len(payload) > MAX_EXTENDED_PAYLOAD:
            raise EncodeError(f"OrderBookTLV: {len(payload)} bytes exceed one TLV")
        return payload

    @classmethod
    def from_bytes(cls, payload: bytes | bytearray | memoryview) -> Self:
        """Decode a payload, every count checked against the bytes that are there."""
        view = memoryview(payload)
        if len(view) < _HEAD.size + 2 * _COUNT.size:
            raise ProtocolError(f"OrderBookTLV: {len(view)} bytes, the head alone is 44")
        head = _HEAD.unpack_from(view)
        at = _HEAD.size
        sides: list[list[OrderLevel]] = []
        for name in ("bids", "asks"):
            if at + _COUNT.size > len(view):
                raise ProtocolError(f"OrderBookTLV: truncated before the {name} count")
            (n,) = _COUNT.unpack_from(view, at)
            at += _COUNT.size
            end = at + n * _LEVEL.size
            if end > len(view):
                raise ProtocolError(f"OrderBookTLV: {n} {name} need {end} bytes, got {len(view)}")
            sides.append(
                [OrderLevel(*_LEVEL.unpack_from(view, o)) for o in range(at, end, _LEVEL.size)]
            )
            at = end
        if at != len(view):
            raise ProtocolError(f"OrderBookTLV: {len(view) - at} bytes after the asks")
        asset_id, venue_id, asset_type, reserved, timestamp_ns, sequence, scale = head
        return cls(asset_id, venue_id, asset_type, reserved, timestamp_ns, sequence, scale,
                   bids=sides[0], asks=sides[1])  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; levels as [price, size, order_count] lists."""
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("asset_id", "venue_id", "asset_type", "reserved", "timestamp_ns",
                         "sequence", "precision_factor")
        }  # fmt: skip
        for name in ("bids", "asks"):
            out[name] = [[x.price, x.size, x.order_count] for x in getattr(self, name)]
        return out
