"""Trade sizing for a two-pool flash arbitrage: exact Decimal math, no I/O.

How this works
--------------
A ``PoolView`` is one pool as the strategy prices it: reserves of base and quote in token
units (virtual L/sqrtP and L*sqrtP for V3, with how much base it can pay out or take in
before its price leaves the current tick interval).

For a pair (buy pool A, sell pool B) with quote in x, A pays out y = ga*x*Ab / (Aq + ga*x)
base and B pays z = gb*y*Bq / (Bb + gb*y) quote (g = 1 - fee); the profit z - x - f*x
(f: the flash-loan fee) is concave with its maximum at the closed form
``x* = (sqrt(K*M / (1 + f)) - M) / N``, ``K = ga*gb*Ab*Bq``, ``M = Aq*Bb``,
``N = ga*(Bb + gb*Ab)``. Where a V3 pool is involved the size is bounded so that its price
stays inside the current tick interval (liquidity is assumed constant there: the
liquidity of neighbouring ticks is unknown to us), and found by a golden-section search
on that interval. All of it is ``Decimal`` (40 digits); results are rounded once, to
8-decimal fixed point (``q8``), so the signal's fields add up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from mycelium.services.markets import Pool

__all__ = ["PRECISION_DIGITS", "Q8", "ZERO", "PoolView", "optimal_input", "pair_output", "q8"]

Q8 = 100_000_000
ZERO = Decimal(0)
PRECISION_DIGITS = 40
#: Golden-section steps: the bracket shrinks to 0.618**60 ~ 3e-13 of the tick range.
SEARCH_STEPS = 60
_PHI = (Decimal(5).sqrt() - 1) / 2


def q8(value: Decimal) -> int:
    """A decimal amount as 8-decimal fixed point, rounded half-even once."""
    return int((value * Q8).to_integral_value(ROUND_HALF_EVEN))


@dataclass
class PoolView:
    """One pool as the strategy prices it: reserves of base and quote in token units
    (virtual for V3) and, for V3, how much base it can pay out or take in before its price
    leaves the current tick interval."""

    pool: Pool
    base_is_token0: bool
    reserve_base: Decimal
    reserve_quote: Decimal
    timestamp_ns: int
    max_base_out: Decimal | None = None
    max_base_in: Decimal | None = None

    @property
    def gamma(self) -> Decimal:
        return 1 - Decimal(self.pool.fee_bps) / 10_000

    @property
    def mid(self) -> Decimal:
        return self.reserve_quote / self.reserve_base

    @property
    def base(self) -> Any:
        return self.pool.token0 if self.base_is_token0 else self.pool.token1

    @property
    def quote(self) -> Any:
        return self.pool.token1 if self.base_is_token0 else self.pool.token0


def pair_output(buy: PoolView, sell: PoolView, x: Decimal) -> tuple[Decimal, Decimal]:
    """(base bought at ``buy`` for ``x`` quote, quote received selling it at ``sell``)."""
    y = buy.gamma * x * buy.reserve_base / (buy.reserve_quote + buy.gamma * x)
    z = sell.gamma * y * sell.reserve_quote / (sell.reserve_base + sell.gamma * y)
    return y, z


def _input_bound(buy: PoolView, sell: PoolView) -> Decimal | None:
    """The most quote that keeps both V3 pools inside their tick intervals (None: V2 only)."""
    limits = [b for b in (buy.max_base_out, None if sell.max_base_in is None
                          else sell.max_base_in / sell.gamma) if b is not None]  # fmt: skip
    if not limits:
        return None
    y = min(min(limits), buy.reserve_base * Decimal("0.999999"))
    return y * buy.reserve_quote / (buy.gamma * (buy.reserve_base - y))


def optimal_input(buy: PoolView, sell: PoolView, flash_fee: Decimal) -> Decimal:
    """The quote input that maximises z - x - flash_fee*x (0 when nothing pays): the closed
    form for two constant-product pools, a bounded golden-section search with V3."""
    k = buy.gamma * sell.gamma * buy.reserve_base * sell.reserve_quote
    m = buy.reserve_quote * sell.reserve_base
    if k <= m * (1 + flash_fee):
        return ZERO  # the first unit already loses
    bound = _input_bound(buy, sell)
    if bound is None:
        n = buy.gamma * (sell.reserve_base + sell.gamma * buy.reserve_base)
        return max(ZERO, ((k * m / (1 + flash_fee)).sqrt() - m) / n)

    def profit(x: Decimal) -> Decimal:
        return pair_output(buy, sell, x)[1] - x * (1 + flash_fee)

    lo, hi = ZERO, bound
    a, b = hi - _PHI * (hi - lo), lo + _PHI * (hi - lo)
    fa, fb = profit(a), profit(b)
    for _ in range(SEARCH_STEPS):
        if fa < fb:
            lo, a, fa = a, b, fb
            b = lo + _PHI * (hi - lo)
            fb = profit(b)
        else:
            hi, b, fb = b, a, fa
            a = hi - _PHI * (hi - lo)
            fa = profit(a)
    return (lo + hi) / 2
