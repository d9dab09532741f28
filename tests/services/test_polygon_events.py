"""Polygon: V2 Swap, V3 Mint and Burn logs into their TLVs, pools from configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mycelium.errors import ConfigError
from mycelium.protocol import PoolBurnTLV, PoolMintTLV, PoolSwapTLV, PoolSyncTLV, VenueId
from mycelium.services import polygon
from mycelium.services.markets import POOLS, load_pools

NOW = 1_700_000_000_555_000_000
LOGS = Path(__file__).resolve().parents[1] / "data" / "uniswap_logs.jsonl"
QUICKSWAP = bytes.fromhex("853ee4b2a13f8a742d64c8f088be7ba2131f670d")
UNISWAP_V3 = bytes.fromhex("45dda9cb7c25131df268515131f647d726f50608")
BLOCK_TIME_NS = 0x6553F100 * 10**9


def logs() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LOGS.read_text().splitlines()]


def decode(entry: dict[str, Any], pools: Any = None) -> Any:
    (event,) = polygon.split(json.dumps(entry))
    return polygon.convert(event, NOW, pools)


def test_a_v2_swap_becomes_a_pool_swap_tlv_without_price() -> None:
    swap = decode(logs()[0])
    usdc, weth = POOLS[QUICKSWAP].token0, POOLS[QUICKSWAP].token1
    assert swap == PoolSwapTLV(
        amount_in=2_500_000_000, amount_out=1_234_500_000_000_000_000,
        timestamp_ns=BLOCK_TIME_NS, block_number=0x2FAF0C8, venue=VenueId.QUICKSWAP,
        amount_in_decimals=6, amount_out_decimals=18, pool_address=QUICKSWAP,
        token_in_addr=usdc.address, token_out_addr=weth.address,
    )  # fmt: skip
    assert swap.liquidity_after == 0 and swap.sqrt_price_x96_after_int == 0
    assert isinstance(decode(logs()[1]), PoolSyncTLV)


def test_v3_mint_and_burn_become_their_tlvs() -> None:
    mint, burn = decode(logs()[2]), decode(logs()[3])
    nfpm = bytes.fromhex("c36442b4a4522e871399cd717abdd847ab11fe88")
    assert isinstance(mint, PoolMintTLV) and isinstance(burn, PoolBurnTLV)
    assert (mint.tick_lower, mint.tick_upper) == (burn.tick_lower, burn.tick_upper) == (
        -200220, -199980)  # fmt: skip
    assert (mint.liquidity_delta, mint.amount0, mint.amount1) == (
        123_456_789_012_345, 1_000_000_000, 496_000_000_000_000_000)  # fmt: skip
    assert (burn.liquidity_delta, burn.amount0, burn.amount1) == (
        61_728_394_506_172, 500_000_000, 248_000_000_000_000_000)  # fmt: skip
    assert mint.provider_addr == burn.provider_addr == nfpm
    assert (mint.venue, mint.token0_decimals, mint.token1_decimals) == (VenueId.UNISWAP_V3, 6, 18)
    assert mint.pool_address == UNISWAP_V3 and mint.timestamp_ns == BLOCK_TIME_NS
    assert PoolMintTLV.from_bytes(mint.to_bytes()) == mint


def test_pools_come_from_the_config_file(tmp_path: Path) -> None:
    """The Etherscan Mint log of a pool outside the packaged table decodes once the pool
    is configured; its negative tick comes through as a signed int24."""
    etherscan = logs()[4]
    assert decode(etherscan) is None  # not a pool we follow
    config = tmp_path / "pools.toml"
    config.write_text("""
[[pools]]
address = "0x98c7A2338336d2d354663246F64676009c7bDa97"
dex = "UNISWAP_V3"
version = 3
fee_bps = 30
token0 = { address = "0x1000000000000000000000000000000000000001", symbol = "AAA", ticker = "AAA", decimals = 18 }
token1 = { address = "0x2000000000000000000000000000000000000002", symbol = "BBB", ticker = "BBB", decimals = 6 }
""")
    mint = decode(etherscan, load_pools(config))
    assert isinstance(mint, PoolMintTLV)
    assert (mint.tick_lower, mint.tick_upper, mint.liquidity_delta) == (-1, 1, 0x0BEBAE76)
    assert (mint.amount0, mint.amount1) == (9999, 9999)
    assert mint.provider_addr == bytes.fromhex("827922686190790b37229fd06084350e74485b72")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("pools = 3", "non-empty"),
        ("[[pools]]\naddress = '0x12'", "needs exactly"),
        ('[[pools]]\naddress = "0x12"\ndex = "QUICKSWAP"\nversion = 2\nfee_bps = 30\n'
         'token0 = { address = "0x1000000000000000000000000000000000000001", symbol = "A", '
         'ticker = "A", decimals = 6 }\ntoken1 = { address = '
         '"0x2000000000000000000000000000000000000002", symbol = "B", ticker = "B", '
         "decimals = 6 }", "20-byte hex address"),
        ("[[pools", "pools file"),
    ],
)  # fmt: skip
def test_a_bad_pools_file_is_refused_with_the_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    config = tmp_path / "pools.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=reason):
        load_pools(config)


@pytest.mark.parametrize(
    ("index", "change", "reason"),
    [
        (2, {"topics": 3}, "4 topics"),
        (3, {"data": 2}, "3 words"),
        (2, {"ticks": (5, -5)}, "tickLower"),
    ],
)
def test_malformed_liquidity_logs_are_refused(index: int, change: dict[str, Any],
                                              reason: str) -> None:  # fmt: skip
    entry = logs()[index]
    if "topics" in change:
        entry["topics"] = entry["topics"][: change["topics"]]
    if "data" in change:
        entry["data"] = entry["data"][: 2 + 64 * change["data"]]
    if "ticks" in change:
        lower, upper = change["ticks"]
        entry["topics"][2] = "0x" + (lower % (1 << 256)).to_bytes(32, "big").hex()
        entry["topics"][3] = "0x" + (upper % (1 << 256)).to_bytes(32, "big").hex()
    with pytest.raises(polygon.Malformed, match=reason):
        decode(entry)
