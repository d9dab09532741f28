"""Kraken collector: Kraken WebSocket v2 ``trade``, ``ticker`` and ``book`` messages ->
TradeTLV, QuoteTLV and OrderBookTLV messages on ``market_data``.

How this works
--------------
``split`` parses one message of the v2 feed. A ``trade`` or ``ticker`` channel message
(``type`` snapshot or update) carries a ``data`` list; each entry is one event. Heartbeat,
status and method replies (subscribe acks) carry none and are ignored. ``convert`` turns
an entry into a typed TLV: numbers are parsed as decimals (``parse_float=Decimal``) and
scaled to 8-decimal fixed point exactly; a value with more decimals (PEPE at 0.000012345)
is refused as malformed, logged and counted, never rounded (the book carries such values
exactly in its own scale). A trade's RFC 3339 timestamp keeps all its digits; a ticker
is stamped on arrival unless it carries a timestamp. The instrument is the pair: the
base ticker at venue KRAKEN with the quote currency in its ``reserved`` byte
(``ETH/USD``, ``ETH/USDT`` and ``ETH/USDC`` differ; USD reads as the golden vectors do);
a pair quoted in a currency ``QuoteCurrency`` does not know is ignored.

The ``book`` channel (``kraken_book``) keeps a local book per pair at the configured
depth and checks Kraken's CRC32 after every message; on a mismatch the collector counts
it, drops the book and resubscribes the pair (on a live feed: unsubscribe, subscribe).
A subscription Kraken refuses (``"success": false``) is logged and counted. A live feed
that sends nothing for ``max_silence_s`` is reconnected (Kraken sends a heartbeat every
second). The generator writes the same shapes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Any

from mycelium.errors import ConfigError
from mycelium.protocol import (
    InstrumentId,
    PrecisionLoss,
    QuoteCurrency,
    QuoteTLV,
    SourceType,
    TradeTLV,
    TypedTLV,
    VenueId,
    to_fixed_exact,
)
from mycelium.services.adapter import FeedAdapter, MarketTLV
from mycelium.services.base import Malformed
from mycelium.services.kraken_book import BookKeeper, OutOfSync, SyntheticBook
from mycelium.services.synthetic import PriceModel, wall_clock

__all__ = [
    "BOOK_DEPTH",
    "BOOK_DEPTHS",
    "KrakenCollector",
    "book_depth",
    "convert",
    "generate",
    "instrument_of",
    "split",
]

log = logging.getLogger("mycelium.services")


def _json(obj: object) -> str:
    """Compact JSON, as the feed sends it."""
    return json.dumps(obj, separators=(",", ":"))


LIVE_URL = "wss://ws.kraken.com/v2"
SYMBOLS = ["ETH/USD", "BTC/USD", "POL/USD"]
CHANNELS = ("trade", "ticker")
BOOK_CHANNEL = "book"
#: Levels per side of the ``book`` subscription, and the depths Kraken offers.
BOOK_DEPTH = 10
BOOK_DEPTHS = (10, 25, 100, 500, 1000)
#: Chance per tick and pair that the generator sends a book update.
BOOK_UPDATE_CHANCE = 0.3
#: Kraken sends a heartbeat every second; this much silence means the feed is dead.
MAX_SILENCE_S = 10.0
SIDES = {"buy": 0, "sell": 1}
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")

Event = tuple[str, dict[str, Any]]


def book_depth(depth: int) -> int:
    """``depth`` if Kraken offers it; else ``ConfigError`` (Kraken would refuse the
    subscription, and the feed would carry no book at all)."""
    if isinstance(depth, bool) or depth not in BOOK_DEPTHS:
        allowed = ", ".join(map(str, BOOK_DEPTHS))
        raise ConfigError(f"book depth must be one of Kraken's {allowed}; got {depth!r}")
    return depth


def split(line: str) -> list[Event]:
    """The (channel, entry) events of one v2 message; [] for heartbeats, status, acks; a
    refused request is one ("error", reply) event. A book entry's channel is
    "book:snapshot" or "book:update"."""
    try:
        doc = json.loads(line, parse_float=Decimal)
    except ValueError as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Malformed(f"expected a JSON object, got {type(doc).__name__}")
    if "method" in doc and doc.get("success") is False:
        return [("error", doc)]
    channel = doc.get("channel")
    if channel not in (*CHANNELS, BOOK_CHANNEL):
        return []
    data = doc.get("data")
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise Malformed(f"{channel} message without a list of objects in 'data'")
    if channel == BOOK_CHANNEL:
        channel = f"book:{doc.get('type')}"
    return [(channel, entry) for entry in data]


def _number(entry: dict[str, Any], key: str, *, positive: bool = True) -> int:
    """A JSON number field as 8-decimal fixed point."""
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise Malformed(f"field {key!r} is not a number: {value!r}")
    if value < 0 or (positive and value == 0):
        raise Malformed(f"field {key!r} must be {'positive' if positive else '>= 0'}: {value}")
    try:
        return to_fixed_exact(value)
    except PrecisionLoss as exc:
        raise Malformed(f"field {key!r}: {exc}; refused rather than rounded") from None
    except ValueError as exc:
        raise Malformed(f"field {key!r}: {exc}") from None


def instrument_of(entry: dict[str, Any]) -> InstrumentId | None:
    """The pair's instrument ("ETH/USDT" -> ETH quoted in USDT at KRAKEN), None for a
    quote currency we do not know."""
    symbol = entry.get("symbol")
    if not isinstance(symbol, str) or symbol.count("/") != 1:
        raise Malformed(f"bad symbol {symbol!r}")
    base, quote = symbol.split("/")
    if not (base.isalnum() and base.isascii() and 0 < len(base) <= 8):
        raise Malformed(f"bad symbol {symbol!r}")
    if quote.upper() not in QuoteCurrency.__members__:
        return None
    return InstrumentId.from_pair(VenueId.KRAKEN, base, quote)


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
    """A trade entry as a TradeTLV, a ticker entry as a QuoteTLV (None: an unknown quote
    currency)."""
    channel, entry = event
    pair = instrument_of(entry)
    if pair is None:
        return None
    if channel == "trade":
        side = SIDES.get(entry.get("side"))  # type: ignore[arg-type]
        if side is None:
            raise Malformed(f"bad side {entry.get('side')!r}")
        return TradeTLV(
            price=_number(entry, "price"),
            volume=_number(entry, "qty"),
            timestamp_ns=timestamp_ns(entry.get("timestamp")),
            side=side,
            asset_id=pair.asset_id,
            venue_id=pair.venue,
            asset_type=pair.asset_type,
            reserved=pair.reserved,
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
        asset_id=pair.asset_id,
        venue_id=pair.venue,
        asset_type=pair.asset_type,
        reserved=pair.reserved,
    )


def _iso(ns: int) -> str:
    """ns since the epoch as Kraken writes it: RFC 3339, UTC, microseconds."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return (
        datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac // 1000:06d}Z"
    )


