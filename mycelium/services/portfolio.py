"""Portfolio: positions and PnL from the strategy's orders and signals.

How this works
--------------
``Book`` is sans-IO: ``apply(message)`` takes parsed messages from ``execution`` (order
requests, treated as filled at their limit price: this is a paper book) and ``signals``
(arbitrage signals). Quantities and prices are 8-decimal fixed point, so cash is kept
exactly as an integer scaled by 10**16. Positions are per asset and venue: an arbitrage
leaves +q at the venue it bought at and -q where it sold, flat overall, and its cash is
the realised spread after fees and slippage. A signal's gas cost is charged once its
orders arrive (the two come on different topics, in either order). PnL marks the net
position at the last traded price, so with flat arbitrage it equals the sum of the
executed signals' net profit, which the report shows beside it as a check.

``Portfolio`` runs a book on ``execution`` (queue group "portfolio") and ``signals`` and
logs a summary every ``REPORT_EVERY_S``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mycelium.protocol import ArbitrageSignalTLV, Message, RelayDomain, TLVType
from mycelium.services.base import Inbox, Service
from mycelium.services.markets import ticker_of
from mycelium.services.orders import BUY, OrderRequest

__all__ = ["Book", "Portfolio"]

log = logging.getLogger("mycelium.services")

Q8 = 100_000_000
Q16 = Q8 * Q8
REPORT_EVERY_S = 5.0


class Book:
    """Positions, cash and PnL of the orders and signals applied so far."""

    def __init__(self) -> None:
        self.positions: dict[tuple[str, int], int] = {}  # (ticker, venue) -> q8 quantity
        self.cash_q16 = 0
        self.last_price: dict[str, int] = {}  # ticker -> q8 USD
        self.orders = 0
        self.legs = 0
        self.signals = 0
        self.gas_q8 = 0
        self.expected_q8 = 0
        self._signal_costs: dict[int, tuple[int, int]] = {}  # id -> (gas, net) awaiting orders
        self._executed: set[int] = set()  # ids whose orders came before their signal

    def apply(self, message: Message) -> None:
        """Apply one parsed message; TLVs of other types are left alone."""
        domain = message.header.relay_domain
        if domain == RelayDomain.EXECUTION:
            legs = [OrderRequest.from_bytes(t.payload) for t in message.tlvs
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

    def _fill(self, leg: OrderRequest) -> None:
        ticker = ticker_of(leg.asset_id)
        signed = leg.quantity if leg.side == BUY else -leg.quantity
        key = (ticker, leg.venue)
        self.positions[key] = self.positions.get(key, 0) + signed
        self.cash_q16 -= signed * leg.limit_price
        self.last_price[ticker] = leg.limit_price
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
        self.gas_q8 += gas_q8
        self.expected_q8 += net_q8

    # -- figures ----------------------------------------------------------------------
    def net_positions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (ticker, _venue), qty in self.positions.items():
            out[ticker] = out.get(ticker, 0) + qty
        return out

    def pnl_usd(self) -> float:
        """Cash plus the net positions at their last price, less gas."""
        marked = sum(q * self.last_price.get(t, 0) for t, q in self.net_positions().items())
        return (self.cash_q16 + marked) / Q16 - self.gas_q8 / Q8

    def report(self) -> dict[str, Any]:
        """JSON-ready figures (floats in units and dollars)."""
        positions: dict[str, dict[str, float]] = {}
        for (ticker, venue), qty in sorted(self.positions.items()):
            positions.setdefault(ticker, {})[str(venue)] = qty / Q8
        return {
            "orders": self.orders,
            "legs": self.legs,
            "signals": self.signals,
            "positions": positions,
            "net_positions": {t: q / Q8 for t, q in sorted(self.net_positions().items())},
            "cash_usd": round(self.cash_q16 / Q16, 8),
            "gas_usd": self.gas_q8 / Q8,
            "pnl_usd": round(self.pnl_usd(), 8),
            "expected_pnl_usd": self.expected_q8 / Q8,
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
