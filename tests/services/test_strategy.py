"""The sans-IO cores of the strategy, the portfolio and the dashboard."""

from __future__ import annotations

import pytest
from rich.console import Console
from service_helpers import (
    ETH_ASSET,
    GAS_PER_POOL_LEG,
    QUICKSWAP,
    SUSHISWAP,
    UNISWAP_V3,
    USDC,
    WETH,
    expected_kraken_to_quickswap,
    pool_reserves,
    v3_state,
)

from mycelium.protocol import (
    ArbitrageSignalTLV,
    GasPriceTLV,
    PoolSwapTLV,
    PoolSyncTLV,
    QuoteTLV,
    TradeTLV,
    TypedTLV,
    VenueId,
    parse_message,
)
from mycelium.services.adapter import market_message
from mycelium.services.arbitrage import ArbitrageConfig, Detector, order_message, signal_message
from mycelium.services.dashboard import DashboardState
from mycelium.services.orders import BUY, SELL, OrderRequest
from mycelium.services.portfolio import Book
from mycelium.services.top import render

Q8 = 100_000_000


def quote(bid: float, ask: float, size: float = 5.0) -> QuoteTLV:
    return QuoteTLV(asset_id=ETH_ASSET, bid_price=round(bid * Q8), bid_size=round(size * Q8),
                    ask_price=round(ask * Q8), ask_size=round(size * Q8), timestamp_ns=7,
                    venue_id=VenueId.KRAKEN, asset_type=51)  # fmt: skip


def sync(price: float, pool: object = QUICKSWAP) -> PoolSyncTLV:
    r0, r1 = pool_reserves(price)
    return PoolSyncTLV(reserve0=r0, reserve1=r1, timestamp_ns=9, block_number=1,
                       venue=pool.venue, token0_decimals=6, token1_decimals=18,  # type: ignore[attr-defined]
                       pool_address=pool.address, token0_addr=USDC.address,  # type: ignore[attr-defined]
                       token1_addr=WETH.address)  # fmt: skip


def swap(price: float) -> PoolSwapTLV:
    sqrt_price, liquidity = v3_state(price)
    return PoolSwapTLV(amount_in=10**18, amount_out=2_000_000_000, liquidity_after=liquidity,
                       timestamp_ns=11, block_number=1, tick_after=200_000,
                       venue=VenueId.UNISWAP_V3, amount_in_decimals=18, amount_out_decimals=6,
                       pool_address=UNISWAP_V3.address, token_in_addr=WETH.address,
                       token_out_addr=USDC.address,
                       sqrt_price_x96_after=sqrt_price.to_bytes(32, "little"))  # fmt: skip


def feed(detector: Detector, *tlvs: TypedTLV) -> list[object]:
    return [o for t in tlvs if (o := detector.update(t.TLV_TYPE, t.to_bytes())) is not None]


def test_a_cex_dex_spread_is_priced_after_fees_slippage_and_gas() -> None:
    (opp,) = feed(Detector(), quote(1999.5, 2000.0), sync(2100.0))
    want = expected_kraken_to_quickswap(2000.0, 2100.0)
    assert (opp.buy.venue, opp.sell.venue, opp.sell.pool) == (VenueId.KRAKEN, VenueId.QUICKSWAP,
                                                             QUICKSWAP.address)  # fmt: skip
    assert opp.quantity == Q8
    for name, value in want.items():
        assert getattr(opp, name) == pytest.approx(value * Q8, abs=1), name
    assert opp.net == opp.gross - opp.fees - opp.slippage - opp.gas
    assert opp.spread_bps == round((2100.0 - 2000.0) / 2000.0 * 10_000)


def test_an_opportunity_is_emitted_once_until_it_closes() -> None:
    detector = Detector()
    assert len(feed(detector, quote(1999.5, 2000.0), sync(2100.0))) == 1
    assert feed(detector, sync(2101.0), quote(1999.6, 2000.1)) == []  # the same, persisting
    assert feed(detector, sync(2000.0)) == []  # closed
    (again,) = feed(detector, sync(2100.0))  # re-armed
    assert again.sell.venue == VenueId.QUICKSWAP
    (moved,) = feed(detector, sync(2150.0, SUSHISWAP))  # a better venue pair
    assert moved.sell.venue == VenueId.SUSHISWAP_POLYGON


def test_spreads_within_costs_are_not_opportunities() -> None:
    # 0.5% apart: less than Kraken's 0.26% + the pool's 0.3% fees.
    assert feed(Detector(), quote(1999.5, 2000.0), sync(2010.0)) == []
    assert feed(Detector(ArbitrageConfig(min_profit_usd=1000)), quote(1999.5, 2000.0),
                sync(2100.0)) == []  # fmt: skip


def test_book_size_limits_the_quantity() -> None:
    (opp,) = feed(Detector(), quote(1999.5, 2000.0, size=0.25), sync(2100.0))
    assert opp.quantity == Q8 // 4


def test_a_v3_pool_is_priced_by_its_virtual_reserves() -> None:
    detector = Detector()
    (opp,) = feed(detector, swap(2100.0), quote(1999.5, 2000.0))
    assert (opp.sell.venue, opp.sell.pool) == (VenueId.UNISWAP_V3, UNISWAP_V3.address)
    assert opp.sell.mid == pytest.approx(2100.0, rel=1e-9)
    assert opp.sell.reserve_base == pytest.approx(1500.0, rel=1e-9)


def test_gas_price_updates_the_gas_cost() -> None:
    detector = Detector()
    feed(detector, GasPriceTLV(block_number=1, timestamp_ns=1, gas_price_gwei=500, venue=137))
    (opp,) = feed(detector, quote(1999.5, 2000.0), sync(2100.0))
    assert opp.gas == round(150_000 * 500e-9 * 0.5 * Q8)
    assert opp.gas_price_gwei == 500