def generate(seed: int, clock: Iterator[int], depth: int = BOOK_DEPTH) -> Iterator[str]:
    """An endless Kraken v2 feed: status, subscribe acks, then per tick a ticker update of
    every pair, trades now and then, a book snapshot of each pair and then book updates
    (``depth`` levels, Kraken's checksum), and a heartbeat every few ticks. ``clock``
    yields the time (ns) of each tick."""
    model = PriceModel(seed, ["kraken", "kraken:book"], [s.split("/")[0] for s in SYMBOLS])
    rng, book_rng = model.rng("kraken"), model.rng("kraken:book")
    books: dict[str, SyntheticBook] = {}
    trade_ids = count(rng.randrange(1_000_000, 9_000_000))
    yield _json({"channel": "status", "type": "update", "data": [
        {"version": "2.0.0", "system": "online", "api_version": "v2",
         "connection_id": rng.getrandbits(63)}]})  # fmt: skip
    for channel in CHANNELS:
        yield _json({"method": "subscribe", "result": {"channel": channel,
                          "snapshot": True, "symbol": SYMBOLS}, "success": True})  # fmt: skip
    for symbol in SYMBOLS:
        yield _json({"method": "subscribe", "result": {"channel": BOOK_CHANNEL, "depth": depth,
                     "snapshot": True, "symbol": symbol}, "success": True})  # fmt: skip
    stats = {s: {"volume": rng.uniform(1e3, 5e3), "low": 0.0, "high": 0.0} for s in SYMBOLS}
    for tick, now in enumerate(clock):
        model.step()
        for symbol in SYMBOLS:
            mid = model.price("kraken", symbol.split("/")[0])
            decimals = 1 if mid > 10_000 else 2 if mid > 10 else 4
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
                "change": change, "change_pct": round(100 * change / mid, 2),
                "timestamp": _iso(now)}]})  # fmt: skip
            if symbol not in books:
                books[symbol] = SyntheticBook(symbol, depth, decimals, mid, book_rng)
            if tick == 0 or book_rng.random() < BOOK_UPDATE_CHANCE:
                kind, entry = books[symbol].entry(mid)
                yield _json({"channel": BOOK_CHANNEL, "type": kind,
                             "data": [{**entry, "timestamp": _iso(now)}]})  # fmt: skip
        if tick % 20 == 19:
            yield _json({"channel": "heartbeat"})


