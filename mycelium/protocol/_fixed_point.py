"""Fixed-point numbers: prices, sizes and USD amounts travel as i64 with 8 decimals.

How this works. ``to_fixed`` turns a decimal string, ``Decimal``, int or float into the
scaled integer exactly (strings and Decimals never go through binary floating point; a
float is taken at its shortest repr, so 0.1 means 0.1), rounding half-even past the 8th
decimal. ``to_fixed_exact`` is the strict form for market data: a value with more than 8
decimals (PEPE at 0.000012345) raises instead of being rounded, so nothing is rounded
silently; a feed that needs the digits carries them in a TLV with its own scale
(``OrderBookTLV.precision_factor``). ``from_fixed`` gives back an exact ``Decimal``.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

__all__ = [
    "FIXED_POINT_DECIMALS",
    "FIXED_POINT_SCALE",
    "PrecisionLoss",
    "from_fixed",
    "to_fixed",
    "to_fixed_exact",
]

FIXED_POINT_DECIMALS = 8
FIXED_POINT_SCALE = 10**FIXED_POINT_DECIMALS
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_QUANTUM = Decimal(1).scaleb(-FIXED_POINT_DECIMALS)


def to_fixed(value: str | Decimal | int | float) -> int:
    """``value`` scaled by 10**8 as an i64; raises ValueError if not a finite number in range."""
    fixed: int
    if isinstance(value, int):
        fixed = value * FIXED_POINT_SCALE
    else:
        try:
            number = Decimal(repr(value) if isinstance(value, float) else value)
            fixed = int(
                number.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN).scaleb(FIXED_POINT_DECIMALS)
            )
        except (InvalidOperation, ValueError, OverflowError) as exc:
            raise ValueError(f"not a finite decimal number in range: {value!r}") from exc
    if not _I64_MIN <= fixed <= _I64_MAX:
        raise ValueError(f"{value!r} does not fit an i64 with {FIXED_POINT_DECIMALS} decimals")
    return fixed


class PrecisionLoss(ValueError):
    """A value has more decimals than the fixed-point scale holds."""


def to_fixed_exact(value: str | Decimal | int) -> int:
    """``value`` scaled by 10**8 without rounding; raises ``PrecisionLoss`` if it has more
    than 8 decimals and ValueError if it is not a finite number in range."""
    fixed = to_fixed(value)
    if not isinstance(value, int) and Decimal(fixed).scaleb(-FIXED_POINT_DECIMALS) != Decimal(
        value
    ):
        raise PrecisionLoss(f"{value} has more than {FIXED_POINT_DECIMALS} decimals")
    return fixed


def from_fixed(fixed: int) -> Decimal:
    """The exact decimal value of an 8-decimal fixed-point integer."""
    return Decimal(fixed).scaleb(-FIXED_POINT_DECIMALS)
