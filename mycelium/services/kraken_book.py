"""Kraken v2 ``book`` channel: a local L2 book per symbol, checked against Kraken's CRC32.

How this works
--------------
A ``snapshot`` replaces a symbol's book, an ``update`` changes levels (``qty`` 0 removes
one); after each message the book is cut to the subscribed depth (Kraken sends no removal
for levels that fall out of scope) and its checksum is computed as Kraken documents it:
for the top 10 asks (low to high), then the top 10 bids (high to low), the price and the
qty as sent, with the decimal point removed and leading zeros stripped, concatenated;
CRC-32 of that string as an unsigned int. The numbers must keep the exact text Kraken
sent (``json.loads(parse_float=Decimal)`` keeps trailing zeros), which is why levels are
Decimals here and never floats.

A book whose checksum differs is dropped and ``OutOfSync`` raised: the collector counts it
and resubscribes; updates for that symbol are ignored until the new snapshot. Each good
message yields an ``OrderBookTLV`` whose scale (``precision_factor``) is 10**8, or finer
when a level has more decimals, so every digit is carried exactly.

``SyntheticBook`` is the other side, for the built-in generator: a book of ``depth`` levels
a fixed spacing apart around a moving mid, sent as Kraken does (a snapshot, then updates
of the changed levels, ``qty`` 0 for a removed one) with the checksum Kraken would send,
computed on the numbers' JSON text so the collector's check passes.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mycelium.protocol import FIXED_POINT_DECIMALS, InstrumentId, OrderBookTLV, OrderLevel
from mycelium.services.base import Malformed

__all__ = ["CHECKSUM_LEVELS", "BookKeeper", "OutOfSync", "SyntheticBook", "checksum"]

#: Kraken's checksum covers the top 10 levels of each side, whatever the depth.
CHECKSUM_LEVELS = 10


class OutOfSync(Exception):
    """The local book no longer matches Kraken's checksum."""

    def __init__(self, symbol: str, expected: int, computed: int) -> None:
        super().__init__(f"{symbol}: book checksum {computed} != Kraken's {expected}")
        self.symbol = symbol


def _digits(value: Decimal) -> str:
    """A number as Kraken's checksum writes it: its text without '.' and leading zeros."""
    return str(value).replace(".", "").lstrip("0")


def checksum(asks: list[tuple[Decimal, Decimal]], bids: list[tuple[Decimal, Decimal]]) -> int:
    """CRC32 of the top 10 asks (lowest first) and bids (highest first)."""
    text = "".join(
        _digits(price) + _digits(qty)
        for side in (asks[:CHECKSUM_LEVELS], bids[:CHECKSUM_LEVELS])
        for price, qty in side
    )
    return zlib.crc32(text.encode("ascii"))


@dataclass
class _Book:
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    bids: dict[Decimal, Decimal] = field(default_factory=dict)

    def sorted(self, depth: int) -> tuple[list[tuple[Decimal, Decimal]], ...]:
        asks = sorted(self.asks.items())[:depth]
        bids = sorted(self.bids.items(), reverse=True)[:depth]
        return asks, bids


def _levels(entry: dict[str, Any], side: str) -> list[tuple[Decimal, Decimal]]:
    raw = entry.get(side, [])
    if not isinstance(raw, list):
        raise Malformed(f"book {side!r} is not a list")
    out = []
    for level in raw:
        price = level.get("price") if isinstance(level, dict) else None
        qty = level.get("qty") if isinstance(level, dict) else None
        if not isinstance(price, Decimal | int) or not isinstance(qty, Decimal | int):
            raise Malformed(f"book level is not {{price, qty}} numbers: {level!r}")
        if isinstance(price, bool) or isinstance(qty, bool) or price <= 0 or qty < 0:
            raise Malformed(f"book level out of range: {level!r}")
        out.append((Decimal(price), Decimal(qty)))
    return out


def _scale(levels: list[tuple[Decimal, Decimal]]) -> int:
    """The smallest power of ten >= 10**8 that holds every number exactly."""
    decimals = FIXED_POINT_DECIMALS
    for price, qty in levels:
        for value in (price, qty):
            exponent = value.as_tuple().exponent
            assert isinstance(exponent, int)  # finite: checked by _levels
            decimals = max(decimals, -exponent)
    scale: int = 10**decimals
    return scale


