"""DEX pool TLVs: swaps, syncs, liquidity events, ticks, pool state and invalidation.

They follow the original's ``#[repr(C)]`` structs (see ``_typed`` for the sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any, Self

from mycelium.protocol._errors import EncodeError
from mycelium.protocol._instrument import InstrumentId
from mycelium.protocol._tlv_layout import (
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    U128,
    Address,
    AddressPadding,
    TypedTLV,
    typed_tlv,
)
from mycelium.protocol._types import TLVType

__all__ = [
    "MAX_INSTRUMENTS",
    "MAX_POOL_TOKENS",
    "InvalidationReason",
    "PoolBurnTLV",
    "PoolLiquidityTLV",
    "PoolMintTLV",
    "PoolStateTLV",
    "PoolSwapTLV",
    "PoolSyncTLV",
    "PoolTickTLV",
    "StateInvalidationTLV",
]


@typed_tlv(TLVType.POOL_SWAP, 208)
@dataclass(slots=True)
class PoolSwapTLV(TypedTLV):
    """A DEX swap; amounts are u128 in the tokens' native decimals. Addresses are 20 bytes,
    each padded to 32 on the wire."""

    amount_in: U128 = 0
    amount_out: U128 = 0
    liquidity_after: U128 = 0
    timestamp_ns: U64 = 0
    block_number: U64 = 0
    tick_after: I32 = 0
    venue: U16 = 0
    amount_in_decimals: U8 = 0
    amount_out_decimals: U8 = 0
    _padding: Annotated[bytes, "8s"] = bytes(8)
    pool_address: Address = bytes(20)
    pool_address_padding: AddressPadding = bytes(12)
    token_in_addr: Address = bytes(20)
    token_in_padding: AddressPadding = bytes(12)
    token_out_addr: Address = bytes(20)
    token_out_padding: AddressPadding = bytes(12)
    sqrt_price_x96_after: Annotated[bytes, "32s"] = bytes(32)

    @property
    def sqrt_price_x96_after_int(self) -> int:
        """The sqrt price as an int: the 32 bytes read little-endian (its value fits u160)."""
        return int.from_bytes(self.sqrt_price_x96_after, "little")


@typed_tlv(TLVType.POOL_SYNC, 160)
@dataclass(slots=True)
class PoolSyncTLV(TypedTLV):
    """A V2-style pool's reserves after a Sync event (u128, native decimals)."""

    reserve0: U128 = 0
    reserve1: U128 = 0
    timestamp_ns: U64 = 0
    block_number: U64 = 0
    venue: U16 = 0
    token0_decimals: U8 = 0
    token1_decimals: U8 = 0
    _padding: Annotated[bytes, "12s"] = bytes(12)
    pool_address: Address = bytes(20)
    pool_address_padding: AddressPadding = bytes(12)
    token0_addr: Address = bytes(20)
    token0_padding: AddressPadding = bytes(12)
    token1_addr: Address = bytes(20)
    token1_padding: AddressPadding = bytes(12)


@dataclass(slots=True)
class _PoolLiquidityEvent(TypedTLV):
    """The shared layout of PoolMintTLV and PoolBurnTLV (the original's twin structs): a V3
    position's liquidity delta and the token amounts it moved, in native decimals."""

    liquidity_delta: U128 = 0
    amount0: U128 = 0
    amount1: U128 = 0
    timestamp_ns: U64 = 0
    tick_lower: I32 = 0
    tick_upper: I32 = 0
    venue: U16 = 0
    token0_decimals: U8 = 0
    token1_decimals: U8 = 0
    pool_address: Address = bytes(20)
    pool_address_padding: AddressPadding = bytes(12)
    provider_addr: Address = bytes(20)
    provider_padding: AddressPadding = bytes(12)
    token0_addr: Address = bytes(20)
    token0_padding: AddressPadding = bytes(12)
    token1_addr: Address = bytes(20)
    token1_padding: AddressPadding = bytes(12)
    _padding: Annotated[bytes, "12s"] = bytes(12)


@typed_tlv(TLVType.POOL_MINT, 208)
@dataclass(slots=True)
class PoolMintTLV(_PoolLiquidityEvent):
    """Liquidity added to a pool (a V3 Mint: the range, the owner, the amounts paid in)."""


@typed_tlv(TLVType.POOL_BURN, 208)
@dataclass(slots=True)
class PoolBurnTLV(_PoolLiquidityEvent):
    """Liquidity removed from a pool (a V3 Burn: the range, the owner, the amounts owed)."""


@typed_tlv(TLVType.POOL_TICK, 64)
@dataclass(slots=True)
class PoolTickTLV(TypedTLV):
    """A V3 tick crossed: the net liquidity that changes there and the price after."""

    liquidity_net: I64 = 0
    price_sqrt: U64 = 0
    timestamp_ns: U64 = 0
    tick: I32 = 0
    venue: U16 = 0
    pool_address: Address = bytes(20)
    pool_address_padding: AddressPadding = bytes(12)
    _padding: Annotated[bytes, "2s"] = bytes(2)


