"""Dashboard: every topic in one live terminal view (``mycelium top``).

How this works
--------------
``DashboardState`` is sans-IO: ``apply(message)`` files each parsed message by its TLVs:
trades, latest quotes and pool prices per venue, gas, signals, and a portfolio ``Book`` of
the orders and signals (the dashboard reads ``execution`` in a queue group of its own,
"dashboard", so it sees every order without taking any from the portfolio service). A
lock guards it: the ``Dashboard`` service fills it in its thread while the terminal
thread renders it. When the service falls behind on ``market_data`` (more than
``SHED_BACKLOG`` messages waiting) it still reads and counts every message but files none
until it has caught up (``shed``): a view never slows the producers, whose rings it would
otherwise fill. Signals and orders are always filed, so positions and PnL stay exact.

``mycelium.services.top`` renders it, with the broker's stats document (topics, rates,
lag per consumer), as the terminal view of ``mycelium top``.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

from mycelium.errors import MyceliumError
from mycelium.protocol import (
    ArbitrageSignalTLV,
    GasPriceTLV,
    Message,
    RelayDomain,
    TLVType,
    TradeTLV,
    VenueId,
)
from mycelium.services.arbitrage import Detector
from mycelium.services.base import BATCH, Inbox, Service
from mycelium.services.markets import ticker_of
from mycelium.services.portfolio import Book

__all__ = ["Dashboard", "DashboardState", "broker_stats"]

Q8 = 100_000_000
ROWS = 8
#: Market data waiting beyond this many messages is counted, not filed (see ``shed``).
SHED_BACKLOG = 2 * BATCH
TOPICS: dict[int, str] = {RelayDomain.MARKET_DATA: "market_data", RelayDomain.SIGNAL: "signals",
          RelayDomain.EXECUTION: "execution"}  # fmt: skip
#: Market-data TLVs counted by kind, under the names the view shows.
KINDS: dict[int, str] = {TLVType.TRADE: "trades", TLVType.QUOTE: "quotes",
         TLVType.ORDER_BOOK: "books", TLVType.POOL_SWAP: "swaps", TLVType.POOL_SYNC: "syncs",
         TLVType.POOL_MINT: "mints", TLVType.POOL_BURN: "burns", TLVType.GAS_PRICE: "gas"}  # fmt: skip


def venue_name(venue: int) -> str:
    try:
        return VenueId(venue).name.lower()
    except ValueError:
        return str(venue)


class DashboardState:
    """What the dashboard shows, built from messages of all three topics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = dict.fromkeys(TOPICS.values(), 0)
        self.kinds: dict[str, int] = dict.fromkeys([*KINDS.values(), "other"], 0)
        self.trades: deque[tuple[str, str, str, str, float, float]] = deque(maxlen=ROWS)
        self.signals: deque[ArbitrageSignalTLV] = deque(maxlen=ROWS)
        self.prices = Detector()  # its venue table is the best-price view
        self.gas_gwei: int | None = None
        self.book = Book()
        self.shed = 0  # market-data messages counted but not filed, to keep up

    def apply(self, message: Message) -> None:
        with self.lock:
            domain = message.header.relay_domain
            self._count(message)
            if domain != RelayDomain.MARKET_DATA:
                self.book.apply(message)
            for tlv in message.tlvs:
                self._tlv(tlv.type, tlv.payload)

    def count(self, message: Message) -> None:
        """Count a message as seen without filing it: the cheap path while behind."""
        with self.lock:
            self._count(message)
            self.shed += 1

    def _count(self, message: Message) -> None:
        """Per topic, and market data per TLV kind (books, mints, burns...)."""
        topic = TOPICS.get(message.header.relay_domain)
        if topic is not None:
            self.counts[topic] += 1
        if message.header.relay_domain == RelayDomain.MARKET_DATA:
            for tlv in message.tlvs:
                self.kinds[KINDS.get(tlv.type, "other")] += 1

    def _tlv(self, tlv_type: int, payload: Any) -> None:
        if tlv_type == TLVType.TRADE:
            t = TradeTLV.from_bytes(payload)
            stamp = datetime.fromtimestamp(t.timestamp_ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
            side = "sell" if t.side else "buy"
            self.trades.appendleft((stamp, venue_name(t.venue_id), ticker_of(t.asset_id), side,
                                    t.price / Q8, t.volume / Q8))  # fmt: skip
        elif tlv_type == TLVType.ARBITRAGE_SIGNAL:
            self.signals.appendleft(ArbitrageSignalTLV.from_bytes(payload))
        elif tlv_type == TLVType.GAS_PRICE:
            self.gas_gwei = GasPriceTLV.from_bytes(payload).gas_price_gwei
        elif tlv_type in (TLVType.QUOTE, TLVType.POOL_SYNC, TLVType.POOL_SWAP):
            self.prices.update(tlv_type, payload)

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy for rendering."""
        with self.lock:
            return {
                "counts": dict(self.counts),
                "market_data": dict(self.kinds),
                "shed": self.shed,
                "trades": list(self.trades),
                "signals": list(self.signals),
                "prices": [
                    (
                        ticker,
                        venue_name(v.venue),
                        v.mid,
                        None if v.is_pool else v.bid,
                        None if v.is_pool else v.ask,
                    )
                    for ticker, states in sorted(self.prices.venues.items())
                    for v in states.values()
                ],
                "gas_gwei": self.gas_gwei,
                "book": self.book.report(),
            }


class Dashboard(Service):
    """Consumes all three topics into a ``DashboardState``."""

    name = "dashboard"
    group = "dashboard"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.view = DashboardState()
        self._inbox: Inbox | None = None

    def connect(self) -> None:
        self._inbox = Inbox(self, [self.consumer("market_data"), self.consumer("signals"),
                                   self.consumer("execution", self.group)])  # fmt: skip

    def step(self) -> None:
        assert self._inbox is not None
        behind = self._inbox.consumers[0].backlog > SHED_BACKLOG  # market_data
        for message in self._inbox.messages():
            if behind and message.header.relay_domain == RelayDomain.MARKET_DATA:
                self.view.count(message)
            else:
                self.view.apply(message)

    def disconnect(self) -> None:
        if self._inbox is not None:
            self._inbox.close()

    def report(self) -> dict[str, Any]:
        with self.view.lock:
            return {"seen": dict(self.view.counts), "market_data": dict(self.view.kinds),
                    "shed": self.view.shed}  # fmt: skip


def broker_stats(socket_path: str | None) -> dict[str, Any] | None:
    """The broker's stats document, or None while it does not answer."""
    from mycelium.client.admin import admin_request
    from mycelium.control.wire import StatsRequest

    try:
        return admin_request(StatsRequest(), socket_path).stats  # type: ignore[union-attr]
    except MyceliumError:
        return None
