"""The sans-IO cores of the strategy, the portfolio and the dashboard."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

import pytest
from rich.console import Console
from service_helpers import (
    ETH_ASSET,
    QUICKSWAP,
    SUSHISWAP,
    UNISWAP_V3,
    USDC,
    WETH,
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
from mycelium.services import kraken, polygon
from mycelium.services.adapter import market_message
from mycelium.services.arbitrage import ArbitrageConfig, Detector
from mycelium.services.dashboard import DashboardState
from mycelium.services.kraken import KrakenCollector
from mycelium.services.opportunity import order_message, signal_message
from mycelium.services.orders import BUY, SELL, OrderRequest
from mycelium.services.polygon import PolygonAdapter
from mycelium.services.portfolio import Book
from mycelium.services.sizing import pair_output
from mycelium.services.top import render

Q8 = 100_000_000


T0 = 1_700_000_000 * 10**9  # the tests' clock: every input is this fresh unless told
POL_ASSET = 0x504F4C0000000000


def quote(bid: float, ask: float, size: float = 5.0, asset: int = ETH_ASSET,
          ts: int = T0) -> QuoteTLV:  # fmt: skip
    return QuoteTLV(asset_id=asset, bid_price=round(bid * Q8), bid_size=round(size * Q8),
                    ask_price=round(ask * Q8), ask_size=round(size * Q8), timestamp_ns=ts,
                    venue_id=VenueId.KRAKEN, asset_type=51)  # fmt: skip


def pol(price: float = 0.5, ts: int = T0) -> QuoteTLV:
    return quote(price - 0.0001, price + 0.0001, asset=POL_ASSET, ts=ts)


def gas(gwei: int = 50, ts: int = T0) -> GasPriceTLV:
    return GasPriceTLV(block_number=1, timestamp_ns=ts, gas_price_gwei=gwei, base_fee_gwei=gwei,
                       venue=137)  # fmt: skip


def costs(gwei: int = 50, pol_usd: float = 0.5) -> tuple[TypedTLV, ...]:
    """What prices gas: the chain's gas price and the native token's Kraken quote."""
    return gas(gwei), pol(pol_usd)


def sync(
    price: float, pool: object = QUICKSWAP, ts: int = T0, depth: float = 1500.0
) -> PoolSyncTLV:
    r0, r1 = pool_reserves(price, depth)
    return PoolSyncTLV(reserve0=r0, reserve1=r1, timestamp_ns=ts, block_number=1,
                       venue=pool.venue, token0_decimals=6, token1_decimals=18,  # type: ignore[attr-defined]
                       pool_address=pool.address, token0_addr=USDC.address,  # type: ignore[attr-defined]
                       token1_addr=WETH.address)  # fmt: skip


def swap(price: float, ts: int = T0) -> PoolSwapTLV:
    sqrt_price, liquidity = v3_state(price)
    tick = math.floor(math.log((sqrt_price / (1 << 96)) ** 2, 1.0001))
    return PoolSwapTLV(amount_in=10**18, amount_out=2_000_000_000, liquidity_after=liquidity,
                       timestamp_ns=ts, block_number=1, tick_after=tick,
                       venue=VenueId.UNISWAP_V3, amount_in_decimals=18, amount_out_decimals=6,
                       pool_address=UNISWAP_V3.address, token_in_addr=WETH.address,
                       token_out_addr=USDC.address,
                       sqrt_price_x96_after=sqrt_price.to_bytes(32, "little"))  # fmt: skip


def feed(detector: Detector, *tlvs: TypedTLV) -> list[object]:
    return [o for t in tlvs if (o := detector.update(t.TLV_TYPE, t.to_bytes())) is not None]


def brute_force(buy: object, sell: object, flash_fee: Decimal, hi: Decimal) -> Decimal:
    """The best input on a grid of 2000 points, refined around the winner twice."""
    lo, best = Decimal(0), Decimal(0)
    for _ in range(3):
        step = (hi - lo) / 2000
        grid = [lo + step * k for k in range(2001)]
        best = max(grid, key=lambda x: pair_output(buy, sell, x)[1] - x * (1 + flash_fee))  # type: ignore[arg-type]
        lo, hi = max(Decimal(0), best - step), best + step
    return best


def test_two_v2_pools_make_a_flash_signal_of_optimal_size() -> None:
    (opp,) = feed(Detector(), *costs(), sync(2000.0), sync(2040.0, SUSHISWAP))
    assert (opp.buy.pool, opp.sell.pool) == (QUICKSWAP, SUSHISWAP)
    flash = Decimal(5) / 10_000
    best = brute_force(opp.buy, opp.sell, flash, Decimal(200_000))
    assert abs(Decimal(opp.capital).scaleb(-8) - best) <= best * Decimal("0.001")
    y, z = pair_output(opp.buy, opp.sell, Decimal(opp.capital).scaleb(-8))
    assert opp.quantity == round(y * Q8) and opp.sell_proceeds == round(z * Q8)
    assert opp.net == opp.gross - opp.fees - opp.slippage - opp.gas
    assert opp.flash_fee == round(Decimal(opp.capital) * flash)
    # the same net from the cash flows, up to the rounding of each part to 1e-8
    assert abs(opp.net - (opp.sell_proceeds - opp.capital - opp.flash_fee - opp.gas)) <= 3
    # gas: a flash loan and two V2 swaps at 50 gwei, POL at $0.5
    assert opp.gas == round((80_000 + 2 * 110_000) * 50e-9 * 0.5 * Q8)
    assert all(isinstance(v, int) for v in (opp.quantity, opp.net, opp.fees, opp.gas))


def test_a_v3_pool_is_sized_within_its_tick_range_by_a_bounded_search() -> None:
    (opp,) = feed(Detector(), *costs(1), sync(2000.0, depth=50_000), swap(2020.0))
    assert (opp.buy.pool, opp.sell.pool) == (QUICKSWAP, UNISWAP_V3)
    v3 = opp.sell
    assert v3.max_base_in is not None  # what enters the curve keeps the price in range:
    assert Decimal(opp.quantity).scaleb(-8) * v3.gamma <= v3.max_base_in + Decimal("1e-8")
    flash = Decimal(5) / 10_000
    bound = opp.buy.reserve_quote  # generous; the search's own bound is what must hold
    y_max = v3.max_base_in / v3.gamma
    x_max = y_max * opp.buy.reserve_quote / (opp.buy.gamma * (opp.buy.reserve_base - y_max))
    best = brute_force(opp.buy, opp.sell, flash, min(bound, x_max))
    assert abs(Decimal(opp.capital).scaleb(-8) - best) <= best * Decimal("0.001")


def test_a_cex_leg_never_yields_a_flash_signal() -> None:
    detector = Detector()
    # Kraken 5% below one pool and 5% above the other: a pool pair pays, Kraken is never a leg
    opps = feed(detector, *costs(), quote(1899.0, 1900.0), sync(2000.0), quote(2099.0, 2100.0),
                sync(2040.0, SUSHISWAP), quote(1899.0, 1900.0))  # fmt: skip
    assert opps and all(o.buy.pool.venue != VenueId.KRAKEN != o.sell.pool.venue for o in opps)
    # a pool alone against a wide Kraken spread opens nothing
    assert feed(Detector(), *costs(), quote(1899.0, 1900.0), sync(2100.0)) == []


def test_a_stale_input_opens_nothing() -> None:
    old = T0 - 31 * 10**9  # past the default 30 s
    assert feed(Detector(), *costs(), sync(2000.0, ts=old), sync(2040.0, SUSHISWAP)) == []
    stale_gas = (gas(ts=old), pol(), sync(2000.0), sync(2040.0, SUSHISWAP, ts=T0 + 31 * 10**9))
    assert feed(Detector(), *stale_gas) == []  # gas 62 s old: past its 60 s
    per_venue = ArbitrageConfig(max_age_s={VenueId.QUICKSWAP: 1.0})
    late = T0 - 2 * 10**9
    assert feed(Detector(per_venue), *costs(), sync(2000.0, ts=late), sync(2040.0, SUSHISWAP)) == []
    assert len(feed(Detector(), *costs(), sync(2000.0, ts=late), sync(2040.0, SUSHISWAP))) == 1


def test_without_gas_or_native_price_nothing_opens() -> None:
    pools = (sync(2000.0), sync(2040.0, SUSHISWAP))
    assert feed(Detector(), gas(), *pools) == []
    assert feed(Detector(), pol(), *pools) == []


def test_the_flash_fee_and_gas_lower_the_net() -> None:
    free = ArbitrageConfig(flash_fee_bps=Decimal(0))
    (a,) = feed(Detector(free), *costs(), sync(2000.0), sync(2040.0, SUSHISWAP))
    (b,) = feed(Detector(), *costs(), sync(2000.0), sync(2040.0, SUSHISWAP))
    (c,) = feed(Detector(), *costs(gwei=500), sync(2000.0), sync(2040.0, SUSHISWAP))
    assert a.flash_fee == 0 < b.flash_fee and a.net > b.net > c.net and c.gas == 10 * b.gas


def test_an_opportunity_is_emitted_once_until_it_closes() -> None:
    detector = Detector()
    assert len(feed(detector, *costs(), sync(2000.0), sync(2040.0, SUSHISWAP))) == 1
    assert feed(detector, sync(2041.0, SUSHISWAP)) == []  # the same pair, still open
    assert feed(detector, sync(2000.0, SUSHISWAP)) == []  # closed
    (again,) = feed(detector, sync(1960.0, SUSHISWAP))  # reopened the other way
    assert (again.buy.pool, again.sell.pool) == (SUSHISWAP, QUICKSWAP)


def test_spreads_within_costs_are_not_opportunities() -> None:
    assert feed(Detector(), *costs(), sync(2000.0), sync(2006.0, SUSHISWAP)) == []


def test_trades_and_unknown_types_move_nothing() -> None:
    detector = Detector()
    trade = TradeTLV(asset_id=ETH_ASSET, price=2000 * Q8, volume=Q8, venue_id=VenueId.KRAKEN)
    assert detector.update(trade.TLV_TYPE, trade.to_bytes()) is None
    assert detector.update(200, b"anything") is None
    assert detector.views == {}


def test_signal_and_order_messages_carry_the_opportunity() -> None:
    config = ArbitrageConfig()
    (opp,) = feed(Detector(config), *costs(), sync(2000.0), sync(2040.0, SUSHISWAP))
    m = parse_message(signal_message(opp, 5, config))
    assert (m.header.relay_domain, m.header.source, m.header.sequence) == (2, 20, 5)
    (tlv,) = m.tlvs
    assert tlv.type == 32
    assert ArbitrageSignalTLV.from_bytes(tlv.payload) == ArbitrageSignalTLV(
        strategy_id=21, signal_id=5, chain_id=137, source_pool=QUICKSWAP.address,
        target_pool=SUSHISWAP.address, source_venue=VenueId.QUICKSWAP,
        target_venue=VenueId.SUSHISWAP_POLYGON, token_in=USDC.address, token_out=WETH.address,
        expected_profit_usd_q8=opp.gross, required_capital_usd_q8=opp.capital,
        spread_bps=opp.spread_bps, dex_fees_usd_q8=opp.fees, gas_cost_usd_q8=opp.gas,
        slippage_usd_q8=opp.slippage, net_profit_usd_q8=opp.net, slippage_tolerance_bps=50,
        max_gas_price_gwei=500, valid_until=T0 // 10**9 + 2, priority=opp.net // 1_000_000,
        timestamp_ns=T0,
    )  # fmt: skip
    orders = parse_message(order_message(opp, 5))
    assert (orders.header.relay_domain, orders.header.sequence) == (3, 5)
    legs = [OrderRequest.from_bytes(t.payload) for t in orders.tlvs]
    assert [t.type for t in orders.tlvs] == [40, 40]
    q = opp.quantity
    assert legs == [
        OrderRequest(5, VenueId.QUICKSWAP, BUY, 0, ETH_ASSET, q, opp.buy_cost * Q8 // q),
        OrderRequest(5, VenueId.SUSHISWAP_POLYGON, SELL, 1, ETH_ASSET, q,
                     opp.sell_proceeds * Q8 // q),
    ]  # fmt: skip


@pytest.mark.parametrize("signal_first", [True, False])
def test_the_book_keeps_positions_and_pnl(signal_first: bool) -> None:
    config = ArbitrageConfig()
    detector = Detector(config)
    messages = []
    for i, tlvs in enumerate([(*costs(), sync(2000.0), sync(2040.0, SUSHISWAP)),
                              (sync(2000.0, SUSHISWAP),), (sync(1960.0, SUSHISWAP),)],
                             start=1):  # fmt: skip
        (opp,) = [o for t in tlvs if (o := detector.update(t.TLV_TYPE, t.to_bytes()))] or [None]
        if opp is not None:
            pair = [signal_message(opp, i, config), order_message(opp, i)]
            messages += pair if signal_first else pair[::-1]
    book = Book()
    for raw in messages:
        book.apply(parse_message(raw))
    r = book.report()
    assert (r["orders"], r["signals"], r["legs"]) == (2, 2, 4)
    assert set(r["positions"]["ETH"]) == {"400", "401"}
    assert r["net_positions"]["ETH"] == pytest.approx(0.0, abs=1e-6)  # flat across venues
    assert r["pnl_usd"] == pytest.approx(r["expected_pnl_usd"], abs=1e-6)
    assert r["gas_usd"] == pytest.approx(2 * (80_000 + 2 * 110_000) * 50e-9 * 0.5, abs=1e-8)
    assert r["pnl_usd"] > 0


def test_the_dashboard_state_renders_every_section() -> None:
    config = ArbitrageConfig()
    state = DashboardState()
    trade = TradeTLV(asset_id=ETH_ASSET, price=2000 * Q8, volume=Q8 // 2,
                     timestamp_ns=1_700_000_000 * 10**9, venue_id=VenueId.KRAKEN, side=1)  # fmt: skip
    for i, tlv in enumerate([trade, quote(1999.5, 2000.0), sync(2100.0), swap(2050.0)]):
        state.apply(parse_message(market_message(2, tlv, i)))
    (opp,) = feed(Detector(config), *costs(), sync(2000.0), sync(2100.0, SUSHISWAP))
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
                   "uniswap_v3", "2,100.00", "Signals", "Positions"):  # fmt: skip
        assert needle in text, needle
    console.print(render(view, None, width=140, height=60, console=console))
    assert "not answering" in console.export_text()


def test_the_book_keeps_fills_per_venue_with_fees_and_exact_realised_unrealised_pnl() -> None:
    from fractions import Fraction

    from mycelium.protocol import RelayDomain, SourceType, encode_message

    def order(*legs: OrderRequest) -> bytes:
        return encode_message(RelayDomain.EXECUTION, SourceType.ARBITRAGE_STRATEGY,
                              [(40, leg.to_bytes()) for leg in legs])  # fmt: skip

    book = Book()
    book.apply(parse_message(order(OrderRequest(1, VenueId.KRAKEN, BUY, 0, ETH_ASSET, Q8,
                                                2000 * Q8))))  # fmt: skip
    book.apply(parse_message(order(OrderRequest(2, VenueId.KRAKEN, SELL, 0, ETH_ASSET, Q8 // 2,
                                                2100 * Q8))))  # fmt: skip
    position = book.assets["ETH"]
    assert position.realised == 50 and position.unrealised == 50  # exact Fractions
    assert position.quantity == Fraction(1, 2) and position.cost == 1000
    kraken = book.venues[("ETH", VenueId.KRAKEN)]
    assert kraken.fees == Fraction(2000 * 26, 10_000) + Fraction(1050 * 26, 10_000 - 26)
    r = book.report()
    assert r["venues"]["ETH"]["101"]["fills"] == 2
    assert (r["realised_pnl_usd"], r["unrealised_pnl_usd"], r["pnl_usd"]) == (50.0, 50.0, 100.0)


def test_the_dashboard_counts_the_demo_feeds_books_mints_and_burns() -> None:
    """What the demo's generators send (books with Kraken's checksum, V3 Mint and Burn)
    is counted per kind by the dashboard and shown by ``mycelium top``."""
    state = DashboardState()
    made: dict[str, int] = {}
    collector = KrakenCollector(None)
    for adapter, module in ((collector, kraken), (PolygonAdapter(None), polygon)):
        clock = itertools.count(1_700_000_000 * 10**9, 10_000_000)
        for i, line in enumerate(itertools.islice(module.generate(0, clock), 1500)):
            for event in adapter.split(line):
                tlv = adapter.convert(event, 0)
                if tlv is not None:
                    made[type(tlv).__name__] = made.get(type(tlv).__name__, 0) + 1
                    state.apply(parse_message(market_message(adapter.source, tlv, i)))
    assert collector.checksum_mismatches == 0
    kinds = state.snapshot()["market_data"]
    assert (kinds["books"], kinds["mints"], kinds["burns"]) == (
        made["OrderBookTLV"], made["PoolMintTLV"], made["PoolBurnTLV"])  # fmt: skip
    assert min(kinds["books"], kinds["mints"], kinds["burns"]) > 0 and kinds["other"] == 0
    console = Console(record=True, width=200)
    console.print(render(state.snapshot(), None, width=200, height=60, console=console))
    text = console.export_text()
    for kind in ("books", "mints", "burns", "swaps", "syncs", "trades", "quotes"):
        assert f"{kinds[kind]} {kind}" in text, kind
