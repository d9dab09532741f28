"""Signal, system and execution TLVs: health, recovery, arbitrage signals, order legs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from mycelium.protocol._tlv_layout import (
    I64,
    U8,
    U16,
    U32,
    U64,
    Address,
    TypedTLV,
    typed_tlv,
)
from mycelium.protocol._types import TLVType

__all__ = ["ArbitrageSignalTLV", "OrderRequestTLV", "RecoveryRequestTLV", "SystemHealthTLV"]


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
