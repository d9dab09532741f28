"""The markets the trading services know: venues, tokens, pools and their fees.

How this works
--------------
Every service names an asset by its canonical ticker ("ETH", "BTC"), priced in USD; a
token on Polygon maps to one (WETH -> ETH, USDC -> USD). A Kraken pair "ETH/USD" is the
same asset as a Uniswap-style USDC/WETH pool, so the arbitrage strategy can compare them.
On the wire an asset travels as ``InstrumentId.from_symbol(venue, ticker)``: the asset id
packs the ticker, the venue says where it traded (as the Protocol V2 golden vectors do).

The pool table is what a live adapter would learn from the chain once (token0/token1,
decimals, fee); the addresses are Polygon mainnet's, so the recorded samples look real.
"""

from __future__ import annotations

from dataclasses import dataclass

from mycelium.protocol import AssetType, InstrumentId, VenueId

__all__ = [
    "POLYGON_CHAIN_ID",
    "POOLS",
    "QUOTE_TICKERS",
    "TOKENS",
    "VENUE_FEES_BPS",
    "Pool",
    "Token",
    "asset_id",
    "pool_for",
    "ticker_of",
    "token_for_ticker",
]

POLYGON_CHAIN_ID = 137

#: Quote currencies treated as US dollars.
QUOTE_TICKERS = frozenset({"USD", "USDC", "USDT", "ZUSD"})


@dataclass(frozen=True, slots=True)
class Token:
    """An ERC-20 token on Polygon and the canonical asset it stands for."""

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


def _addr(hex_address: str) -> bytes:
    return bytes.fromhex(hex_address.removeprefix("0x"))


USDC = Token(_addr("0x2791Bca1f2de4661ED88A30C99A7a9449Aa84174"), "USDC", "USD", 6)
WETH = Token(_addr("0x7ceB23fD6bC0adD59E62ac25578270cFf1b9f619"), "WETH", "ETH", 18)
WBTC = Token(_addr("0x1BFD67037B42Cf73acF2047067bd4F2C47D9BfD6"), "WBTC", "BTC", 8)
TOKENS: dict[bytes, Token] = {t.address: t for t in (USDC, WETH, WBTC)}

POOLS: dict[bytes, Pool] = {
    p.address: p
    for p in (
        Pool(_addr("0x853Ee4b2A13f8a742d64C8F088bE7bA2131f670d"), VenueId.QUICKSWAP, 2, USDC, WETH, 30),
        Pool(_addr("0x34965ba0ac2451A34a0471F04CCa3F990b8dea27"), VenueId.SUSHISWAP_POLYGON, 2, USDC, WETH, 30),
        Pool(_addr("0x45dDa9cb7c25131DF268515131f647d726f50608"), VenueId.UNISWAP_V3, 3, USDC, WETH, 5),
    )
}  # fmt: skip

#: Taker fees of the centralised venues (pools carry their own fee).
VENUE_FEES_BPS: dict[int, int] = {VenueId.KRAKEN: 26}


def pool_for(address: bytes) -> Pool | None:
    """The known pool at ``address`` (20 bytes), or None."""
    return POOLS.get(address)


def token_for_ticker(ticker: str) -> Token | None:
    """The Polygon token that stands for a canonical ticker, or None."""
    return next((t for t in TOKENS.values() if t.ticker == ticker), None)


def asset_id(ticker: str) -> int:
    """The Protocol V2 asset id of a canonical ticker (its ASCII bytes, big-endian)."""
    return InstrumentId.from_symbol(0, ticker, AssetType.COIN).asset_id


def ticker_of(asset: int) -> str:
    """Inverse of ``asset_id`` (hex for an id that holds no ticker)."""
    return InstrumentId(asset, 0, AssetType.COIN).symbol or f"0x{asset:016x}"