@typed_tlv(TLVType.POOL_STATE, 192)
@dataclass(slots=True)
class PoolStateTLV(TypedTLV):
    """A pool's full state (sent at start and now and then): reserves for V2, sqrt price,
    tick and liquidity for V3, its fee in basis points and its tokens."""

    reserve0: U128 = 0
    reserve1: U128 = 0
    sqrt_price_x96: U128 = 0
    liquidity: U128 = 0
    block_number: U64 = 0
    timestamp_ns: U64 = 0
    tick: I32 = 0
    fee_rate: U32 = 0
    venue: U16 = 0
    pool_type: U8 = 0
    token0_decimals: U8 = 0
    token1_decimals: U8 = 0
    _padding: Annotated[bytes, "3s"] = bytes(3)
    pool_address: Address = bytes(20)
    pool_address_padding: AddressPadding = bytes(12)
    token0_addr: Address = bytes(20)
    token0_padding: AddressPadding = bytes(12)
    token1_addr: Address = bytes(20)
    token1_padding: AddressPadding = bytes(12)


MAX_POOL_TOKENS = 8
MAX_INSTRUMENTS = 16


def _fixed_slots(items: Sequence[bytes], slots: int, width: int, what: str) -> bytes:
    """The element area of an original ``FixedVec``: the items, then zeroed slots."""
    if not 0 < len(items) <= slots:
        raise EncodeError(f"{what}: 1 to {slots} entries, got {len(items)}")
    return b"".join(items).ljust(slots * width, b"\0")


@typed_tlv(TLVType.POOL_LIQUIDITY, 208)
@dataclass(slots=True)
class PoolLiquidityTLV(TypedTLV):
    """A pool's reserves of up to 8 tokens (u128, native decimals); ``reserves`` lists the
    ``reserve_count`` valid ones."""

    timestamp_ns: U64 = 0
    _vec_align: Annotated[bytes, "8s"] = bytes(8)
    reserve_count: U16 = 0
    _count_padding: Annotated[bytes, "14s"] = bytes(14)
    reserve_slots: Annotated[bytes, "128s"] = bytes(128)
    pool_address: Address = bytes(20)
    pool_address_padding: AddressPadding = bytes(12)
    venue: U16 = 0
    _padding: Annotated[bytes, "14s"] = bytes(14)

    @classmethod
    def make(cls, reserves: Sequence[int], **fields: Any) -> Self:
        """A payload holding ``reserves``; raises ``EncodeError`` for none or more than 8."""
        try:
            words = [r.to_bytes(16, "little") for r in reserves]
        except OverflowError:
            raise EncodeError("PoolLiquidityTLV: a reserve does not fit u128") from None
        slots = _fixed_slots(words, MAX_POOL_TOKENS, 16, "PoolLiquidityTLV reserves")
        return cls(reserve_count=len(words), reserve_slots=slots, **fields)

    @property
    def reserves(self) -> list[int]:
        """The valid reserves; raises ``ValueError`` for a count past the 8 slots."""
        if self.reserve_count > MAX_POOL_TOKENS:
            raise ValueError(f"PoolLiquidityTLV: reserve_count {self.reserve_count} > 8")
        raw = self.reserve_slots
        return [
            int.from_bytes(raw[i * 16 : i * 16 + 16], "little") for i in range(self.reserve_count)
        ]


class InvalidationReason(IntEnum):
    """Why a venue's state is no longer to be trusted (the original's numbers)."""

    DISCONNECTION = 0
    AUTHENTICATION_FAILURE = 1
    RATE_LIMITED = 2
    STALENESS = 3
    MAINTENANCE = 4
    RECOVERY = 5


@typed_tlv(TLVType.STATE_INVALIDATION, 224)
@dataclass(slots=True)
class StateInvalidationTLV(TypedTLV):
    """Up to 16 instruments of a venue whose state consumers must drop (``reason``: an
    ``InvalidationReason``); ``instruments`` lists the ``instrument_count`` valid ones.
    The original's ``sequence`` is ``invalidation_sequence`` here, apart from the header's."""

    invalidation_sequence: U64 = 0
    timestamp_ns: U64 = 0
    instrument_count: U16 = 0
    _count_padding: Annotated[bytes, "6s"] = bytes(6)
    instrument_slots: Annotated[bytes, "192s"] = bytes(192)
    venue: U16 = 0
    reason: U8 = 0
    _padding: Annotated[bytes, "5s"] = bytes(5)

    @classmethod
    def make(cls, instruments: Sequence[InstrumentId], **fields: Any) -> Self:
        """A payload naming ``instruments``; raises ``EncodeError`` for none or more than 16."""
        words = [i.to_bytes() for i in instruments]
        slots = _fixed_slots(words, MAX_INSTRUMENTS, InstrumentId.SIZE, "StateInvalidationTLV")
        return cls(instrument_count=len(words), instrument_slots=slots, **fields)

    @property
    def instruments(self) -> list[InstrumentId]:
        """The valid instruments; raises ``ValueError`` for a count past the 16 slots."""
        if self.instrument_count > MAX_INSTRUMENTS:
            raise ValueError(f"StateInvalidationTLV: instrument_count {self.instrument_count} > 16")
        size, raw = InstrumentId.SIZE, self.instrument_slots
        return [
            InstrumentId.from_bytes(raw[i * size : (i + 1) * size])
            for i in range(self.instrument_count)
        ]
