"""Flash arbitrage: best prices per asset across venues -> arbitrage signals and orders.

How this works
--------------
``Detector`` is sans-IO. It keeps, per asset ("ETH"), the latest state of every venue that
quotes it: a top of book (Kraken QuoteTLV) or a pool's reserves (V2 PoolSyncTLV; for a
V3 PoolSwapTLV the virtual reserves L/sqrtP and L*sqrtP, which price a small trade the
same way). For every ordered pair of venues it costs buying ``trade_size`` at one and
selling at the other:

* a book fills at the ask / bid (no more than the size shown), paying the taker fee;
* a pool fills on its constant-product curve after its fee; slippage is the distance
  from the mid price;
* each pool leg costs gas: ``gas_units_per_swap`` x the gas price of the latest
  GasPriceTLV x the native token's USD price.

net = (sell reference - buy reference) - fees - slippage - gas, each rounded to
8-decimal fixed point first, so the signal's fields add up exactly. The best pair is an
opportunity when net >= ``min_profit_usd``. A small state machine per asset emits it
once when it opens (or moves to another venue pair) and stays quiet while it persists;
it re-arms when the spread closes.

``FlashArbitrage`` feeds the detector from ``market_data`` and publishes each opportunity
as an ArbitrageSignalTLV on ``signals`` and a two-leg order request on ``execution``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mycelium.protocol import (
    ArbitrageSignalTLV,
    GasPriceTLV,
    PoolSwapTLV,
    PoolSyncTLV,
    QuoteTLV,
    RelayDomain,
    SourceType,
    TLVType,
    encode_message,
)
from mycelium.services.base import Inbox, Service
from mycelium.services.markets import (
    POLYGON_CHAIN_ID,
    QUOTE_TICKERS,
    TOKENS,
    VENUE_FEES_BPS,
    asset_id,
    pool_for,
    ticker_of,
    token_for_ticker,
)
from mycelium.services.orders import BUY, SELL, OrderRequest

__all__ = ["ArbitrageConfig", "Detector", "FlashArbitrage", "Opportunity", "VenueState"]

log = logging.getLogger("mycelium.services")

Q8 = 100_000_000
NO_POOL = bytes(20)


def q8(value: float) -> int:
    return round(value * Q8)


@dataclass(frozen=True)
class ArbitrageConfig:
    """Strategy parameters; the defaults are what ``mycelium service flash_arbitrage`` runs."""

    trade_size: dict[str, float] = field(default_factory=lambda: {"ETH": 1.0, "BTC": 0.05})
    min_profit_usd: float = 1.0
    gas_units_per_swap: int = 150_000
    gas_price_gwei: int = 50  # until the first GasPriceTLV
    native_usd: float = 0.5  # POL, which pays Polygon gas
    max_gas_price_gwei: int = 500
    slippage_tolerance_bps: int = 50
    valid_for_s: int = 2
    strategy_id: int = 21


@dataclass
class VenueState:
    """One venue's view of one asset: a book (bid/ask with sizes) or a pool (reserves)."""

    venue: int
    pool: bytes
    fee_bps: int
    bid: float = 0.0
    ask: float = 0.0
    bid_size: float = 0.0
    ask_size: float = 0.0
    reserve_base: float = 0.0
    reserve_quote: float = 0.0

    @property
    def is_pool(self) -> bool:
        return self.pool != NO_POOL

    @property
    def mid(self) -> float:
        if self.is_pool:
            return self.reserve_quote / self.reserve_base
        return (self.bid + self.ask) / 2

    def limit(self, side: int) -> float:
        """The most this venue can fill on ``side`` (a pool: half its depth)."""
        if self.is_pool:
            return self.reserve_base / 2
        return self.ask_size if side == BUY else self.bid_size

    def fill(self, side: int, qty: float) -> tuple[float, float, float]:
        """(reference value, fee, slippage) in USD of trading ``qty`` on ``side``.
        Buying costs reference + fee + slippage; selling yields reference - fee - slippage."""
        f = self.fee_bps / 10_000
        if not self.is_pool:
            ref = (self.ask if side == BUY else self.bid) * qty
            return ref, ref * f, 0.0
        rb, rq, mid = self.reserve_base, self.reserve_quote, self.mid
        ref = mid * qty
        if side == BUY:
            net_in = rq * qty / (rb - qty)  # quote paid into the curve
            return ref, net_in / (1 - f) - net_in, net_in - ref
        net = qty * (1 - f)
        return ref, ref * f, mid * net - rq * net / (rb + net)


@dataclass(frozen=True)
class Opportunity:
    """A priced two-venue trade; money fields are 8-decimal fixed-point USD."""

    ticker: str
    buy: VenueState
    sell: VenueState
    quantity: int
    buy_cost: int
    sell_proceeds: int
    gross: int
    fees: int
    slippage: int
    gas: int
    net: int
    spread_bps: int
    gas_price_gwei: int
    timestamp_ns: int


