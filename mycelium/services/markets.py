"""The markets the trading services know: venues, tokens, pools and their fees.

How this works
--------------
Pools come from configuration, not code: a TOML file of ``[[pools]]`` (address, dex,
version 2 or 3, fee in basis points, token0/token1 with address, symbol, ticker and
decimals), by default the packaged ``pools.toml`` (Polygon mainnet's USDC/WETH pools), or
the file ``$MYCELIUM_POOLS`` names. A bad file is refused at start with the entry and the
reason (``ConfigError``). Two pools are comparable when they trade the same two tokens.

Assets are named by ticker ("ETH"); on the wire an asset travels as
``InstrumentId.from_symbol(venue, ticker)``: the asset id packs the ticker, the venue says
where it traded (as the Protocol V2 golden vectors do).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mycelium.errors import ConfigError
from mycelium.protocol import AssetType, InstrumentId, VenueId

__all__ = [
    "DEFAULT_POOLS_FILE",
    "POLYGON_CHAIN_ID",
    "POOLS",
    "POOLS_ENV",
    "VENUE_FEES_BPS",
    "Pool",
    "Token",
    "asset_id",
    "load_pools",
    "pool_for",
    "ticker_of",
]

POLYGON_CHAIN_ID = 137
DEFAULT_POOLS_FILE = Path(__file__).with_name("pools.toml")
POOLS_ENV = "MYCELIUM_POOLS"
#: Uniswap V3's tick spacing per fee tier (basis points -> ticks).
V3_TICK_SPACING = {1: 1, 5: 10, 30: 60, 100: 200}


@dataclass(frozen=True, slots=True)
class Token:
    """An ERC-20 token and the ticker it trades under."""

    address: bytes
    symbol: str
    ticker: str
    decimals: int


@dataclass(frozen=True, slots=True)
class Pool:
    """A constant-product (V2) or concentrated-liquidity (V3) pool of two tokens."""

    address: bytes
    venue: int
    version: int
    token0: Token
    token1: Token
    fee_bps: int

    @property
    def tick_spacing(self) -> int:
        """Ticks between initialisable ticks (V3); 0 for a V2 pool."""
        return V3_TICK_SPACING.get(self.fee_bps, 0) if self.version == 3 else 0


#: Taker fees of the centralised venues (pools carry their own fee).
VENUE_FEES_BPS: dict[int, int] = {VenueId.KRAKEN: 26}


def _address(value: Any, where: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise ConfigError(f"{where}: not a 20-byte hex address: {value!r}")
    return raw


def _check_keys(entry: Any, keys: set[str], where: str) -> None:
    """A table with exactly ``keys``; the error names the unknown and the missing ones."""
    need = ", ".join(sorted(keys))
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a table is needed (needs exactly {need}), got {entry!r}")
    unknown, missing = sorted(set(entry) - keys), sorted(keys - set(entry))
    if unknown or missing:
        bad = [f"unknown key {k!r}" for k in unknown] + [f"missing key {k!r}" for k in missing]
        raise ConfigError(f"{where}: {'; '.join(bad)} (needs exactly {need})")


def _token(entry: Any, where: str) -> Token:
    _check_keys(entry, {"address", "symbol", "ticker", "decimals"}, where)
    decimals = entry["decimals"]
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 36:
        raise ConfigError(f"{where}.decimals: an integer 0-36, got {decimals!r}")
    ticker = str(entry["ticker"])
    if not (ticker.isascii() and ticker.isalnum() and 0 < len(ticker) <= 8):
        raise ConfigError(f"{where}.ticker: 1-8 ASCII letters or digits, got {ticker!r}")
    return Token(_address(entry["address"], f"{where}.address"), str(entry["symbol"]), ticker,
                 decimals)  # fmt: skip


def _pool(entry: Any, where: str) -> Pool:
    _check_keys(entry, {"address", "dex", "version", "fee_bps", "token0", "token1"}, where)
    try:
        venue = VenueId[str(entry["dex"]).upper()]
    except KeyError:
        raise ConfigError(f"{where}.dex: unknown venue {entry['dex']!r}") from None
    if entry["version"] not in (2, 3):
        raise ConfigError(f"{where}.version: 2 or 3, got {entry['version']!r}")
    fee = entry["fee_bps"]
    if isinstance(fee, bool) or not isinstance(fee, int) or not 0 <= fee < 10_000:
        raise ConfigError(f"{where}.fee_bps: an integer 0-9999, got {fee!r}")
    if entry["version"] == 3 and fee not in V3_TICK_SPACING:
        raise ConfigError(f"{where}.fee_bps: a V3 fee tier {sorted(V3_TICK_SPACING)}, got {fee}")
    pool = Pool(_address(entry["address"], f"{where}.address"), venue, entry["version"],
                _token(entry["token0"], f"{where}.token0"),
                _token(entry["token1"], f"{where}.token1"), fee)  # fmt: skip
    if pool.token0.address >= pool.token1.address:
        raise ConfigError(f"{where}: token0 must be the lower address, as the pool orders them")
    return pool


def load_pools(path: str | os.PathLike[str] | None = None) -> dict[bytes, Pool]:
    """The pools of a TOML file (default: ``$MYCELIUM_POOLS``, else the packaged table);
    raises ``ConfigError`` naming the entry and the reason."""
    file = Path(path or os.environ.get(POOLS_ENV) or DEFAULT_POOLS_FILE)
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"pools file {file}: {exc}") from None
    entries = doc.get("pools")
    if set(doc) != {"pools"} or not isinstance(entries, list) or not entries:
        raise ConfigError(f"pools file {file}: expected a non-empty [[pools]] list only")
    pools: dict[bytes, Pool] = {}
    for i, entry in enumerate(entries):
        pool = _pool(entry, f"{file}: pools[{i}]")
        if pool.address in pools:
            raise ConfigError(f"{file}: pools[{i}]: address listed twice")
        pools[pool.address] = pool
    return pools


#: The packaged table, for tools and tests; services load theirs at start.
POOLS: dict[bytes, Pool] = load_pools(DEFAULT_POOLS_FILE)


def pool_for(address: bytes, pools: dict[bytes, Pool] | None = None) -> Pool | None:
    """The pool at ``address`` (20 bytes) in ``pools`` (default: the packaged table)."""
    return (POOLS if pools is None else pools).get(address)


def asset_id(ticker: str) -> int:
    """The Protocol V2 asset id of a ticker (its ASCII bytes, big-endian)."""
    return InstrumentId.from_symbol(0, ticker, AssetType.COIN).asset_id


def ticker_of(asset: int) -> str:
    """Inverse of ``asset_id`` (hex for an id that holds no ticker)."""
    return InstrumentId(asset, 0, AssetType.COIN).symbol or f"0x{asset:016x}"
