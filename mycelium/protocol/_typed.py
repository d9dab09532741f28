"""Typed TLV payloads: dataclasses whose field annotations are the wire layout.

How this works. Each class is a ``@dataclass(slots=True)`` whose fields are declared in
offset order with an ``Annotated`` width (``U64``, ``I64``, ``Address``, ...). The
``@typed_tlv(tlv_type, size)`` decorator reads those annotations once and compiles one
``struct.Struct`` for the whole payload, so ``from_bytes`` is a single ``unpack_from`` and
``to_bytes`` a single ``pack``. u128 fields travel as 16 little-endian bytes and are
converted to Python ints. Field names and offsets are those of the original Rust structs
(``tests/data/protocol-v2/layouts.json``; the tests check every offset).

Deliberate deviations from the original, which we accept on purpose: ``QuoteTLV`` is 56
bytes and ``ArbitrageSignalTLV`` 170 bytes (their real struct sizes), where the original's
type registry says 52 and 168 and so rejects its own messages.

The pool-event, pool-state and invalidation classes follow the original's ``#[repr(C)]``
structs (``tlv/market_data.rs``, ``tlv/pool_state.rs``) as rustc lays them out today, with
u128 aligned to 16 bytes as ``layouts.json`` shows for PoolSyncTLV: PoolMint/PoolBurn 208,
PoolTick 64, PoolState 192, PoolLiquidity 208 (its source comment's 184 assumes 8-byte
u128 alignment) and StateInvalidation 224 bytes; the fixed vectors inside the last two
(``FixedVec``: a u16 count, padding, then every slot) are one bytes field each with a list
accessor. The original defines no struct for the execution TLVs; ``OrderRequestTLV`` is this
project's layout in the size the original's registry fixes (32 bytes), kept out of
``TYPED_TLV_CLASSES`` so that tools do not read the original's order messages with it. The variable-size ``OrderBookTLV`` lives in ``_order_book``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Annotated, Any, ClassVar, Self, TypeVar, get_type_hints

from mycelium.protocol._errors import EncodeError, PayloadSizeMismatch
from mycelium.protocol._instrument import InstrumentId
from mycelium.protocol._types import TLVType

__all__ = [
    "TYPED_TLV_CLASSES",
    "ArbitrageSignalTLV",
    "GasPriceTLV",
    "InvalidationReason",
    "OrderRequestTLV",
    "PoolBurnTLV",
    "PoolLiquidityTLV",
    "PoolMintTLV",
    "PoolStateTLV",
    "PoolSwapTLV",
    "PoolSyncTLV",
    "PoolTickTLV",
    "QuoteTLV",
    "RecoveryRequestTLV",
    "StateInvalidationTLV",
    "SystemHealthTLV",
    "TradeTLV",
    "TypedTLV",
]

# Field widths: the metadata string is the struct code; "u128" is 16 LE bytes as an int.
U8 = Annotated[int, "B"]
U16 = Annotated[int, "H"]
U32 = Annotated[int, "I"]
I32 = Annotated[int, "i"]
U64 = Annotated[int, "Q"]
I64 = Annotated[int, "q"]
U128 = Annotated[int, "u128"]
Address = Annotated[bytes, "20s"]
AddressPadding = Annotated[bytes, "12s"]

_U128_CODE = "u128"


class TypedTLV:
    """Base of the typed payload classes: ``from_bytes``/``to_bytes``/``to_dict``."""

    __slots__ = ()

    TLV_TYPE: ClassVar[int]
    SIZE: ClassVar[int]
    _STRUCT: ClassVar[struct.Struct]
    _NAMES: ClassVar[tuple[str, ...]]
    _CODES: ClassVar[tuple[str, ...]]  # struct code of each field, u128 as "16s"
    _U128: ClassVar[tuple[int, ...]]  # positions of u128 fields in _NAMES

    @classmethod
    def from_bytes(cls, payload: bytes | bytearray | memoryview) -> Self:
        """Decode a payload; raises ``PayloadSizeMismatch`` unless it is exactly ``SIZE``."""
        if len(payload) != cls.SIZE:
            raise PayloadSizeMismatch(cls.TLV_TYPE, cls.SIZE, len(payload))
        values = cls._STRUCT.unpack_from(payload)
        if cls._U128:
            wide = list(values)
            for i in cls._U128:
                wide[i] = int.from_bytes(wide[i], "little")
            return cls(*wide)
        return cls(*values)

    def to_bytes(self) -> bytes:
        """Encode to the wire payload; raises ``EncodeError`` for out-of-range fields."""
        values = [getattr(self, name) for name in self._NAMES]
        try:
            for i in self._U128:
                values[i] = values[i].to_bytes(16, "little")
            return self._STRUCT.pack(*values)
        except (struct.error, OverflowError) as exc:
            raise EncodeError(f"{type(self).__name__}: {exc}") from None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Inverse of ``to_dict``: u128 fields may be ints or decimal strings, byte fields
        bytes or hex. Missing fields take their defaults; unknown names raise TypeError."""
        converted = dict(values)
        for i, name in enumerate(cls._NAMES):
            value = converted.get(name)
            if isinstance(value, str):
                converted[name] = int(value) if i in cls._U128 else bytes.fromhex(value)
        return cls(**converted)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields in the golden vectors' notation: ints, u128 as decimal
        strings, byte fields as hex."""
        out: dict[str, Any] = {}
        for i, name in enumerate(self._NAMES):
            value = getattr(self, name)
            if i in self._U128:
                value = str(value)
            elif isinstance(value, bytes):
                value = value.hex()
            out[name] = value
        return out


_T = TypeVar("_T", bound=type[TypedTLV])
TYPED_TLV_CLASSES: dict[int, type[TypedTLV]] = {}


def typed_tlv(tlv_type: int, size: int, *, register: bool = True) -> Callable[[_T], _T]:
    """Compile a dataclass's annotated fields into its wire struct and register it (not a
    layout of this project's own, which tools must not apply to the original's messages)."""

    def compile_layout(cls: _T) -> _T:
        hints = get_type_hints(cls, include_extras=True)
        names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]  # a dataclass
        codes = [hints[name].__metadata__[0] for name in names]
        cls.TLV_TYPE = tlv_type
        cls._NAMES = names
        cls._U128 = tuple(i for i, code in enumerate(codes) if code == _U128_CODE)
        cls._CODES = tuple("16s" if code == _U128_CODE else code for code in codes)
        cls._STRUCT = struct.Struct("<" + "".join(cls._CODES))
        cls.SIZE = cls._STRUCT.size
        if size != cls.SIZE:
            raise TypeError(f"{cls.__name__} layout is {cls.SIZE} bytes, expected {size}")
        if register:
            TYPED_TLV_CLASSES[tlv_type] = cls
        return cls

    return compile_layout


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


@typed_tlv(TLVType.SYSTEM_HEALTH, 48)
@dataclass(slots=True)
class SystemHealthTLV(TypedTLV):
    """A service's health report."""

    timestamp_ns: U64 = 0
    connection_count: U32 = 0
    message_rate_per_sec: U32 = 0
    last_error_code: U32 = 0
    error_rate_per_thousand: U16 = 0
    latency_p95_us: U16 = 0
    service_type: U8 = 0
    health_status: U8 = 0
    cpu_usage_pct: U8 = 0
    memory_usage_pct: U8 = 0
    reserved: Annotated[bytes, "20s"] = bytes(20)