class Detector:
    """Market data in (``update``), opportunities out; no I/O."""

    def __init__(self, config: ArbitrageConfig | None = None) -> None:
        self.config = config or ArbitrageConfig()
        self.venues: dict[str, dict[tuple[int, bytes], VenueState]] = {}
        self.gas_price_gwei = self.config.gas_price_gwei
        self.open: dict[str, tuple[tuple[int, bytes], tuple[int, bytes]]] = {}

    def update(self, tlv_type: int, payload: bytes | memoryview) -> Opportunity | None:
        """Apply one market-data TLV; returns an opportunity when one opens."""
        if tlv_type == TLVType.QUOTE:
            ticker, ts = self._quote(QuoteTLV.from_bytes(payload))
        elif tlv_type == TLVType.POOL_SYNC:
            ticker, ts = self._sync(PoolSyncTLV.from_bytes(payload))
        elif tlv_type == TLVType.POOL_SWAP:
            ticker, ts = self._swap(PoolSwapTLV.from_bytes(payload))
        elif tlv_type == TLVType.GAS_PRICE:
            self.gas_price_gwei = GasPriceTLV.from_bytes(payload).gas_price_gwei
            return None
        else:
            return None  # trades move no book; other types are not ours
        return None if ticker is None else self._evaluate(ticker, ts)

    # -- venue state ------------------------------------------------------------------
    def _state(self, ticker: str, venue: int, pool: bytes, fee_bps: int) -> VenueState:
        states = self.venues.setdefault(ticker, {})
        state = states.get((venue, pool))
        if state is None:
            state = states[(venue, pool)] = VenueState(venue, pool, fee_bps)
        return state

    def _quote(self, q: QuoteTLV) -> tuple[str | None, int]:
        if q.bid_price <= 0 or q.ask_price <= 0:
            return None, 0
        ticker = ticker_of(q.asset_id)
        s = self._state(ticker, q.venue_id, NO_POOL, VENUE_FEES_BPS.get(q.venue_id, 0))
        s.bid, s.ask = q.bid_price / Q8, q.ask_price / Q8
        s.bid_size, s.ask_size = q.bid_size / Q8, q.ask_size / Q8
        return ticker, q.timestamp_ns

    def _pool(
        self, address: bytes, venue: int, tokens: tuple[bytes, bytes], reserves: tuple[float, float]
    ) -> str | None:
        """Store a pool's (human-unit) reserves of token0/token1 under its base asset."""
        pool = pool_for(address)
        t0, t1 = TOKENS.get(tokens[0]), TOKENS.get(tokens[1])
        if pool is None or t0 is None or t1 is None or min(reserves) <= 0:
            return None
        r0, r1 = reserves[0] / 10**t0.decimals, reserves[1] / 10**t1.decimals
        if t0.ticker in QUOTE_TICKERS and t1.ticker not in QUOTE_TICKERS:
            ticker, base, quote = t1.ticker, r1, r0
        elif t1.ticker in QUOTE_TICKERS and t0.ticker not in QUOTE_TICKERS:
            ticker, base, quote = t0.ticker, r0, r1
        else:
            return None  # not priced in dollars
        s = self._state(ticker, venue, address, pool.fee_bps)
        s.reserve_base, s.reserve_quote = base, quote
        return ticker

    def _sync(self, t: PoolSyncTLV) -> tuple[str | None, int]:
        tokens = (t.token0_addr, t.token1_addr)
        return self._pool(t.pool_address, t.venue, tokens, (t.reserve0, t.reserve1)), t.timestamp_ns

    def _swap(self, t: PoolSwapTLV) -> tuple[str | None, int]:
        sqrt_price = t.sqrt_price_x96_after_int / (1 << 96)
        if sqrt_price <= 0 or t.liquidity_after <= 0:
            return None, 0
        token0, token1 = sorted((t.token_in_addr, t.token_out_addr))  # Uniswap orders them
        reserves = (t.liquidity_after / sqrt_price, t.liquidity_after * sqrt_price)
        return self._pool(t.pool_address, t.venue, (token0, token1), reserves), t.timestamp_ns

    # -- pricing ----------------------------------------------------------------------
    def _evaluate(self, ticker: str, timestamp_ns: int) -> Opportunity | None:
        """Price every venue pair; emit the best one if it is new and pays enough."""
        best: Opportunity | None = None
        states = list(self.venues[ticker].values())
        for buy in states:
            for sell in states:
                if buy is not sell:
                    opp = self._price(ticker, buy, sell, timestamp_ns)
                    if opp is not None and (best is None or opp.net > best.net):
                        best = opp
        if best is None or best.net < q8(self.config.min_profit_usd):
            self.open.pop(ticker, None)
            return None
        pair = ((best.buy.venue, best.buy.pool), (best.sell.venue, best.sell.pool))
        if self.open.get(ticker) == pair:
            return None  # still the same opportunity
        self.open[ticker] = pair
        return best

    def _price(
        self, ticker: str, buy: VenueState, sell: VenueState, timestamp_ns: int
    ) -> Opportunity | None:
        size = self.config.trade_size.get(ticker, 0.0)
        qty = min(size, buy.limit(BUY), sell.limit(SELL))
        if qty <= 0:
            return None
        buy_ref, buy_fee, buy_slip = buy.fill(BUY, qty)
        sell_ref, sell_fee, sell_slip = sell.fill(SELL, qty)
        pool_legs = buy.is_pool + sell.is_pool
        gas_usd = (
            pool_legs * self.config.gas_units_per_swap * self.gas_price_gwei * 1e-9
            * self.config.native_usd
        )  # fmt: skip
        gross = q8(sell_ref) - q8(buy_ref)
        fees = q8(buy_fee) + q8(sell_fee)
        slippage = q8(buy_slip) + q8(sell_slip)
        gas = q8(gas_usd)
        spread = (sell_ref - buy_ref) / buy_ref * 10_000
        return Opportunity(
            ticker=ticker,
            buy=buy,
            sell=sell,
            quantity=q8(qty),
            buy_cost=q8(buy_ref + buy_fee + buy_slip),
            sell_proceeds=q8(sell_ref - sell_fee - sell_slip),
            gross=gross,
            fees=fees,
            slippage=slippage,
            gas=gas,
            net=gross - fees - slippage - gas,
            spread_bps=max(0, min(0xFFFF, round(spread))),
            gas_price_gwei=self.gas_price_gwei,
            timestamp_ns=timestamp_ns,
        )


