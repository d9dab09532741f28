"""Portfolio: fills per venue with their fees, realised and unrealised PnL, exactly.

How this works
--------------
``Book`` is sans-IO: ``apply(message)`` takes parsed messages from ``execution`` (order
requests, treated as filled at their limit price: this is a paper book) and ``signals``
(arbitrage signals). Quantities and prices are 8-decimal fixed point and every sum is an
exact ``Fraction``; nothing is a float until the report. Each fill is kept per venue
(quantity, notional, fee); the fee a venue charged is read out of the limit price, which
includes it, with the venue's fee rate from the pool table (Kraken's taker fee for a
centralised venue): a buy of notional n paid n*f, a sale of n paid n*f/(1-f).

PnL is average-cost on each asset's net position across venues: a fill that reduces the
position realises (price - average cost) on the reduced quantity; the rest is unrealised
at the last fill price. An arbitrage buys and sells the same quantity, so it realises its
spread at once. A signal's gas is charged when its orders arrive (the two come on
different topics, in either order); the sum of the executed signals' net profit is shown
beside the PnL as a check (``expected_pnl_usd``).

``Portfolio`` runs a book on ``execution`` (queue group "portfolio") and ``signals`` and
logs a summary every ``REPORT_EVERY_S``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from mycelium.protocol import ArbitrageSignalTLV, Message, OrderRequestTLV, RelayDomain, TLVType
from mycelium.services.base import Inbox, Service
from mycelium.services.markets import VENUE_FEES_BPS, Pool, load_pools, ticker_of
from mycelium.services.orders import BUY

__all__ = ["Book", "Portfolio"]

log = logging.getLogger("mycelium.services")

Q8 = 100_000_000
REPORT_EVERY_S = 5.0


@dataclass
class VenueFills:
    """What one venue filled of one asset."""

    quantity: Fraction = Fraction(0)  # signed: bought minus sold
    notional: Fraction = Fraction(0)  # traded value, both sides
    fees: Fraction = Fraction(0)
    fills: int = 0


@dataclass
class Position:
    """An asset's net position across venues at its average cost."""

    quantity: Fraction = Fraction(0)
    cost: Fraction = Fraction(0)  # of the open quantity
    realised: Fraction = Fraction(0)
    last_price: Fraction = Fraction(0)

    def fill(self, signed_qty: Fraction, price: Fraction) -> None:
        """Average-cost accounting of one fill."""
        self.last_price = price
        if self.quantity == 0 or (self.quantity > 0) == (signed_qty > 0):
            self.quantity += signed_qty
            self.cost += signed_qty * price
            return
        direction = 1 if signed_qty > 0 else -1
        closed = min(abs(signed_qty), abs(self.quantity)) * direction  # signed like the fill
        average = self.cost / self.quantity
        self.realised += -closed * (price - average)  # selling a long above cost gains
        self.quantity += closed
        self.cost += closed * average
        rest = signed_qty - closed
        if rest:
            self.fill(rest, price)

    @property
    def unrealised(self) -> Fraction:
        return self.quantity * self.last_price - self.cost