class BookKeeper:
    """The books of every subscribed symbol; sans-IO."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.books: dict[str, _Book] = {}
        self.sequence = 0

    def apply(
        self, kind: Any, entry: dict[str, Any], instrument: InstrumentId, now_ns: int
    ) -> OrderBookTLV | None:
        """Apply one data entry of a book message; None while waiting for a snapshot.
        Raises ``OutOfSync`` on a checksum mismatch, ``Malformed`` for a broken entry."""
        symbol = str(entry.get("symbol"))
        asks, bids = _levels(entry, "asks"), _levels(entry, "bids")
        expected = entry.get("checksum")
        if isinstance(expected, bool) or not isinstance(expected, int):
            raise Malformed(f"book entry without an integer checksum: {expected!r}")
        if kind == "snapshot":
            self.books[symbol] = _Book()
        elif kind != "update":
            raise Malformed(f"book message of type {kind!r}")
        book = self.books.get(symbol)
        if book is None:
            return None  # resubscribed: the snapshot is on its way
        for side, levels in ((book.asks, asks), (book.bids, bids)):
            for price, qty in levels:
                if qty == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        top_asks, top_bids = book.sorted(self.depth)
        book.asks, book.bids = dict(top_asks), dict(top_bids)
        computed = checksum(top_asks, top_bids)
        if computed != expected:
            del self.books[symbol]
            raise OutOfSync(symbol, expected, computed)
        scale = _scale(top_asks + top_bids)
        self.sequence += 1
        return OrderBookTLV(
            asset_id=instrument.asset_id,
            venue_id=instrument.venue,
            asset_type=instrument.asset_type,
            reserved=instrument.reserved,
            timestamp_ns=now_ns,
            sequence=self.sequence,
            precision_factor=scale,
            bids=[OrderLevel(int(p * scale), int(q * scale)) for p, q in top_bids],
            asks=[OrderLevel(int(p * scale), int(q * scale)) for p, q in top_asks],
        )


def _wire(value: float) -> Decimal:
    """A number as the collector will read it back: the text ``json.dumps`` writes."""
    return Decimal(repr(value))


class SyntheticBook:
    """A generated Kraken v2 book of one symbol; ``entry(mid)`` is the next message."""

    def __init__(self, symbol: str, depth: int, decimals: int, mid: float,
                 rng: random.Random) -> None:  # fmt: skip
        self.symbol, self.depth, self.decimals, self.rng = symbol, depth, decimals, rng
        self.spacing = max(10.0**-decimals, round(mid * 1e-4, decimals))
        self.book: _Book | None = None

    def _targets(self, mid: float) -> tuple[list[Decimal], list[Decimal]]:
        """The level prices around ``mid``: asks up from the best ask, bids down."""
        steps = round(mid / self.spacing)

        def price(n: int) -> Decimal:
            return _wire(round(n * self.spacing, self.decimals))

        bids = [price(steps - 1 - i) for i in range(self.depth)]
        return [price(steps + 1 + i) for i in range(self.depth)], [p for p in bids if p > 0]

    def _qty(self) -> Decimal:
        return _wire(round(self.rng.uniform(0.01, 20.0), 8))

    def entry(self, mid: float) -> tuple[str, dict[str, Any]]:
        """("snapshot" | "update", data entry without its timestamp)."""
        asks, bids = self._targets(mid)
        kind = "update" if self.book is not None else "snapshot"
        book = self.book or _Book()
        sent: dict[str, list[dict[str, float]]] = {"bids": [], "asks": []}
        for name, side, target in (("asks", book.asks, asks), ("bids", book.bids, bids)):
            changes = {p: Decimal(0) for p in side if p not in target}
            changes |= {p: self._qty() for p in target if p not in side}
            if side and self.rng.random() < 0.5:  # someone adds to or takes from a level
                changes[self.rng.choice(sorted(set(side) & set(target)) or target)] = self._qty()
            for price, qty in sorted(changes.items(), reverse=name == "bids"):
                sent[name].append({"price": float(price), "qty": float(qty)})
                if qty == 0:
                    side.pop(price)
                else:
                    side[price] = qty
        self.book = book
        top_asks, top_bids = book.sorted(self.depth)
        return kind, {"symbol": self.symbol, **sent, "checksum": checksum(top_asks, top_bids)}
