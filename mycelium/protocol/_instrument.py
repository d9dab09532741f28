"""Instrument identifiers: the 12-byte ``InstrumentId`` and its venue / asset-type numbers.

How this works. On the wire an instrument is asset_id u64 @0, venue u16 @8, asset_type u8
@10, reserved u8 @11 (Trade and Quote spread the same four fields over their own layout).
The asset_id is built the way the original builds it, as the golden trade vectors show:
a ticker symbol packs its ASCII bytes from the most significant byte down ("BTC" ->
0x4254430000000000), an EVM token uses the first 8 bytes of its address read big-endian.
``to_u64``/``from_u64`` give the original's compact key: venue in bits 48-63, asset type
in bits 40-47, the low 40 bits of asset_id below (lossy for wider asset ids).

A pair's quote currency is part of the instrument: ETH/USD, ETH/USDT and ETH/USDC are
different markets (a stablecoin is not a dollar). It travels in the ``reserved`` byte as
a ``QuoteCurrency`` (0 = USD, so every golden vector, all dollar-quoted, reads the same).
This is our use of a byte the original leaves reserved.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

__all__ = ["AssetType", "InstrumentId", "QuoteCurrency", "VenueId"]

_INSTRUMENT = struct.Struct("<QHBB")
_ASSET_ID_BITS = 40
_ASSET_ID_MASK = (1 << _ASSET_ID_BITS) - 1


class VenueId(IntEnum):
    """Where an instrument trades; numbers as in the original (confirmed by the vectors)."""

    # Centralised exchanges (100-199)
    BINANCE = 100
    KRAKEN = 101
    COINBASE = 102
    # Chains (200-299)
    ETHEREUM = 200
    POLYGON = 202
    # DEXes on Ethereum (300-399)
    UNISWAP_V2 = 300
    UNISWAP_V3 = 301
    # DEXes on Polygon (400-499)
    QUICKSWAP = 400
    SUSHISWAP_POLYGON = 401


class AssetType(IntEnum):
    """What kind of asset an instrument is (crypto range 50-99 in the original)."""

    TOKEN = 50  # an ERC-20 style token, identified by its address
    COIN = 51  # a native coin identified by its ticker, e.g. BTC, ETH


class QuoteCurrency(IntEnum):
    """What a pair is priced in (the instrument's ``reserved`` byte)."""

    USD = 0
    USDT = 1
    USDC = 2
    EUR = 3
    BTC = 4
    ETH = 5

    @classmethod
    def parse(cls, name: str) -> QuoteCurrency:
        """The currency named ``name`` ("USD", "usdt"); raises ``ValueError`` for others."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown quote currency {name!r}") from None


@dataclass(frozen=True, slots=True)
class InstrumentId:
    """A venue-qualified instrument; ``to_bytes`` gives its 12-byte wire form."""

    asset_id: int
    venue: int
    asset_type: int
    reserved: int = 0

    SIZE = _INSTRUMENT.size

    @classmethod
    def from_symbol(cls, venue: int, symbol: str, asset_type: int = AssetType.COIN) -> Self:
        """An instrument named by an ASCII ticker of at most 8 characters."""
        raw = symbol.encode("ascii")
        if not 0 < len(raw) <= 8:
            raise ValueError(f"symbol must be 1-8 ASCII characters, got {symbol!r}")
        return cls(int.from_bytes(raw.ljust(8, b"\0"), "big"), venue, asset_type)

    @classmethod
    def from_evm_address(
        cls, address: bytes | str, venue: int = VenueId.ETHEREUM, asset_type: int = AssetType.TOKEN
    ) -> Self:
        """A token named by its 20-byte address (bytes or hex, with or without 0x)."""
        raw = bytes.fromhex(address.removeprefix("0x")) if isinstance(address, str) else address
        if len(raw) != 20:
            raise ValueError(f"an EVM address is 20 bytes, got {len(raw)}")
        return cls(int.from_bytes(raw[:8], "big"), venue, asset_type)

    @classmethod
    def from_pair(cls, venue: int, base: str, quote: str | int) -> Self:
        """A pair ("ETH", "USDT") at ``venue``: the base ticker, the quote in ``reserved``;
        raises ``ValueError`` for an unknown quote currency or a bad ticker."""
        currency = QuoteCurrency.parse(quote) if isinstance(quote, str) else QuoteCurrency(quote)
        asset = cls.from_symbol(venue, base).asset_id
        return cls(asset, venue, AssetType.COIN, int(currency))

    @property
    def quote(self) -> QuoteCurrency | None:
        """The pair's quote currency, or None if ``reserved`` holds no known one."""
        try:
            return QuoteCurrency(self.reserved)
        except ValueError:
            return None

    @property
    def symbol(self) -> str | None:
        """The ticker packed in ``asset_id``, or None if it does not hold one."""
        raw = self.asset_id.to_bytes(8, "big").rstrip(b"\0")
        return raw.decode("ascii") if raw and raw.isascii() and raw.isalnum() else None

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Decode the 12-byte wire form."""
        if len(data) != cls.SIZE:
            raise ValueError(f"an InstrumentId is {cls.SIZE} bytes, got {len(data)}")
        return cls(*_INSTRUMENT.unpack(data))

    def to_bytes(self) -> bytes:
        """The 12-byte wire form."""
        return _INSTRUMENT.pack(self.asset_id, self.venue, self.asset_type, self.reserved)

    def to_u64(self) -> int:
        """The original's compact key (keeps only the low 40 bits of asset_id)."""
        return (
            (self.venue << 48)
            | (self.asset_type << _ASSET_ID_BITS)
            | (self.asset_id & _ASSET_ID_MASK)
        )

    @classmethod
    def from_u64(cls, key: int) -> Self:
        """Inverse of ``to_u64``."""
        return cls(key & _ASSET_ID_MASK, key >> 48, (key >> _ASSET_ID_BITS) & 0xFF)