class KrakenCollector(FeedAdapter):
    """The Kraken v2 feed (file, generator or live) as market data."""

    name = "kraken_collector"
    source = SourceType.KRAKEN
    live_url = LIVE_URL

    max_silence_s = MAX_SILENCE_S

    split = staticmethod(split)

    def __init__(self, *args: Any, depth: int = BOOK_DEPTH, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.books = BookKeeper(book_depth(depth))
        self.checksum_mismatches = 0
        self.resubscribes = 0
        self.subscription_errors = 0

    def convert(self, event: Any, now_ns: int) -> MarketTLV | None:
        channel, entry = event
        if channel == "error":
            self.subscription_errors += 1
            log.error("%s: Kraken refused %s: %s", self.name, _json(entry.get("method")),
                      entry.get("error"))  # fmt: skip
            return None
        if not channel.startswith("book:"):
            return convert(event, now_ns)
        pair = instrument_of(entry)
        if pair is None:
            return None
        stamp = entry.get("timestamp")
        try:
            return self.books.apply(channel[5:], entry, pair,
                                    now_ns if stamp is None else timestamp_ns(stamp))  # fmt: skip
        except OutOfSync as exc:
            self.checksum_mismatches += 1
            log.warning("%s: %s; resubscribing", self.name, exc)
            self._resubscribe(exc.symbol)
            return None

    def _resubscribe(self, symbol: str) -> None:
        """Ask for a fresh snapshot of one pair's book."""
        self.resubscribes += 1
        for method in ("unsubscribe", "subscribe"):
            self.link.outbox.put({"method": method, "params": self._book_params([symbol])})

    def _book_params(self, symbols: list[str]) -> dict[str, Any]:
        return {"channel": BOOK_CHANNEL, "symbol": symbols, "depth": self.books.depth}

    def generate(self) -> Iterator[str]:
        return generate(self.seed, wall_clock(), self.books.depth)

    def subscriptions(self) -> list[dict[str, Any]]:
        return [
            *({"method": "subscribe", "params": {"channel": channel, "symbol": SYMBOLS}}
              for channel in CHANNELS),
            {"method": "subscribe", "params": self._book_params(SYMBOLS)},
        ]  # fmt: skip

    def report(self) -> dict[str, Any]:
        return {
            "book_depth": self.books.depth,
            "book_checksum_mismatches": self.checksum_mismatches,
            "resubscribes": self.resubscribes,
            "subscription_errors": self.subscription_errors,
            "silent_reconnects": self.link.silent_reconnects,
        }