def test_trades_and_unknown_types_move_nothing() -> None:
    detector = Detector()
    trade = TradeTLV(asset_id=ETH_ASSET, price=2000 * Q8, volume=Q8, venue_id=VenueId.KRAKEN)
    assert feed(detector, trade) == []
    assert detector.update(200, b"vendor") is None
    assert detector.venues == {}


def test_signal_and_order_messages_carry_the_opportunity() -> None:
    config = ArbitrageConfig()
    (opp,) = feed(Detector(config), quote(1999.5, 2000.0), sync(2100.0))
    m = parse_message(signal_message(opp, 5, config))
    assert (m.header.relay_domain, m.header.source, m.header.sequence) == (2, 20, 5)
    (tlv,) = m.tlvs
    assert tlv.type == 32
    assert ArbitrageSignalTLV.from_bytes(tlv.payload) == ArbitrageSignalTLV(
        strategy_id=21, signal_id=5, chain_id=137, source_pool=bytes(20),
        target_pool=QUICKSWAP.address, source_venue=VenueId.KRAKEN,
        target_venue=VenueId.QUICKSWAP, token_in=USDC.address, token_out=WETH.address,
        expected_profit_usd_q8=opp.gross, required_capital_usd_q8=opp.buy_cost,
        spread_bps=opp.spread_bps, dex_fees_usd_q8=opp.fees, gas_cost_usd_q8=opp.gas,
        slippage_usd_q8=opp.slippage, net_profit_usd_q8=opp.net, slippage_tolerance_bps=50,
        max_gas_price_gwei=500, valid_until=2, priority=opp.net // 1_000_000, timestamp_ns=9,
    )  # fmt: skip
    orders = parse_message(order_message(opp, 5))
    assert (orders.header.relay_domain, orders.header.sequence) == (3, 5)
    legs = [OrderRequest.from_bytes(t.payload) for t in orders.tlvs]
    assert [t.type for t in orders.tlvs] == [40, 40]
    assert legs == [
        OrderRequest(5, VenueId.KRAKEN, BUY, 0, ETH_ASSET, Q8, opp.buy_cost),
        OrderRequest(5, VenueId.QUICKSWAP, SELL, 1, ETH_ASSET, Q8, opp.sell_proceeds),
    ]


@pytest.mark.parametrize("signal_first", [True, False])
def test_the_book_keeps_positions_and_pnl(signal_first: bool) -> None:
    config = ArbitrageConfig()
    detector = Detector(config)
    messages = []
    for i, tlvs in enumerate([(quote(1999.5, 2000.0), sync(2100.0)), (sync(2000.0),),
                              (sync(1900.0),)], start=1):  # fmt: skip
        (opp,) = [o for t in tlvs if (o := detector.update(t.TLV_TYPE, t.to_bytes()))] or [None]
        if opp is not None:
            pair = [signal_message(opp, i, config), order_message(opp, i)]
            messages += pair if signal_first else pair[::-1]
    book = Book()
    for raw in messages:
        book.apply(parse_message(raw))
    r = book.report()
    assert (r["orders"], r["signals"], r["legs"]) == (2, 2, 4)
    assert r["positions"] == {"ETH": {"101": 0.0, "400": 0.0}}  # bought back what it sold
    assert r["net_positions"] == {"ETH": 0.0}
    assert r["pnl_usd"] == pytest.approx(r["expected_pnl_usd"], abs=1e-6)
    assert r["gas_usd"] == pytest.approx(2 * GAS_PER_POOL_LEG, abs=1e-8)
    assert r["pnl_usd"] > 0


def test_the_dashboard_state_renders_every_section() -> None:
    config = ArbitrageConfig()
    state = DashboardState()
    trade = TradeTLV(asset_id=ETH_ASSET, price=2000 * Q8, volume=Q8 // 2,
                     timestamp_ns=1_700_000_000 * 10**9, venue_id=VenueId.KRAKEN, side=1)  # fmt: skip
    for i, tlv in enumerate([trade, quote(1999.5, 2000.0), sync(2100.0), swap(2050.0)]):
        state.apply(parse_message(market_message(2, tlv, i)))
    (opp,) = feed(Detector(config), quote(1999.5, 2000.0), sync(2100.0))
    state.apply(parse_message(signal_message(opp, 1, config)))
    state.apply(parse_message(order_message(opp, 1)))
    view = state.snapshot()
    assert view["counts"] == {"market_data": 4, "signals": 1, "execution": 1}
    assert view["trades"] == [("22:13:20.000", "kraken", "ETH", "sell", 2000.0, 0.5)]
    console = Console(record=True, width=140)
    stats = {"broker": {"id": "b1", "socket": "/s", "uptime_s": 3.0, "connections": 4},
             "topics": [{"name": "market_data", "routing": "fanout", "producers": 2,
                         "consumers": 3, "published": 10, "delivered": 30,
                         "publish_rate": 5.0, "deliver_rate": 15.0, "dropped": 0}],
             "consumers": [{"topic": "market_data", "group": "c7", "id": 7, "pid": 99,
                            "received": 10, "lag": 2, "lost": 0}]}  # fmt: skip
    console.print(render(view, stats, width=140, height=60, console=console))
    text = console.export_text()
    for needle in ("market_data", "fanout", "c7", "Latest trades", "kraken", "quickswap",
                   "uniswap_v3", "2,100.00", "Signals", "Positions", "+1.0000", "-1.0000"):  # fmt: skip
        assert needle in text, needle
    console.print(render(view, None, width=140, height=60, console=console))
    assert "not answering" in console.export_text()
