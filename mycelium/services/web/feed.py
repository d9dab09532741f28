"""The page's update document: the dashboard's view and the broker's stats as JSON.

How this works
--------------
``Feed`` is sans-IO. ``sample(stats, pnl_usd, now)`` files a broker stats document (None
while the broker does not answer) and keeps short histories: every topic's publish rate
(the page's sparklines) and the PnL (its chart). ``document(snapshot, now, web)`` turns a
``DashboardState.snapshot()`` plus the latest stats into the JSON-ready document the page
renders. The server builds one at most every ``UPDATE_EVERY_S`` whatever the message
rate, so a burst costs the browser no more than a quiet minute does.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from mycelium.protocol import ArbitrageSignalTLV
from mycelium.services.dashboard import Q8, venue_name

__all__ = ["HISTORY", "Feed"]

#: Samples kept per sparkline and for the PnL chart (one per stats sample).
HISTORY = 120
TOPIC_FIELDS = ("name", "routing", "producers", "consumers", "published", "delivered",
                "publish_rate", "deliver_rate", "dropped")  # fmt: skip
TRADE_FIELDS = ("time", "venue", "asset", "side", "price", "qty")


def _signal(s: ArbitrageSignalTLV) -> dict[str, Any]:
    return {"id": s.signal_id, "buy": venue_name(s.source_venue),
            "sell": venue_name(s.target_venue), "spread_bps": s.spread_bps,
            "net_usd": s.net_profit_usd_q8 / Q8}  # fmt: skip


class Feed:
    """The latest broker stats and the histories the page draws."""

    def __init__(self) -> None:
        self.stats: dict[str, Any] | None = None
        self.stats_seq = 0  # stats samples taken so far (answered or not)
        self.rates: dict[str, deque[float]] = {}
        self.pnl: deque[tuple[float, float]] = deque(maxlen=HISTORY)

    def sample(self, stats: dict[str, Any] | None, pnl_usd: float, now: float) -> None:
        """File one stats document (or None: no answer) and the PnL at ``now`` (epoch s)."""
        self.stats = stats
        self.stats_seq += 1
        self.pnl.append((round(now, 3), pnl_usd))
        for t in (stats or {}).get("topics", []):
            self.rates.setdefault(t["name"], deque(maxlen=HISTORY)).append(t["publish_rate"])

    def document(self, view: dict[str, Any], now: float, web: dict[str, int]) -> dict[str, Any]:
        """Everything the page shows, JSON-ready; ``web`` is the server's own counters."""
        stats = self.stats
        book = view["book"]
        return {
            "time": round(now, 3),
            "stats_seq": self.stats_seq,
            "broker": None if stats is None else stats["broker"],
            "topics": [
                {**{k: t[k] for k in TOPIC_FIELDS}, "rates": list(self.rates.get(t["name"], ()))}
                for t in (stats or {}).get("topics", [])
            ],
            "seen": view["counts"],
            "shed": view["shed"],
            "trades": [dict(zip(TRADE_FIELDS, trade, strict=True)) for trade in view["trades"]],
            "books": [
                {"asset": asset, "venue": venue, "bid": bid, "mid": mid, "ask": ask}
                for asset, venue, mid, bid, ask in view["prices"]
            ],
            "gas_gwei": view["gas_gwei"],
            "signals": [_signal(s) for s in view["signals"]],
            "positions": [
                {"asset": asset, "venue": venue_name(int(venue)), "qty": qty}
                for asset, venues in book["positions"].items()
                for venue, qty in venues.items()
            ],
            "pnl": {
                "usd": book["pnl_usd"],
                "expected_usd": book["expected_pnl_usd"],
                "orders": book["orders"],
                "history": list(self.pnl),
            },
            "web": web,
        }