@typed_tlv(TLVType.RECOVERY_REQUEST, 24)
@dataclass(slots=True)
class RecoveryRequestTLV(TypedTLV):
    """A consumer asking to be resent messages after a sequence gap."""

    last_sequence: U64 = 0
    current_sequence: U64 = 0
    consumer_id: U32 = 0
    request_type: U8 = 0
    _padding: Annotated[bytes, "3s"] = bytes(3)  # struct tail padding, not in layouts.json


@typed_tlv(TLVType.ARBITRAGE_SIGNAL, 170)
@dataclass(slots=True)
class ArbitrageSignalTLV(TypedTLV):
    """A two-pool arbitrage opportunity; ``*_usd_q8`` are 8-decimal fixed-point dollars.
    170 bytes, unaligned (deviation: the original registry says 168)."""

    strategy_id: U16 = 0
    signal_id: U64 = 0
    chain_id: U32 = 0
    source_pool: Address = bytes(20)
    target_pool: Address = bytes(20)
    source_venue: U16 = 0
    target_venue: U16 = 0
    token_in: Address = bytes(20)
    token_out: Address = bytes(20)
    expected_profit_usd_q8: I64 = 0
    required_capital_usd_q8: I64 = 0
    spread_bps: U16 = 0
    dex_fees_usd_q8: I64 = 0
    gas_cost_usd_q8: I64 = 0
    slippage_usd_q8: I64 = 0
    net_profit_usd_q8: I64 = 0
    slippage_tolerance_bps: U16 = 0
    max_gas_price_gwei: U32 = 0
    valid_until: U32 = 0
    priority: U16 = 0
    reserved: Annotated[bytes, "2s"] = bytes(2)
    timestamp_ns: U64 = 0


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


@typed_tlv(TLVType.ORDER_REQUEST, 32, register=False)
@dataclass(slots=True)
class OrderRequestTLV(TypedTLV):
    """One leg of an order (this project's layout): buy (side 0) or sell (1) ``quantity``
    of ``asset_id`` at ``venue`` for at most ``limit_price`` per unit, both 8-decimal
    fixed point; ``leg`` numbers the legs of one signal's orders."""

    signal_id: U32 = 0
    venue: U16 = 0
    side: U8 = 0
    leg: U8 = 0
    asset_id: U64 = 0
    quantity: I64 = 0
    limit_price: I64 = 0
