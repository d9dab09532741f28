"""Kraken v2: the ``book`` channel against Kraken's own checksums, subscription errors,
instruments per quote currency, precision past 8 decimals, the silent-feed watchdog."""

from __future__ import annotations

import json
import socket
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from service_helpers import trade

from mycelium.protocol import (
    InstrumentId,
    OrderBookTLV,
    QuoteCurrency,
    TradeTLV,
    VenueId,
    parse_message,
)
from mycelium.services import kraken
from mycelium.services.adapter import market_message
from mycelium.services.base import Malformed
from mycelium.services.feeds import LiveLink, live_lines
from mycelium.services.kraken import KrakenCollector
from mycelium.services.kraken_book import checksum

NOW = 1_700_000_000_555_000_000
BOOK_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "kraken_v2_book_btcusd.jsonl"


def feed(collector: KrakenCollector, lines: list[str]) -> list[Any]:
    """Every TLV the collector makes of ``lines`` (None for the events it publishes nothing of)."""
    return [collector.convert(event, NOW) for line in lines for event in collector.split(line)]


def sample() -> list[str]:
    return BOOK_SAMPLE.read_text().splitlines()


def test_book_checksums_of_a_real_snapshot_and_updates_all_verify() -> None:
    collector = KrakenCollector(None)
    lines = sample()
    books = feed(collector, lines)
    assert kraken.split(lines[0]) == []  # the subscribe ack
    assert all(isinstance(b, OrderBookTLV) for b in books) and len(books) == 24
    assert collector.checksum_mismatches == 0 and collector.resubscribes == 0
    last: OrderBookTLV = books[-1]
    assert (len(last.bids), len(last.asks)) == (10, 10)
    assert last.instrument == InstrumentId.from_pair(VenueId.KRAKEN, "BTC", "USD")
    assert last.timestamp_ns == kraken.timestamp_ns("2023-05-29T08:45:41.143865Z")
    # the last update removed the 27924.0 ask and inserted 27923.5, which cut the 27925.2
    # that came back with it out of the top 10 again
    asks = [last.decimal(level.price) for level in last.asks]
    assert Decimal("27924.0") not in asks and Decimal("27923.5") in asks
    assert Decimal("27925.2") not in asks and asks == sorted(asks)
    bids = [last.decimal(level.price) for level in last.bids]
    assert bids == sorted(bids, reverse=True)
    first = books[0]
    assert first.decimal(first.asks[0].price) == Decimal("27918.6")
    assert first.decimal(first.asks[0].size) == Decimal("0.10013466")
    # an OrderBookTLV travels as one market-data message (the extended TLV form)
    message = parse_message(market_message(kraken.KrakenCollector.source, last, 1))
    assert OrderBookTLV.from_bytes(message.tlvs[0].payload) == last


def test_a_checksum_mismatch_resubscribes_and_is_counted() -> None:
    collector = KrakenCollector(None)
    lines = sample()
    doc = json.loads(lines[5])
    doc["data"][0]["checksum"] += 1
    tampered = [*lines[:5], json.dumps(doc), *lines[6:8]]
    books = feed(collector, tampered)
    assert books[4:] == [None, None, None]  # dropped until a new snapshot
    assert collector.checksum_mismatches == 1 and collector.resubscribes == 1
    requests = [collector.link.outbox.get_nowait() for _ in range(2)]
    assert [r["method"] for r in requests] == ["unsubscribe", "subscribe"]
    assert requests[1]["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}
    assert collector.link.outbox.empty()
    assert collector.report()["book_checksum_mismatches"] == 1
    # the fresh snapshot restores the book
    assert isinstance(feed(collector, lines[1:2])[0], OrderBookTLV)


def test_a_refused_subscription_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    collector = KrakenCollector(None)
    refused = json.dumps({"method": "subscribe", "error": "Currency pair not supported DOGE/XYZ",
                          "success": False, "time_in": "2023-10-06T17:35:55.219022Z",
                          "time_out": "2023-10-06T17:35:55.219067Z"})  # fmt: skip
    assert feed(collector, [refused]) == [None]
    assert collector.subscription_errors == 1 and collector.report()["subscription_errors"] == 1
    assert "Currency pair not supported" in caplog.text


def test_subscriptions_include_the_book_at_the_configured_depth() -> None:
    requests = KrakenCollector(None, depth=25).subscriptions()
    book = [r for r in requests if r["params"]["channel"] == "book"]
    assert book == [{"method": "subscribe",
                     "params": {"channel": "book", "symbol": kraken.SYMBOLS, "depth": 25}}]  # fmt: skip


def test_quote_currencies_make_different_instruments() -> None:
    tlvs = [kraken.convert(kraken.split(trade(symbol=f"ETH/{q}"))[0], NOW) for q in
            ("USD", "USDT", "USDC")]  # fmt: skip
    assert all(isinstance(t, TradeTLV) for t in tlvs)
    instruments = {t.instrument for t in tlvs}  # type: ignore[union-attr]
    assert len(instruments) == 3
    assert {i.quote for i in instruments} == {QuoteCurrency.USD, QuoteCurrency.USDT,
                                              QuoteCurrency.USDC}  # fmt: skip


def test_more_than_eight_decimals_are_refused_loudly_or_carried_exactly() -> None:
    pepe = ('{"channel":"trade","type":"update","data":[{"symbol":"PEPE/USD","side":"buy",'
            '"price":0.000012345,"qty":1000,"ord_type":"market","trade_id":1,'
            '"timestamp":"2023-09-25T07:49:37.708706Z"}]}')  # fmt: skip
    with pytest.raises(Malformed, match="more than 8 decimals"):
        kraken.convert(kraken.split(pepe)[0], NOW)
    asks = [(Decimal("0.000012346"), Decimal(5))]
    bids = [(Decimal("0.000012345"), Decimal(1000))]
    snapshot = ('{"channel":"book","type":"snapshot","data":[{"symbol":"PEPE/USD",'
                '"bids":[{"price":0.000012345,"qty":1000}],'
                '"asks":[{"price":0.000012346,"qty":5}],'
                f'"checksum":{checksum(asks, bids)}}}]}}')  # fmt: skip
    book = KrakenCollector(None).convert(kraken.split(snapshot)[0], NOW)
    assert isinstance(book, OrderBookTLV) and book.precision_factor == 10**9
    assert book.decimal(book.bids[0].price) == Decimal("0.000012345")
    assert book.decimal(book.asks[0].price) == Decimal("0.000012346")


def test_a_silent_feed_is_reconnected() -> None:
    """A WebSocket server that answers the upgrade and then says nothing: the watchdog
    drops the connection and dials again."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\n")  # fmt: skip
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    stop = threading.Event()
    link = LiveLink(max_silence_s=0.5)
    url = f"ws://127.0.0.1:{server.getsockname()[1]}/v2"
    lines = live_lines(url, [{"method": "subscribe"}], stop, link)
    reader = threading.Thread(target=lambda: list(lines), daemon=True)
    try:
        reader.start()
        thread.join(timeout=20)
        assert not thread.is_alive() and len(accepted) == 2
        assert link.silent_reconnects >= 1
    finally:
        stop.set()
        reader.join(timeout=10)
        for conn in accepted:
            conn.close()
        server.close()
