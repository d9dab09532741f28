"""Flash arbitrage: two pools on one chain, one transaction -> signals and orders.

How this works
--------------
``Detector`` is sans-IO. It keeps the latest state of every configured pool: a V2 pool's
reserves (PoolSyncTLV), a V3 pool's virtual reserves L/sqrtP and L*sqrtP with the bounds
of its current tick interval (PoolSwapTLV). A flash arbitrage borrows the quote token
(USDC) in a flash loan, buys the base token in one pool, sells it in another pool of the
same two tokens and repays the loan plus its fee, all in one transaction; so only pools
on one chain pair up. A centralised venue (Kraken) can never be a leg: its quotes only
price the chain's native token (POL), which pays the gas. CEX<->DEX spreads are not
signalled at all: they would need inventory on both sides and a transfer, which this
strategy does not model.

The trade size comes from ``sizing`` (closed form for two V2 pools, a bounded search
within the current tick range with V3); a priced ``Opportunity`` becomes its signal and
orders in ``opportunity``.

Gas is the chain's latest GasPriceTLV times the configured gas units (a flash loan plus
one swap per pool) times the native token's latest Kraken mid price. Every input has a
maximum age (per venue; gas and the native price too) measured against the newest
timestamp seen: a stale input never opens a signal, and without gas or native price
nothing opens. A per-pair state machine emits an opportunity once when it opens (or
moves to other pools) and re-arms when it closes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

from mycelium.protocol import GasPriceTLV, PoolSwapTLV, PoolSyncTLV, QuoteTLV, TLVType, VenueId
from mycelium.services.base import Inbox, Service
from mycelium.services.markets import POLYGON_CHAIN_ID, Pool, load_pools, ticker_of
from mycelium.services.opportunity import Opportunity, order_message, signal_message
from mycelium.services.sizing import (
    PRECISION_DIGITS,
    Q8,
    ZERO,
    PoolView,
    optimal_input,
    pair_output,
    q8,
)

__all__ = ["ArbitrageConfig", "Detector", "FlashArbitrage", "VenuePrice"]

log = logging.getLogger("mycelium.services")

#: Tokens a pair's profit is counted in.
STABLE_TICKERS = frozenset({"USDC", "USDT", "DAI", "USD"})


@dataclass(frozen=True)
class ArbitrageConfig:
    """Strategy parameters; the defaults are what ``mycelium service flash_arbitrage`` runs.
    Ages are seconds; gas units are this strategy's assumptions, not measured."""

    min_profit_usd: Decimal = Decimal(1)
    flash_fee_bps: Decimal = Decimal(5)  # Aave V3's flash-loan premium, 0.05%
    flash_loan_gas: int = 80_000
    swap_gas: dict[int, int] = field(default_factory=lambda: {2: 110_000, 3: 160_000})
    chain_id: int = POLYGON_CHAIN_ID
    native_ticker: str = "POL"
    max_age_s: dict[int, float] = field(default_factory=dict)  # venue -> seconds
    default_max_age_s: float = 30.0
    gas_max_age_s: float = 60.0
    native_max_age_s: float = 60.0
    max_gas_price_gwei: int = 500
    slippage_tolerance_bps: int = 50
    valid_for_s: int = 2
    strategy_id: int = 21


@dataclass(frozen=True)
class VenuePrice:
    """The latest price of an asset at a venue, for display (``venues``): floats, never
    traded on."""

    venue: int
    pool: bytes
    mid: float
    bid: float = 0.0
    ask: float = 0.0

    @property
    def is_pool(self) -> bool:
        return self.pool != bytes(20)


