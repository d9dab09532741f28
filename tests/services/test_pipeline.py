"""The services end to end: a real broker process, services in child processes (the
``mycelium service`` command) or threads, real shared memory."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from service_helpers import (
    BLOCK_TIME,
    ETH_ASSET,
    HEARTBEAT,
    QUICKSWAP,
    STATUS,
    SUBSCRIBED,
    SUSHISWAP,
    UNISWAP_V3,
    USDC,
    WETH,
    new_head,
    notification,
    pool_reserves,
    swap_log,
    sync_log,
    ticker,
    trade,
    v3_state,
    wait_for,
    write_lines,
)

from mycelium import Consumer, Producer
from mycelium.protocol import (
    ArbitrageSignalTLV,
    GasPriceTLV,
    Message,
    PoolSwapTLV,
    PoolSyncTLV,
    QuoteTLV,
    TradeTLV,
    VenueId,
    parse_message,
)
from mycelium.services import SERVICES, ServiceProcess
from mycelium.services.arbitrage import ArbitrageConfig, Detector
from mycelium.services.kraken import KrakenCollector
from mycelium.services.opportunity import signal_message
from mycelium.services.orders import BUY, SELL, OrderRequest
from mycelium.services.polygon import PolygonAdapter
from mycelium.shm.segment import list_segments

if TYPE_CHECKING:
    from conftest import BrokerProcess

Q8 = 100_000_000
START_S = 30.0
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "mycelium" / "services" / "samples"
CONSUMER_SERVICES = ("portfolio", "flash_arbitrage", "dashboard")

Start = Callable[..., ServiceProcess]


@pytest.fixture
def services(broker: BrokerProcess, tmp_path: Path) -> Iterator[Start]:
    """``services(name, *args)`` starts ``mycelium service name`` on the test's broker;
    every one is stopped (SIGTERM, then SIGKILL by PID) before the broker."""
    started: list[ServiceProcess] = []

    def start(name: str, *args: str) -> ServiceProcess:
        sp = ServiceProcess(name, broker.socket, tmp_path, *args).start()
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.stop()


def ready(*procs: ServiceProcess) -> None:
    for sp in procs:
        wait_for(sp.is_ready, START_S, f"{sp.name} to run")


def finished(sp: ServiceProcess) -> dict[str, Any]:
    """Wait for a service that ends by itself (input read); its final stats."""
    wait_for(lambda: not sp.running(), START_S, f"{sp.name} to finish its input")
    assert sp.stop() == 0, sp.log()
    return sp.stats()


def receive(consumer: Consumer, n: int) -> list[Message]:
    got: list[Message] = []
    wait_for(lambda: got.extend(consumer.recv_message(timeout=1.0) for _ in range(n - len(got)))
             or len(got) >= n, START_S, f"{n} messages on {consumer.topic}")  # fmt: skip
    return got


def only_tlv(m: Message) -> tuple[int, memoryview | bytes]:
    (tlv,) = m.tlvs
    return tlv.type, tlv.payload


def test_events_at_both_adapters_reach_every_consumer_field_by_field(
    broker: BrokerProcess, services: Start, tmp_path: Path
) -> None:
    consumers = {name: services(name) for name in CONSUMER_SERVICES}
    ready(*consumers.values())
    with (
        Consumer("market_data", broker.socket) as md,
        Consumer("signals", broker.socket) as sig,
        Consumer("execution", broker.socket, group="test") as ex,
    ):
        kraken_input = [STATUS, SUBSCRIBED, stamped(ticker("ETH/USD", 1999.5, 2000.0, 3.5, 4.25)),
                        stamped(ticker("POL/USD", 0.4999, 0.5001, 1000, 1000)), HEARTBEAT,
                        trade()]  # fmt: skip
        stats = finished(services("kraken_collector", "--input",
                                  str(write_lines(tmp_path / "kraken.jsonl", kraken_input))))  # fmt: skip
        assert (stats["received"], stats["published"], stats["ignored"]) == (6, 3, 3)
        quote_msg, pol_msg, trade_msg = receive(md, 3)

        sqrt_price, liquidity = v3_state(2050.0)
        polygon_input = [
            json.dumps({"jsonrpc": "2.0", "id": 4, "result": hex(30 * 10**9)}),
            notification(new_head(45_000_000_000)),
            notification(sync_log(*pool_reserves(2000.0))),
            notification(sync_log(*pool_reserves(2100.0), pool=SUSHISWAP)),
            notification(swap_log(-2_050_000_000, 10**18, sqrt_price, liquidity, 200_450)),
        ]
        stats = finished(services("polygon_adapter", "--input",
                                  str(write_lines(tmp_path / "polygon.jsonl", polygon_input))))  # fmt: skip
        assert (stats["received"], stats["published"], stats["ignored"]) == (5, 4, 1)
        gas_msg, sync_msg, sushi_msg, swap_msg = receive(md, 4)

        # market_data, as published by the adapters
        market = (quote_msg, pol_msg, trade_msg, gas_msg, sync_msg, sushi_msg, swap_msg)
        headers = [(m.header.relay_domain, m.header.source, m.header.sequence) for m in market]
        assert headers == [(1, 2, 1), (1, 2, 2), (1, 2, 3), (1, 4, 1), (1, 4, 2), (1, 4, 3),
                           (1, 4, 4)]  # fmt: skip
        tlv_type, payload = only_tlv(quote_msg)
        assert tlv_type == 2 and QuoteTLV.from_bytes(payload) == QuoteTLV(
            asset_id=ETH_ASSET, bid_price=199_950_000_000, bid_size=350_000_000,
            ask_price=200_000_000_000, ask_size=425_000_000, timestamp_ns=BLOCK_TIME * 10**9,
            venue_id=VenueId.KRAKEN, asset_type=51)  # fmt: skip
        assert only_tlv(trade_msg)[0] == 1
        assert TradeTLV.from_bytes(only_tlv(trade_msg)[1]) == TradeTLV(
            asset_id=0x4254430000000000, price=2_650_010_000_000, volume=120_000,
            timestamp_ns=1_695_628_177_708_706_000, venue_id=VenueId.KRAKEN, asset_type=51,
            side=0,
        )  # fmt: skip
        assert only_tlv(gas_msg)[0] == 18
        assert GasPriceTLV.from_bytes(only_tlv(gas_msg)[1]) == GasPriceTLV(
            block_number=50_000_123, timestamp_ns=1_700_000_000 * 10**9, gas_price_gwei=75,
            base_fee_gwei=45, priority_fee_gwei=30, venue=137,
        )  # fmt: skip
        reserve0, reserve1 = pool_reserves(2000.0)
        assert only_tlv(sync_msg)[0] == 16
        assert PoolSyncTLV.from_bytes(only_tlv(sync_msg)[1]) == PoolSyncTLV(
            reserve0=reserve0, reserve1=reserve1, timestamp_ns=1_700_000_000 * 10**9,
            block_number=50_000_123, venue=VenueId.QUICKSWAP, token0_decimals=6,
            token1_decimals=18, pool_address=QUICKSWAP.address, token0_addr=USDC.address,
            token1_addr=WETH.address,
        )  # fmt: skip
        assert only_tlv(swap_msg)[0] == 11
        assert PoolSwapTLV.from_bytes(only_tlv(swap_msg)[1]) == PoolSwapTLV(
            amount_in=10**18, amount_out=2_050_000_000, liquidity_after=liquidity,
            timestamp_ns=1_700_000_000 * 10**9, block_number=50_000_123, tick_after=200_450,
            venue=VenueId.UNISWAP_V3, amount_in_decimals=18, amount_out_decimals=6,
            pool_address=UNISWAP_V3.address, token_in_addr=WETH.address,
            token_out_addr=USDC.address, sqrt_price_x96_after=sqrt_price.to_bytes(32, "little"),
        )  # fmt: skip

        # signals: one flash arbitrage, QuickSwap at 2000 against SushiSwap at 2100, exactly
        # what the sans-IO detector makes of the same market data
        detector = Detector()
        (want,) = [o for m in market for t in m.tlvs if (o := detector.update(t.type, t.payload))]
        (signal_msg,) = receive(sig, 1)
        assert (signal_msg.header.relay_domain, signal_msg.header.source,
                signal_msg.header.sequence) == (2, 20, 1)  # fmt: skip
        tlv_type, payload = only_tlv(signal_msg)
        signal = ArbitrageSignalTLV.from_bytes(payload)
        assert tlv_type == 32
        assert signal == ArbitrageSignalTLV.from_bytes(
            parse_message(signal_message(want, 1, ArbitrageConfig())).tlvs[0].payload
        )
        assert (signal.strategy_id, signal.signal_id, signal.chain_id) == (21, 1, 137)
        assert (signal.source_venue, signal.target_venue) == (VenueId.QUICKSWAP,
                                                              VenueId.SUSHISWAP_POLYGON)  # fmt: skip
        assert (signal.source_pool, signal.target_pool) == (QUICKSWAP.address, SUSHISWAP.address)
        assert (signal.token_in, signal.token_out) == (USDC.address, WETH.address)
        # a flash loan and two V2 swaps at 75 gwei, POL at $0.5
        assert signal.gas_cost_usd_q8 == round(300_000 * 75e-9 * 0.5 * Q8) == 1_125_000
        assert signal.net_profit_usd_q8 == (signal.expected_profit_usd_q8 - signal.dex_fees_usd_q8
                                            - signal.slippage_usd_q8 - signal.gas_cost_usd_q8)  # fmt: skip
        assert signal.net_profit_usd_q8 > Q8
        assert signal.timestamp_ns == 1_700_000_000 * 10**9  # the pool update that opened it

        # execution: both legs of the order, in one message
        (order_msg,) = receive(ex, 1)
        assert (order_msg.header.relay_domain, order_msg.header.sequence) == (3, 1)
        legs = [OrderRequest.from_bytes(t.payload) for t in order_msg.tlvs]
        assert [t.type for t in order_msg.tlvs] == [40, 40]
        q = want.quantity
        assert legs == [
            OrderRequest(1, VenueId.QUICKSWAP, BUY, 0, ETH_ASSET, q, want.buy_cost * Q8 // q),
            OrderRequest(1, VenueId.SUSHISWAP_POLYGON, SELL, 1, ETH_ASSET, q,
                         want.sell_proceeds * Q8 // q),
        ]  # fmt: skip

        # the services that consume them
        portfolio, arbitrage, dashboard = (consumers[n] for n in CONSUMER_SERVICES)
        wait_for(lambda: portfolio.stats().get("orders") == 1 and portfolio.stats()["signals"] == 1,
                 START_S, "the portfolio to book the order")  # fmt: skip
        book = portfolio.stats()
        assert book["positions"] == {"ETH": {"400": q / Q8, "401": -q / Q8}}
        assert book["pnl_usd"] == pytest.approx(signal.net_profit_usd_q8 / Q8, abs=1e-6)
        assert book["expected_pnl_usd"] == signal.net_profit_usd_q8 / Q8
        wait_for(lambda: dashboard.stats().get("seen") == {"market_data": 7, "signals": 1,
                                                            "execution": 1},
                 START_S, "the dashboard to see everything")  # fmt: skip
        wait_for(lambda: arbitrage.stats().get("received") == 7, START_S, "the strategy")
        assert arbitrage.stats()["signals"] == 1
        assert arbitrage.stats()["published"] == 2
        assert md.recv_many(100, timeout=0) == sig.recv_many(100, timeout=0) == []
        assert ex.recv_many(100, timeout=0) == []


def stamped(line: str, stamp: str = "2023-11-14T22:13:20.000000Z") -> str:
    """A Kraken ticker carrying a timestamp, so that both feeds share one clock."""
    doc = json.loads(line)
    doc["data"][0]["timestamp"] = stamp
    return json.dumps(doc)


def test_every_service_starts_from_its_default_config(
    broker: BrokerProcess, services: Start
) -> None:
    """Each service with no options: the adapters on their generators; every one handles
    messages; ``mycelium top --once`` shows the pipeline; SIGTERM stops each cleanly."""
    consumers = [services(name) for name in CONSUMER_SERVICES]
    ready(*consumers)
    feeds = [services(name) for name in ("kraken_collector", "polygon_adapter")]
    ready(*feeds)
    running = consumers + feeds
    assert {sp.name for sp in running} == set(SERVICES)
    wait_for(lambda: all(sp.stats().get("received", 0) > 0 for sp in running)
             and consumers[0].stats().get("orders", 0) > 0, 60, "every service to handle data")  # fmt: skip
    top = subprocess.run(
        [sys.executable, "-m", "mycelium", "top", "--once", "--refresh", "0.5",
         "--socket", broker.socket],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert top.returncode == 0, top.stderr
    for needle in ("market_data", "signals", "execution", "portfolio", "dashboard",
                   "Latest trades", "kraken", "Prices", "Positions"):  # fmt: skip
        assert needle in top.stdout, needle
    for sp in running:
        assert sp.stop() == 0, sp.log()
        final = sp.stats()
        assert final["state"] == "stopped"
        assert (final["skipped_malformed"], final["errors"]) == (0, 0), sp.name
    assert all(sp.stats()["published"] > 0 for sp in feeds + consumers[1:2])


def test_the_pipeline_survives_a_broker_restart_without_loss(
    broker: BrokerProcess, services: Start
) -> None:
    portfolio, arbitrage = services("portfolio"), services("flash_arbitrage")
    ready(portfolio, arbitrage)
    with Consumer("market_data", broker.socket) as md:
        feeds = [
            services("kraken_collector", "--input", str(SAMPLE_DIR / "kraken_v2.jsonl"),
                     "--rate", "100"),
            services("polygon_adapter", "--input", str(SAMPLE_DIR / "polygon_logs.jsonl"),
                     "--rate", "100"),
        ]  # fmt: skip
        seqs: dict[int, list[int]] = {2: [], 4: []}

        def collect(at_least: int) -> bool:
            for raw in md.recv_many(1000, timeout=0.1):
                h = parse_message(raw).header
                seqs[h.source].append(h.sequence)
            return sum(map(len, seqs.values())) >= at_least

        wait_for(lambda: collect(60), START_S, "traffic before the restart")
        assert broker.stop() == 0
        down = sum(map(len, seqs.values()))
        wait_for(lambda: collect(down + 60), START_S, "traffic while the broker is down")
        broker.start()
        published = {2: finished(feeds[0])["published"], 4: finished(feeds[1])["published"]}
        total = sum(published.values())
        wait_for(lambda: collect(total), START_S, "every market-data message")
        assert seqs == {src: list(range(1, n + 1)) for src, n in published.items()}
    wait_for(lambda: arbitrage.stats().get("received") == total, START_S, "the strategy")
    signals = arbitrage.stats()["signals"]
    assert signals >= 1
    assert arbitrage.stats()["published"] == 2 * signals
    wait_for(lambda: portfolio.stats().get("received") == 2 * signals, START_S, "the portfolio")
    book = portfolio.stats()
    assert (book["orders"], book["signals"], book["legs"]) == (signals, signals, 2 * signals)
    assert book["net_positions"] == {"ETH": 0.0}
    assert book["pnl_usd"] == pytest.approx(book["expected_pnl_usd"], abs=1e-5)


def test_malformed_exchange_json_and_logs_are_counted_and_skipped(
    broker: BrokerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In threads this time: the services as a Python program embeds them."""
    caplog.set_level(logging.WARNING, "mycelium.services")
    arbitrage = SERVICES["flash_arbitrage"](broker.socket).start()
    try:
        with Consumer("market_data", broker.socket) as md:
            kraken_lines = [ticker(), "{not json", trade(price="26500.1"), trade(side="short"),
                            trade()]  # fmt: skip
            polygon_lines = [notification(sync_log(1, 2)), "garbage",
                             notification(swap_log(5, 5, 1, 1, 1)),
                             notification(sync_log(1 << 112, 1)), notification(new_head())]  # fmt: skip
            adapters = [
                KrakenCollector(broker.socket, input=write_lines(tmp_path / "k", kraken_lines)),
                PolygonAdapter(broker.socket, input=write_lines(tmp_path / "p", polygon_lines)),
            ]
            for a in adapters:
                a.start()
            wait_for(lambda: all(a.state == "stopped" for a in adapters), START_S, "the inputs")
            for a in adapters:
                a.stop()
                assert asdict(a.counters) == {"received": 5, "published": 2,
                                              "skipped_malformed": 3, "ignored": 0, "errors": 0}  # fmt: skip
            got = receive(md, 4)
            assert sorted((m.header.source, m.header.sequence) for m in got) == [
                (2, 1), (2, 2), (4, 1), (4, 2)]  # fmt: skip
        skipped = [r.getMessage() for r in caplog.records if "skipped malformed" in r.getMessage()]
        assert len(skipped) == 6
        for needle in ("kraken_collector: skipped malformed input (not JSON", "{not json",
                       "field 'price' is not a number: '26500.1'", "bad side 'short'",
                       "polygon_adapter: skipped malformed input (not JSON", "garbage",
                       "a swap pays one token in and one out", "reserve0 does not fit uint112"):  # fmt: skip
            assert any(needle in line for line in skipped), needle

        with Producer(broker.socket) as p:  # garbage on the bus itself
            p.publish("market_data", b"not a Protocol V2 message")
        wait_for(lambda: arbitrage.counters.skipped_malformed == 1, START_S, "the bad frame")
        assert arbitrage.counters.received == 5
        assert arbitrage.state == "running"
    finally:
        arbitrage.stop()


def test_demo_runs_every_service_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "mycelium", "demo", "--duration", "4", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert set(doc["services"]) == set(SERVICES)
    for name, counts in doc["services"].items():
        assert counts["state"] == "stopped", name
        assert counts["received"] > 0, name
        assert (counts["skipped_malformed"], counts["errors"]) == (0, 0), name
    for name in ("kraken_collector", "polygon_adapter", "flash_arbitrage"):
        assert doc["services"][name]["published"] > 0, name
    assert doc["topics"]["market_data"]["published"] == sum(
        doc["services"][n]["published"] for n in ("kraken_collector", "polygon_adapter"))  # fmt: skip
    assert doc["services"]["portfolio"]["orders"] == doc["services"]["flash_arbitrage"]["signals"]
    kinds = doc["services"]["dashboard"]["market_data"]  # the generators' books, mints, burns
    assert min(kinds["books"], kinds["mints"], kinds["burns"]) > 0 and kinds["other"] == 0, kinds
    assert doc["services"]["kraken_collector"]["book_checksum_mismatches"] == 0
    assert list_segments(doc["broker"]["id"]) == []
    assert list(tmp_path.iterdir()) == []
