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

This module gathers them; the layout machinery is ``_tlv_layout``, the classes live in
``_tlv_market`` (trades, quotes, gas), ``_tlv_pool`` (DEX pools) and ``_tlv_signal``
(system, signal and execution).
"""

from mycelium.protocol._tlv_layout import TYPED_TLV_CLASSES, TypedTLV
from mycelium.protocol._tlv_market import GasPriceTLV, QuoteTLV, TradeTLV
from mycelium.protocol._tlv_pool import (
    InvalidationReason,
    PoolBurnTLV,
    PoolLiquidityTLV,
    PoolMintTLV,
    PoolStateTLV,
    PoolSwapTLV,
    PoolSyncTLV,
    PoolTickTLV,
    StateInvalidationTLV,
)
from mycelium.protocol._tlv_signal import (
    ArbitrageSignalTLV,
    OrderRequestTLV,
    RecoveryRequestTLV,
    SystemHealthTLV,
)

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