class Book:
    """Fills, positions and PnL of the orders and signals applied so far."""

    def __init__(self, pools: dict[bytes, Pool] | None = None) -> None:
        pools = load_pools() if pools is None else pools
        self.fee_bps = {**VENUE_FEES_BPS, **{p.venue: p.fee_bps for p in pools.values()}}
        self.venues: dict[tuple[str, int], VenueFills] = {}
        self.assets: dict[str, Position] = {}
        self.orders = 0
        self.legs = 0
        self.signals = 0
        self.gas = Fraction(0)
        self.expected = Fraction(0)
        self._signal_costs: dict[int, tuple[int, int]] = {}  # id -> (gas, net) awaiting orders
        self._executed: set[int] = set()  # ids whose orders came before their signal

    def apply(self, message: Message) -> None:
        """Apply one parsed message; TLVs of other types are left alone."""
        domain = message.header.relay_domain
        if domain == RelayDomain.EXECUTION:
            legs = [OrderRequestTLV.from_bytes(t.payload) for t in message.tlvs
                    if t.type == TLVType.ORDER_REQUEST]  # fmt: skip
            if legs:
                self.orders += 1
                for leg in legs:
                    self._fill(leg)
                self._executed_signal(legs[0].signal_id)
        elif domain == RelayDomain.SIGNAL:
            for t in message.tlvs:
                if t.type == TLVType.ARBITRAGE_SIGNAL:
                    self._signal(ArbitrageSignalTLV.from_bytes(t.payload))

    def _fill(self, leg: OrderRequestTLV) -> None:
        ticker = ticker_of(leg.asset_id)
        qty, price = Fraction(leg.quantity, Q8), Fraction(leg.limit_price, Q8)
        signed = qty if leg.side == BUY else -qty
        notional = qty * price
        rate = Fraction(self.fee_bps.get(leg.venue, 0), 10_000)
        fee = notional * rate if leg.side == BUY else notional * rate / (1 - rate)
        fills = self.venues.setdefault((ticker, leg.venue), VenueFills())
        fills.quantity += signed
        fills.notional += notional
        fills.fees += fee
        fills.fills += 1
        self.assets.setdefault(ticker, Position()).fill(signed, price)
        self.legs += 1

    def _signal(self, s: ArbitrageSignalTLV) -> None:
        self.signals += 1
        if s.signal_id in self._executed:
            self._executed.discard(s.signal_id)
            self._charge(s.gas_cost_usd_q8, s.net_profit_usd_q8)
        else:
            self._signal_costs[s.signal_id] = (s.gas_cost_usd_q8, s.net_profit_usd_q8)

    def _executed_signal(self, signal_id: int) -> None:
        costs = self._signal_costs.pop(signal_id, None)
        if costs is None:
            self._executed.add(signal_id)
        else:
            self._charge(*costs)

    def _charge(self, gas_q8: int, net_q8: int) -> None:
        self.gas += Fraction(gas_q8, Q8)
        self.expected += Fraction(net_q8, Q8)

    # -- figures ----------------------------------------------------------------------
    def realised(self) -> Fraction:
        """Realised PnL of all assets, less gas (fees are inside the fill prices)."""
        return sum((p.realised for p in self.assets.values()), Fraction(0)) - self.gas

    def unrealised(self) -> Fraction:
        return sum((p.unrealised for p in self.assets.values()), Fraction(0))

    def report(self) -> dict[str, Any]:
        """JSON-ready figures (floats in units and dollars, rounded to 1e-8)."""

        def f(x: Fraction) -> float:
            return round(float(x), 8)

        positions: dict[str, dict[str, float]] = {}
        venues: dict[str, dict[str, dict[str, float | int]]] = {}
        for (ticker, venue), v in sorted(self.venues.items()):
            positions.setdefault(ticker, {})[str(venue)] = f(v.quantity)
            venues.setdefault(ticker, {})[str(venue)] = {
                "quantity": f(v.quantity), "notional_usd": f(v.notional),
                "fees_usd": f(v.fees), "fills": v.fills}  # fmt: skip
        return {
            "orders": self.orders,
            "legs": self.legs,
            "signals": self.signals,
            "positions": positions,
            "venues": venues,
            "net_positions": {t: f(p.quantity) for t, p in sorted(self.assets.items())},
            "fees_usd": f(sum((v.fees for v in self.venues.values()), Fraction(0))),
            "gas_usd": f(self.gas),
            "realised_pnl_usd": f(self.realised()),
            "unrealised_pnl_usd": f(self.unrealised()),
            "pnl_usd": f(self.realised() + self.unrealised()),
            "expected_pnl_usd": f(self.expected),
        }


class Portfolio(Service):
    """``execution`` and ``signals`` in; positions and PnL reported."""

    name = "portfolio"
    group = "portfolio"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.book = Book()
        self._inbox: Inbox | None = None
        self._next_report = 0.0

    def connect(self) -> None:
        self._inbox = Inbox(
            self, [self.consumer("execution", self.group), self.consumer("signals")]
        )
        self._next_report = time.monotonic() + REPORT_EVERY_S

    def step(self) -> None:
        assert self._inbox is not None
        for message in self._inbox.messages():
            self.book.apply(message)
        if time.monotonic() >= self._next_report:
            self._next_report += REPORT_EVERY_S
            r = self.book.report()
            log.info("portfolio: %d orders, pnl $%.2f (expected $%.2f), positions %s",
                     r["orders"], r["pnl_usd"], r["expected_pnl_usd"], r["positions"])  # fmt: skip

    def disconnect(self) -> None:
        if self._inbox is not None:
            self._inbox.close()

    def report(self) -> dict[str, Any]:
        return self.book.report()