def signal_message(opp: Opportunity, signal_id: int, config: ArbitrageConfig) -> bytes:
    """The opportunity as an ArbitrageSignalTLV on the signal relay."""
    usd = token_for_ticker("USD")
    base = token_for_ticker(opp.ticker)
    signal = ArbitrageSignalTLV(
        strategy_id=config.strategy_id,
        signal_id=signal_id,
        chain_id=POLYGON_CHAIN_ID,
        source_pool=opp.buy.pool,
        target_pool=opp.sell.pool,
        source_venue=opp.buy.venue,
        target_venue=opp.sell.venue,
        token_in=usd.address if usd else NO_POOL,
        token_out=base.address if base else NO_POOL,
        expected_profit_usd_q8=opp.gross,
        required_capital_usd_q8=opp.buy_cost,
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


def order_legs(opp: Opportunity, signal_id: int) -> tuple[OrderRequest, OrderRequest]:
    """Buy at the cheap venue, sell at the dear one; prices per unit include costs."""
    asset = asset_id(opp.ticker)
    return (
        OrderRequest(signal_id, opp.buy.venue, BUY, 0, asset, opp.quantity,
                     opp.buy_cost * Q8 // opp.quantity),
        OrderRequest(signal_id, opp.sell.venue, SELL, 1, asset, opp.quantity,
                     opp.sell_proceeds * Q8 // opp.quantity),
    )  # fmt: skip


def order_message(opp: Opportunity, signal_id: int) -> bytes:
    """Both legs in one execution message, so one consumer of the queue gets both."""
    return encode_message(
        RelayDomain.EXECUTION,
        SourceType.ARBITRAGE_STRATEGY,
        [(OrderRequest.TLV_TYPE, leg.to_bytes()) for leg in order_legs(opp, signal_id)],
        sequence=signal_id,
    )


class FlashArbitrage(Service):
    """``market_data`` in; ``signals`` and ``execution`` out."""

    name = "flash_arbitrage"

    def __init__(self, *args: Any, config: ArbitrageConfig | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.detector = Detector(config)
        self.signals = 0
        self.last: Opportunity | None = None
        self._inbox: Inbox | None = None

    def connect(self) -> None:
        self._inbox = Inbox(self, [self.consumer("market_data")])

    def step(self) -> None:
        assert self._inbox is not None
        for message in self._inbox.messages():
            for tlv in message.tlvs:
                opp = self.detector.update(tlv.type, tlv.payload)
                if opp is not None:
                    self._emit(opp)

    def _emit(self, opp: Opportunity) -> None:
        self.signals += 1
        self.last = opp
        log.info(
            "signal %d: %s %.4f, buy at venue %d, sell at venue %d, net $%.2f",
            self.signals, opp.ticker, opp.quantity / Q8, opp.buy.venue, opp.sell.venue,
            opp.net / Q8,
        )  # fmt: skip
        config = self.detector.config
        if self.publish(signal_message(opp, self.signals, config)):
            self.publish(order_message(opp, self.signals))

    def disconnect(self) -> None:
        if self._inbox is not None:
            self._inbox.close()

    def report(self) -> dict[str, Any]:
        prices = {
            ticker: {f"{v.venue}:{v.pool.hex()[:8]}": round(v.mid, 4) for v in states.values()}
            for ticker, states in self.detector.venues.items()
        }
        return {"signals": self.signals, "gas_price_gwei": self.detector.gas_price_gwei,
                "prices": prices}  # fmt: skip
