"""Kraken collector: Kraken WebSocket v2 ``trade`` and ``ticker`` messages -> TradeTLV and
QuoteTLV messages on ``market_data``.

How this works
--------------
``split`` parses one message of the v2 feed. A ``trade`` or ``ticker`` channel message
(``type`` snapshot or update) carries a ``data`` list; each entry is one event. Heartbeat,
status and method replies (subscribe acks) carry none and are ignored. ``convert`` turns
an entry into a typed TLV: numbers are parsed as decimals (``parse_float=Decimal``) and
scaled to 8-decimal fixed point exactly; a trade's RFC 3339 timestamp keeps all its
digits; a ticker is stamped on arrival unless it carries a timestamp. Instruments are the
pair's base ticker at venue KRAKEN (``ETH/USD`` -> asset "ETH"), as the golden vectors
do; a pair not quoted in US dollars is ignored. The generator writes the same shapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Any

from mycelium.protocol import (
    AssetType,
    QuoteTLV,
    SourceType,
    TradeTLV,
    TypedTLV,
    VenueId,
    to_fixed,
)
from mycelium.services.adapter import FeedAdapter
from mycelium.services.base import Malformed
from mycelium.services.markets import QUOTE_TICKERS, asset_id
from mycelium.services.synthetic import PriceModel, wall_clock

__all__ = ["KrakenCollector", "convert", "generate", "split"]


def _json(obj: object) -> str:
    """Compact JSON, as the feed sends it."""
    return json.dumps(obj, separators=(",", ":"))


LIVE_URL = "wss://ws.kraken.com/v2"
SYMBOLS = ["ETH/USD", "BTC/USD"]
CHANNELS = ("trade", "ticker")
SIDES = {"buy": 0, "sell": 1}
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")

Event = tuple[str, dict[str, Any]]


def split(line: str) -> list[Event]:
    """The (channel, entry) events of one v2 message; [] for heartbeats, status, acks."""
    try:
        doc = json.loads(line, parse_float=Decimal)
    except ValueError as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Malformed(f"expected a JSON object, got {type(doc).__name__}")
    channel = doc.get("channel")
    if channel not in CHANNELS:
        return []
    data = doc.get("data")
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise Malformed(f"{channel} message without a list of objects in 'data'")
    return [(channel, entry) for entry in data]


def _number(entry: dict[str, Any], key: str, *, positive: bool = True) -> int:
    """A JSON number field as 8-decimal fixed point."""
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise Malformed(f"field {key!r} is not a number: {value!r}")
    if value < 0 or (positive and value == 0):
        raise Malformed(f"field {key!r} must be {'positive' if positive else '>= 0'}: {value}")
    try:
        return to_fixed(value)
    except ValueError as exc:
        raise Malformed(f"field {key!r}: {exc}") from None


def _base(entry: dict[str, Any]) -> str | None:
    """The base ticker of a USD pair ("ETH/USD" -> "ETH"), None for another quote."""
    symbol = entry.get("symbol")
    if not isinstance(symbol, str) or symbol.count("/") != 1:
        raise Malformed(f"bad symbol {symbol!r}")
    base, quote = symbol.split("/")
    if not (base.isalnum() and base.isascii() and 0 < len(base) <= 8):
        raise Malformed(f"bad symbol {symbol!r}")
    return base if quote in QUOTE_TICKERS else None


def timestamp_ns(text: Any) -> int:
    """An RFC 3339 timestamp ("2023-09-25T07:49:37.708706Z") in ns since the epoch."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise Malformed(f"bad timestamp {text!r}")
    zone = "+00:00" if m[3] == "Z" else m[3]
    try:
        seconds = int(datetime.fromisoformat(m[1] + zone).timestamp())
    except ValueError as exc:
        raise Malformed(f"bad timestamp {text!r}: {exc}") from None
    return seconds * 1_000_000_000 + int((m[2] or "").ljust(9, "0"))


