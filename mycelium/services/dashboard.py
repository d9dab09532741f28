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

``render`` builds the rich view from a state snapshot plus the broker's stats document
(topics, rates, lag per consumer). ``run_top`` starts the service in a thread and
redraws in place every ``refresh`` seconds with ``rich.live.Live`` until stopped, or
prints a single frame (``--once``).
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

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

__all__ = ["Dashboard", "DashboardState", "render", "run_top"]

Q8 = 100_000_000
ROWS = 8
#: Market data waiting beyond this many messages is counted, not filed (see ``shed``).
SHED_BACKLOG = 2 * BATCH
TOPICS: dict[int, str] = {RelayDomain.MARKET_DATA: "market_data", RelayDomain.SIGNAL: "signals",
          RelayDomain.EXECUTION: "execution"}  # fmt: skip


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
        self.trades: deque[tuple[str, str, str, str, float, float]] = deque(maxlen=ROWS)
        self.signals: deque[ArbitrageSignalTLV] = deque(maxlen=ROWS)
        self.prices = Detector()  # its venue table is the best-price view
        self.gas_gwei: int | None = None
        self.book = Book()
        self.shed = 0  # market-data messages counted but not filed, to keep up

    def apply(self, message: Message) -> None:
        with self.lock:
            domain = message.header.relay_domain
            topic = TOPICS.get(domain)
            if topic is not None:
                self.counts[topic] += 1
            if domain != RelayDomain.MARKET_DATA:
                self.book.apply(message)
            for tlv in message.tlvs:
                self._tlv(tlv.type, tlv.payload)

    def count(self, message: Message) -> None:
        """Count a message as seen without filing it: the cheap path while behind."""
        with self.lock:
            topic = TOPICS.get(message.header.relay_domain)
            if topic is not None:
                self.counts[topic] += 1
            self.shed += 1

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


def _table(title: str, *columns: str) -> Table:
    """A table whose capitalised columns are numbers (right-aligned)."""
    table = Table(title=title, title_justify="left", pad_edge=False)
    for c in columns:
        table.add_column(c, justify="right" if c[:1].isupper() else "left")
    return table


def render(view: dict[str, Any], stats: dict[str, Any] | None) -> Group:
    """The whole screen: broker topics and consumers, then market, signals, positions."""
    parts: list[Any] = []
    if stats is None:
        parts.append(Text("broker: not answering", style="bold red"))
    else:
        b = stats["broker"]
        parts.append(Text(f"broker {b['id']} on {b['socket']}  up {b['uptime_s']:.0f}s  "
                          f"{b['connections']} connections", style="bold"))  # fmt: skip
        topics = _table("Topics", "topic", "routing", "Prod", "Cons", "Published",
                        "Delivered", "Pub/s", "Dlv/s", "Dropped")  # fmt: skip
        for t in stats["topics"]:
            topics.add_row(t["name"], t["routing"], str(t["producers"]), str(t["consumers"]),
                           str(t["published"]), str(t["delivered"]), f"{t['publish_rate']:.0f}",
                           f"{t['deliver_rate']:.0f}", str(t["dropped"]))  # fmt: skip
        consumers = _table("Consumers", "topic", "group", "Id", "Pid", "Received", "Lag", "Lost")
        for c in stats["consumers"]:
            lag = Text(str(c["lag"]), style="red" if c["lag"] > 1000 else "")
            consumers.add_row(c["topic"], c["group"], str(c["id"]), str(c["pid"]),
                              str(c["received"]), lag, str(c["lost"]))  # fmt: skip
        parts += [topics, consumers]
    trades = _table("Latest trades", "time", "venue", "asset", "side", "Price", "Qty")
    for stamp, venue, asset, side, price, qty in view["trades"]:
        trades.add_row(stamp, venue, asset, Text(side, style="green" if side == "buy" else "red"),
                       f"{price:,.2f}", f"{qty:.4f}")  # fmt: skip
    gas = view["gas_gwei"]
    prices = _table(f"Prices (gas {gas if gas is not None else '-'} gwei)",
                    "asset", "venue", "Bid", "Mid", "Ask")  # fmt: skip
    for ticker, venue, mid, bid, ask in view["prices"]:
        prices.add_row(ticker, venue, f"{bid:,.2f}" if bid else "", f"{mid:,.2f}",
                       f"{ask:,.2f}" if ask else "")  # fmt: skip
    signals = _table("Signals", "Id", "buy at", "sell at", "Spread bp", "Net $")
    for s in view["signals"]:
        signals.add_row(str(s.signal_id), venue_name(s.source_venue), venue_name(s.target_venue),
                        str(s.spread_bps), f"{s.net_profit_usd_q8 / Q8:,.2f}")  # fmt: skip
    book = view["book"]
    positions = _table("Positions", "asset", "venue", "Qty")
    for ticker, venues in book["positions"].items():
        for venue, qty in venues.items():
            positions.add_row(ticker, venue_name(int(venue)), f"{qty:+.4f}")
    counts = "  ".join(f"{k} {v}" for k, v in view["counts"].items())
    parts += [
        Text(f"seen by the dashboard: {counts}", style="dim"),
        Columns([trades, prices]),
        Columns([signals, positions]),
        Text(f"PnL ${book['pnl_usd']:,.2f} (sum of executed signals "
             f"${book['expected_pnl_usd']:,.2f}), {book['orders']} orders", style="bold"),
    ]  # fmt: skip
    return Group(*parts)


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
        behind = self._inbox.consumers[0].backlog() > SHED_BACKLOG  # market_data
        for message in self._inbox.messages():
            if behind and message.header.relay_domain == RelayDomain.MARKET_DATA:
                self.view.count(message)
            else:
                self.view.apply(message)

    def disconnect(self) -> None:
        if self._inbox is not None:
            self._inbox.close()

    def report(self) -> dict[str, Any]:
        return {"seen": dict(self.view.counts), "shed": self.view.shed}


def broker_stats(socket_path: str | None) -> dict[str, Any] | None:
    """The broker's stats document, or None while it does not answer."""
    from mycelium.client.admin import admin_request
    from mycelium.control.wire import StatsRequest

    try:
        return admin_request(StatsRequest(), socket_path).stats  # type: ignore[union-attr]
    except MyceliumError:
        return None


def run_top(
    socket_path: str | None,
    refresh: float = 1.0,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    dashboard: Dashboard | None = None,
    console: Console | None = None,
) -> None:
    """Show the live view until ``stop`` is set (or after one frame with ``once``).

    Uses ``dashboard`` if given (already running), else runs one for the duration.
    """
    stop = stop or threading.Event()
    console = console or Console()
    own = dashboard is None
    service = dashboard or Dashboard(socket_path).start()
    try:
        if once:
            stop.wait(refresh)
            console.print(render(service.view.snapshot(), broker_stats(socket_path)))
            return
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while not stop.is_set():
                live.update(render(service.view.snapshot(), broker_stats(socket_path)),
                            refresh=True)  # fmt: skip
                stop.wait(refresh)
    finally:
        if own:
            service.stop()