class Detector:
    """Market data in (``update``), opportunities out; no I/O."""

    def __init__(self, config: ArbitrageConfig | None = None,
                 pools: dict[bytes, Pool] | None = None) -> None:  # fmt: skip
        self.config = config or ArbitrageConfig()
        self.pools = load_pools() if pools is None else pools
        self.views: dict[bytes, PoolView] = {}
        self.gas: GasPriceTLV | None = None
        self.native: tuple[Decimal, int] | None = None  # (USD mid, timestamp)
        self.now_ns = 0
        self.open: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
        self.stale_skips = 0
        #: ticker -> (venue, pool) -> latest price: what a dashboard shows
        self.venues: dict[str, dict[tuple[int, bytes], VenuePrice]] = {}

    def update(self, tlv_type: int, payload: bytes | bytearray | memoryview) -> Opportunity | None:
        """Apply one market-data TLV; returns an opportunity when one opens."""
        view: PoolView | None = None
        if tlv_type == TLVType.POOL_SYNC:
            view = self._sync(PoolSyncTLV.from_bytes(payload))
        elif tlv_type == TLVType.POOL_SWAP:
            view = self._swap(PoolSwapTLV.from_bytes(payload))
        elif tlv_type == TLVType.GAS_PRICE:
            gas = GasPriceTLV.from_bytes(payload)
            if gas.venue == self.config.chain_id:
                self.gas = gas
                self._tick(gas.timestamp_ns)
        elif tlv_type == TLVType.QUOTE:
            self._quote(QuoteTLV.from_bytes(payload))
        if view is None:
            return None
        self.views[view.pool.address] = view
        self.venues.setdefault(view.base.ticker, {})[(view.pool.venue, view.pool.address)] = (
            VenuePrice(view.pool.venue, view.pool.address, float(view.mid))
        )
        self._tick(view.timestamp_ns)
        return self._evaluate(view.pool)

    def _tick(self, timestamp_ns: int) -> None:
        self.now_ns = max(self.now_ns, timestamp_ns)

    def _fresh(self, timestamp_ns: int, max_age_s: float) -> bool:
        return self.now_ns - timestamp_ns <= max_age_s * 1e9

    # -- state ------------------------------------------------------------------------
    def _quote(self, q: QuoteTLV) -> None:
        """A CEX quote of the native token prices gas; nothing else is taken from a CEX
        (other quotes are only shown in ``venues``)."""
        if not 0 < q.bid_price <= q.ask_price:
            return
        bid, ask = q.bid_price / Q8, q.ask_price / Q8
        self.venues.setdefault(ticker_of(q.asset_id), {})[(q.venue_id, bytes(20))] = VenuePrice(
            q.venue_id, bytes(20), (bid + ask) / 2, bid, ask
        )
        if ticker_of(q.asset_id) == self.config.native_ticker:
            self.native = (Decimal(q.bid_price + q.ask_price) / (2 * Q8), q.timestamp_ns)
            self._tick(q.timestamp_ns)

    def _orient(self, pool: Pool) -> bool | None:
        """True if token0 is the base (token1 the stable quote), None if neither is stable."""
        stable0, stable1 = (
            pool.token0.ticker in STABLE_TICKERS,
            pool.token1.ticker in STABLE_TICKERS,
        )
        return None if stable0 == stable1 else stable1

    def _sync(self, t: PoolSyncTLV) -> PoolView | None:
        pool = self.pools.get(t.pool_address)
        base0 = None if pool is None or pool.version != 2 else self._orient(pool)
        if pool is None or base0 is None or min(t.reserve0, t.reserve1) <= 0:
            return None
        r0 = Decimal(t.reserve0).scaleb(-pool.token0.decimals)
        r1 = Decimal(t.reserve1).scaleb(-pool.token1.decimals)
        base, quote = (r0, r1) if base0 else (r1, r0)
        return PoolView(pool, base0, base, quote, t.timestamp_ns)

    def _swap(self, t: PoolSwapTLV) -> PoolView | None:
        pool = self.pools.get(t.pool_address)
        base0 = None if pool is None or pool.version != 3 else self._orient(pool)
        sqrt_x96 = t.sqrt_price_x96_after_int
        if pool is None or base0 is None or sqrt_x96 <= 0 or t.liquidity_after <= 0:
            return None
        with localcontext() as ctx:
            ctx.prec = PRECISION_DIGITS
            sqrt_p = Decimal(sqrt_x96) / (1 << 96)
            liquidity = Decimal(t.liquidity_after)
            lower = t.tick_after // pool.tick_spacing * pool.tick_spacing
            sqrt_lo = Decimal("1.0001") ** (Decimal(lower) / 2)
            sqrt_hi = Decimal("1.0001") ** (Decimal(lower + pool.tick_spacing) / 2)
            s0, s1 = -pool.token0.decimals, -pool.token1.decimals
            r0, r1 = (liquidity / sqrt_p).scaleb(s0), (liquidity * sqrt_p).scaleb(s1)
            # token0 out / token1 in move the price up to sqrt_hi; the reverse down to sqrt_lo
            token0_out = (liquidity * (1 / sqrt_p - 1 / sqrt_hi)).scaleb(s0)
            token0_in = (liquidity * (1 / sqrt_lo - 1 / sqrt_p)).scaleb(s0)
            token1_out = (liquidity * (sqrt_p - sqrt_lo)).scaleb(s1)
            token1_in = (liquidity * (sqrt_hi - sqrt_p)).scaleb(s1)
        if base0:
            return PoolView(pool, True, r0, r1, t.timestamp_ns, max(ZERO, token0_out),
                            max(ZERO, token0_in))  # fmt: skip
        return PoolView(pool, False, r1, r0, t.timestamp_ns, max(ZERO, token1_out),
                        max(ZERO, token1_in))  # fmt: skip

    # -- pricing ----------------------------------------------------------------------
    def _gas_usd(self, units: int) -> tuple[Decimal, int] | None:
        """(gas cost in USD, gas price in gwei) if gas and native price are fresh."""
        gas, native, c = self.gas, self.native, self.config
        if gas is None or native is None:
            return None
        if not (self._fresh(gas.timestamp_ns, c.gas_max_age_s)
                and self._fresh(native[1], c.native_max_age_s)):  # fmt: skip
            return None
        return Decimal(units * gas.gas_price_gwei).scaleb(-9) * native[0], gas.gas_price_gwei

    def _evaluate(self, changed: Pool) -> Opportunity | None:
        """Price every pair of fresh pools of the changed pool's tokens; emit the best one
        if it is new and pays enough."""
        key = (changed.token0.address, changed.token1.address)
        candidates = []
        for view in self.views.values():
            if (view.pool.token0.address, view.pool.token1.address) != key:
                continue
            max_age = self.config.max_age_s.get(view.pool.venue, self.config.default_max_age_s)
            if self._fresh(view.timestamp_ns, max_age):
                candidates.append(view)
            else:
                self.stale_skips += 1
        best: Opportunity | None = None
        with localcontext() as ctx:
            ctx.prec = PRECISION_DIGITS
            for buy in candidates:
                for sell in candidates:
                    if buy is not sell:
                        opp = self._price(buy, sell)
                        if opp is not None and (best is None or opp.net > best.net):
                            best = opp
        if best is None or best.net < q8(self.config.min_profit_usd):
            self.open.pop(key, None)
            return None
        pair = (best.buy.pool.address, best.sell.pool.address)
        if self.open.get(key) == pair:
            return None  # still the same opportunity
        self.open[key] = pair
        return best

    def _price(self, buy: PoolView, sell: PoolView) -> Opportunity | None:
        c = self.config
        flash_fee = c.flash_fee_bps / 10_000
        x = optimal_input(buy, sell, flash_fee)
        if x <= 0:
            return None
        units = c.flash_loan_gas + c.swap_gas[buy.pool.version] + c.swap_gas[sell.pool.version]
        gas = self._gas_usd(units)
        if gas is None:
            return None
        y, z = pair_output(buy, sell, x)
        buy_ref, sell_ref = y * buy.mid, y * sell.mid
        buy_fee = x * (1 - buy.gamma)
        sell_fee = z * (1 - sell.gamma) / sell.gamma
        slippage = (x - buy_fee - buy_ref) + (sell_ref - sell_fee - z)
        gross, fees, flash = (
            q8(sell_ref) - q8(buy_ref),
            q8(buy_fee) + q8(sell_fee),
            q8(x * flash_fee),
        )
        slip, gas_q8 = q8(slippage), q8(gas[0])
        return Opportunity(
            ticker=buy.base.ticker,
            buy=buy,
            sell=sell,
            quantity=q8(y),
            capital=q8(x),
            buy_cost=q8(x) + flash,  # the buy leg's all-in cost: the loan's fee included
            sell_proceeds=q8(z),
            gross=gross,
            fees=fees + flash,
            flash_fee=flash,
            slippage=slip,
            gas=gas_q8,
            net=gross - fees - flash - slip - gas_q8,
            spread_bps=max(0, min(0xFFFF, int((sell.mid / buy.mid - 1) * 10_000))),
            gas_price_gwei=gas[1],
            timestamp_ns=self.now_ns,
        )


class FlashArbitrage(Service):
    """``market_data`` in; ``signals`` and ``execution`` out."""

    name = "flash_arbitrage"

    def __init__(self, *args: Any, config: ArbitrageConfig | None = None,
                 pools: dict[bytes, Pool] | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.detector = Detector(config, pools)
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
            "signal %d: %s %s, buy at venue %d, sell at venue %d, net $%s",
            self.signals, opp.ticker, Decimal(opp.quantity).scaleb(-8), opp.buy.pool.venue,
            opp.sell.pool.venue, Decimal(opp.net).scaleb(-8),
        )  # fmt: skip
        if self.publish(signal_message(opp, self.signals, self.detector.config)):
            self.publish(order_message(opp, self.signals))

    def disconnect(self) -> None:
        if self._inbox is not None:
            self._inbox.close()

    def report(self) -> dict[str, Any]:
        prices = {
            f"{VenueId(v.pool.venue).name}:{v.pool.address.hex()[:8]}": str(round(v.mid, 4))
            for v in self.detector.views.values()
        }
        gas = self.detector.gas
        return {"signals": self.signals, "stale_skips": self.detector.stale_skips,
                "gas_price_gwei": None if gas is None else gas.gas_price_gwei,
                "prices": prices}  # fmt: skip