def convert(event: Event, now_ns: int) -> TypedTLV | None:
    """A trade entry as a TradeTLV, a ticker entry as a QuoteTLV (None: not a USD pair)."""
    channel, entry = event
    base = _base(entry)
    if base is None:
        return None
    instrument = {
        "asset_id": asset_id(base),
        "venue_id": VenueId.KRAKEN,
        "asset_type": AssetType.COIN,
    }
    if channel == "trade":
        side = SIDES.get(entry.get("side"))  # type: ignore[arg-type]
        if side is None:
            raise Malformed(f"bad side {entry.get('side')!r}")
        return TradeTLV(
            price=_number(entry, "price"),
            volume=_number(entry, "qty"),
            timestamp_ns=timestamp_ns(entry.get("timestamp")),
            side=side,
            **instrument,
        )
    bid, ask = _number(entry, "bid"), _number(entry, "ask")
    if bid > ask:
        raise Malformed(f"crossed ticker: bid {entry['bid']} > ask {entry['ask']}")
    return QuoteTLV(
        bid_price=bid,
        bid_size=_number(entry, "bid_qty", positive=False),
        ask_price=ask,
        ask_size=_number(entry, "ask_qty", positive=False),
        timestamp_ns=now_ns if "timestamp" not in entry else timestamp_ns(entry["timestamp"]),
        **instrument,
    )


def _iso(ns: int) -> str:
    """ns since the epoch as Kraken writes it: RFC 3339, UTC, microseconds."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return (
        datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac // 1000:06d}Z"
    )


def generate(seed: int, clock: Iterator[int]) -> Iterator[str]:
    """An endless Kraken v2 feed: status, subscribe acks, then per tick a ticker update of
    every pair, trades now and then, and a heartbeat every few ticks. ``clock`` yields
    the time (ns) of each tick."""
    model = PriceModel(seed, ["kraken"], [s.split("/")[0] for s in SYMBOLS])
    rng = model.rng("kraken")
    trade_ids = count(rng.randrange(1_000_000, 9_000_000))
    yield _json({"channel": "status", "type": "update", "data": [
        {"version": "2.0.0", "system": "online", "api_version": "v2",
         "connection_id": rng.getrandbits(63)}]})  # fmt: skip
    for channel in CHANNELS:
        yield _json({"method": "subscribe", "result": {"channel": channel,
                          "snapshot": True, "symbol": SYMBOLS}, "success": True})  # fmt: skip
    stats = {s: {"volume": rng.uniform(1e3, 5e3), "low": 0.0, "high": 0.0} for s in SYMBOLS}
    for tick, now in enumerate(clock):
        model.step()
        for symbol in SYMBOLS:
            mid = model.price("kraken", symbol.split("/")[0])
            decimals = 1 if mid > 10_000 else 2
            half = max(mid * 0.00005, 10**-decimals)
            bid, ask = round(mid - half, decimals), round(mid + half, decimals)
            s = stats[symbol]
            s["low"] = min(s["low"] or bid, bid)
            s["high"] = max(s["high"], ask)
            if rng.random() < 0.5:
                side = rng.choice(("buy", "sell"))
                qty = round(rng.uniform(0.001, 2.0), 8)
                s["volume"] += qty
                yield _json({"channel": "trade", "type": "update", "data": [{
                    "symbol": symbol, "side": side, "price": ask if side == "buy" else bid,
                    "qty": qty, "ord_type": rng.choice(("market", "limit")),
                    "trade_id": next(trade_ids), "timestamp": _iso(now)}]})  # fmt: skip
            change = round(mid - model.market[symbol.split("/")[0]], decimals)
            yield _json({"channel": "ticker", "type": "update", "data": [{
                "symbol": symbol, "bid": bid, "bid_qty": round(rng.uniform(1, 20), 8),
                "ask": ask, "ask_qty": round(rng.uniform(1, 20), 8),
                "last": round(mid, decimals), "volume": round(s["volume"], 8),
                "vwap": round(mid, decimals), "low": s["low"], "high": s["high"],
                "change": change, "change_pct": round(100 * change / mid, 2)}]})  # fmt: skip
        if tick % 20 == 19:
            yield _json({"channel": "heartbeat"})


class KrakenCollector(FeedAdapter):
    """The Kraken v2 feed (file, generator or live) as market data."""

    name = "kraken_collector"
    source = SourceType.KRAKEN
    live_url = LIVE_URL

    split = staticmethod(split)
    convert = staticmethod(convert)

    def generate(self) -> Iterator[str]:
        return generate(self.seed, wall_clock())

    def subscriptions(self) -> list[dict[str, Any]]:
        return [
            {"method": "subscribe", "params": {"channel": channel, "symbol": SYMBOLS}}
            for channel in CHANNELS
        ]
