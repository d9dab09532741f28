"""Deterministic synthetic prices for the built-in feeds.

How this works
--------------
Each asset has one slow random walk shared by every venue: a generator seeded with the
same seed computes the same walk, so the Kraken and the Polygon generators (separate
processes) agree on the market. Each venue adds its own deviation, which now and then
jumps by about one percent and then decays back: that is when the strategy sees a
spread wider than fees and gas. Everything comes from ``random.Random`` instances seeded
from (seed, name), so a run is reproducible to the digit.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Iterator

__all__ = ["BASE_PRICES", "PriceModel", "wall_clock"]

#: Starting USD prices of the assets the feeds carry.
BASE_PRICES = {"ETH": 2000.0, "BTC": 30000.0, "POL": 0.5}
#: Per-step volatility of the shared walk (relative).
WALK_SIGMA = 0.0002
#: Chance per step that a venue's price jumps away from the market, and its size range.
JUMP_CHANCE = 0.01
JUMP_RANGE = (0.008, 0.015)
#: Fraction of a venue's deviation that remains after each step.
DECAY = 0.9
#: Everyday noise of a venue around the market (relative).
NOISE = 0.0003


def _rng(seed: int, name: str) -> random.Random:
    return random.Random(seed * 1_000_003 + zlib.crc32(name.encode()))


class PriceModel:
    """Prices of ``assets`` at ``venues``; ``step()`` advances the market one tick."""

    def __init__(self, seed: int, venues: list[str], assets: list[str]) -> None:
        self._walk = {a: _rng(seed, f"walk:{a}") for a in assets}
        self._venue_rng = {v: _rng(seed, f"venue:{v}") for v in venues}
        self.market = {a: BASE_PRICES[a] for a in assets}
        self._deviation = {(v, a): 0.0 for v in venues for a in assets}

    def step(self) -> None:
        for asset, rng in self._walk.items():
            self.market[asset] *= 1.0 + rng.gauss(0.0, WALK_SIGMA)
        for (venue, asset), dev in self._deviation.items():
            rng = self._venue_rng[venue]
            dev = dev * DECAY + rng.gauss(0.0, NOISE) * (1 - DECAY)
            if rng.random() < JUMP_CHANCE:
                dev += rng.choice((-1, 1)) * rng.uniform(*JUMP_RANGE)
            self._deviation[(venue, asset)] = dev

    def price(self, venue: str, asset: str) -> float:
        """The venue's current mid price of ``asset`` in USD."""
        return self.market[asset] * (1.0 + self._deviation[(venue, asset)])

    def rng(self, venue: str) -> random.Random:
        """The venue's own random stream (sizes, sides, ids)."""
        return self._venue_rng[venue]


def wall_clock() -> Iterator[int]:
    """The time of each tick of a live generator: now, in ns."""
    while True:
        yield time.time_ns()
