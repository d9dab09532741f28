"""A priced flash arbitrage and the two messages it becomes: a signal and its orders.

How this works
--------------
``Opportunity`` carries every money field as 8-decimal fixed point in the quote token, so
``signal_message`` (an ArbitrageSignalTLV on the signal relay) and ``order_message`` (one
execution message with both ORDER_REQUEST legs, so one queue consumer gets both) copy
integers and never round again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mycelium.protocol import (
    ArbitrageSignalTLV,
    OrderRequestTLV,
    RelayDomain,
    SourceType,
    TLVType,
    encode_message,
)
from mycelium.services.markets import asset_id
from mycelium.services.orders import BUY, SELL
from mycelium.services.sizing import Q8, PoolView

if TYPE_CHECKING:
    from mycelium.services.arbitrage import ArbitrageConfig

__all__ = ["Opportunity", "order_legs", "order_message", "signal_message"]


@dataclass(frozen=True)
class Opportunity:
    """A priced flash arbitrage; money fields are 8-decimal fixed point in the quote token
    (USDC), quantity in the base token. ``buy_cost`` is the loan plus its fee,
    ``sell_proceeds`` what the sale repays it with."""

    ticker: str
    buy: PoolView
    sell: PoolView
    quantity: int
    capital: int
    buy_cost: int
    sell_proceeds: int
    gross: int
    fees: int
    flash_fee: int
    slippage: int
    gas: int
    net: int
    spread_bps: int
    gas_price_gwei: int
    timestamp_ns: int


def signal_message(opp: Opportunity, signal_id: int, config: ArbitrageConfig) -> bytes:
    """The opportunity as an ArbitrageSignalTLV on the signal relay."""
    signal = ArbitrageSignalTLV(
        strategy_id=config.strategy_id,
        signal_id=signal_id,
        chain_id=config.chain_id,
        source_pool=opp.buy.pool.address,
        target_pool=opp.sell.pool.address,
        source_venue=opp.buy.pool.venue,
        target_venue=opp.sell.pool.venue,
        token_in=opp.buy.quote.address,
        token_out=opp.buy.base.address,
        expected_profit_usd_q8=opp.gross,
        required_capital_usd_q8=opp.capital,
        spread_bps=opp.spread_bps,
        dex_fees_usd_q8=opp.fees,
        gas_cost_usd_q8=opp.gas,
        slippage_usd_q8=opp.slippage,
        net_profit_usd_q8=opp.net,
        slippage_tolerance_bps=config.slippage_tolerance_bps,
        max_gas_price_gwei=config.max_gas_price_gwei,
        valid_until=opp.timestamp_ns // 1_000_000_000 + config.valid_for_s,
        priority=min(0xFFFF, max(0, opp.net // 1_000_000)),  # net profit in cents
        timestamp_ns=opp.timestamp_ns,
    )
    return encode_message(
        RelayDomain.SIGNAL,
        SourceType.ARBITRAGE_STRATEGY,
        [(TLVType.ARBITRAGE_SIGNAL, signal.to_bytes())],
        sequence=signal_id,
    )


def order_legs(opp: Opportunity, signal_id: int) -> tuple[OrderRequestTLV, OrderRequestTLV]:
    """Buy at the cheap pool, sell at the dear one; prices per unit include fees."""
    asset = asset_id(opp.ticker)
    q = max(1, opp.quantity)
    return (
        OrderRequestTLV(signal_id, opp.buy.pool.venue, BUY, 0, asset, opp.quantity,
                        opp.buy_cost * Q8 // q),
        OrderRequestTLV(signal_id, opp.sell.pool.venue, SELL, 1, asset, opp.quantity,
                        opp.sell_proceeds * Q8 // q),
    )  # fmt: skip


def order_message(opp: Opportunity, signal_id: int) -> bytes:
    """Both legs in one execution message, so one consumer of the queue gets both."""
    return encode_message(
        RelayDomain.EXECUTION,
        SourceType.ARBITRAGE_STRATEGY,
        [(TLVType.ORDER_REQUEST, leg.to_bytes()) for leg in order_legs(opp, signal_id)],
        sequence=signal_id,
    )
