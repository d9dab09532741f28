"""Typed TLV payloads: dataclasses whose field annotations are the wire layout.

How this works. Each class is a ``@dataclass(slots=True)`` whose fields are declared in
offset order with an ``Annotated`` width (``U64``, ``I64``, ``Address``, ...). The
``@typed_tlv(tlv_type, size)`` decorator reads those annotations once and compiles one
``struct.Struct`` for the whole payload, so ``from_bytes`` is a single ``unpack_from`` and
``to_bytes`` a single ``pack``. u128 fields travel as 16 little-endian bytes and are
converted to Python ints. Field names and offsets are those of the original Rust structs
(``shared/protocol-v2/layouts.json``; the tests check every offset).

Deliberate deviations from the original, which we accept on purpose: ``QuoteTLV`` is 56
bytes and ``ArbitrageSignalTLV`` 170 bytes (their real struct sizes), where the original's
type registry says 52 and 168 and so rejects its own messages.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, ClassVar, Self, TypeVar, get_type_hints

from mycelium.protocol._errors import EncodeError, PayloadSizeMismatch
from mycelium.protocol._instrument import InstrumentId
from mycelium.protocol._types import TLVType

__all__ = [
    "TYPED_TLV_CLASSES",
    "ArbitrageSignalTLV",
    "GasPriceTLV",
    "PoolSwapTLV",
    "PoolSyncTLV",
    "QuoteTLV",
    "RecoveryRequestTLV",
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
            values = list(values)
            for i in cls._U128:
                values[i] = int.from_bytes(values[i], "little")
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


def typed_tlv(tlv_type: int, size: int) -> Callable[[_T], _T]:
    """Compile a dataclass's annotated fields into its wire struct and register it."""

    def compile_layout(cls: _T) -> _T:
        hints = get_type_hints(cls, include_extras=True)
        names = tuple(f.name for f in fields(cls))
        codes = [hints[name].__metadata__[0] for name in names]
        cls.TLV_TYPE = tlv_type
        cls._NAMES = names
        cls._U128 = tuple(i for i, code in enumerate(codes) if code == _U128_CODE)
        cls._CODES = tuple("16s" if code == _U128_CODE else code for code in codes)
        cls._STRUCT = struct.Struct("<" + "".join(cls._CODES))
        cls.SIZE = cls._STRUCT.size
        if size != cls.SIZE:
            raise TypeError(f"{cls.__name__} layout is {cls.SIZE} bytes, expected {size}")
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
