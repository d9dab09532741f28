"""Polygon: V2 Swap/Sync and V3 Swap/Mint/Burn logs into their TLVs, pools from
configuration. The logs are real on-chain logs (tests/data/README.md names each source);
every one is decoded a second time with eth-abi, from the event ABI, and the two must agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode as abi_decode

from mycelium.errors import ConfigError
from mycelium.protocol import PoolBurnTLV, PoolMintTLV, PoolSwapTLV, PoolSyncTLV, VenueId
from mycelium.services import polygon
from mycelium.services.markets import load_pools

NOW = 1_700_000_000_555_000_000
DATA = Path(__file__).resolve().parents[1] / "data"
LOGS = DATA / "uniswap_logs.jsonl"
REAL_POOLS = load_pools(DATA / "uniswap_pools.toml")
V2_PAIR = bytes.fromhex("74c99f3f5331676f6aec2756e1f39b4fc029a83e")
RAIN_WETH = bytes.fromhex("d13040d4fe917ee704158cfcb3338dcd2838b245")
NFPM = bytes.fromhex("c36442b4a4522e871399cd717abdd847ab11fe88")
#: The non-indexed fields of each event, as the Solidity sources declare them.
ABI = {
    "v2_swap": ["uint256", "uint256", "uint256", "uint256"],
    "sync": ["uint112", "uint112"],
    "v3_swap": ["int256", "int256", "uint160", "uint128", "int24"],
    "mint": ["address", "uint128", "uint256", "uint256"],
    "burn": ["uint128", "uint256", "uint256"],
}


def logs() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LOGS.read_text().splitlines()]


def decode(entry: dict[str, Any], pools: Any = REAL_POOLS) -> Any:
    (event,) = polygon.split(json.dumps(entry))
    return polygon.convert(event, NOW, pools)


def abi(entry: dict[str, Any], kind: str) -> tuple[Any, ...]:
    """The log's data decoded by eth-abi: the independent reading."""
    return tuple(abi_decode(ABI[kind], bytes.fromhex(entry["data"][2:])))


def topic_int(entry: dict[str, Any], i: int, kind: str) -> Any:
    (value,) = abi_decode([kind], bytes.fromhex(entry["topics"][i][2:]))
    return value


def test_a_real_v2_swap_and_its_sync_agree_with_eth_abi() -> None:
    swap_log, sync_log = logs()[0], logs()[1]
    in0, in1, out0, out1 = abi(swap_log, "v2_swap")
    assert (in0, out1) == (0, 0)  # USDT (token1) in, WETH (token0) out
    pool = REAL_POOLS[V2_PAIR]
    swap = decode(swap_log)
    assert swap == PoolSwapTLV(
        amount_in=in1, amount_out=out0, timestamp_ns=NOW, block_number=14_764_013,
        venue=VenueId.UNISWAP_V2, amount_in_decimals=6, amount_out_decimals=18,
        pool_address=V2_PAIR, token_in_addr=pool.token1.address,
        token_out_addr=pool.token0.address,
    )  # fmt: skip
    assert swap.liquidity_after == 0 and swap.sqrt_price_x96_after_int == 0
    sync = decode(sync_log)
    assert isinstance(sync, PoolSyncTLV)
    assert (sync.reserve0, sync.reserve1) == abi(sync_log, "sync")
    assert (sync.pool_address, sync.block_number) == (V2_PAIR, 14_764_013)
    assert (in1, out0) == (0x979AEDEB, 0x11F8B9803BC57124)  # USDT (6 decimals) in, WETH out


def test_a_real_v3_swap_agrees_with_eth_abi() -> None:
    entry = logs()[2]
    amount0, amount1, sqrt_price, liquidity, tick = abi(entry, "v3_swap")
    assert amount0 < 0 < amount1  # RAIN out, WETH in
    swap = decode(entry)
    assert isinstance(swap, PoolSwapTLV)
    assert (swap.amount_in, swap.amount_out) == (amount1, -amount0)
    assert (swap.sqrt_price_x96_after_int, swap.liquidity_after, swap.tick_after) == (
        sqrt_price, liquidity, tick)  # fmt: skip
    assert (swap.tick_after, swap.block_number) == (-139475, 0x17513444)
    assert swap.token_in_addr == REAL_POOLS[RAIN_WETH].token1.address
    assert PoolSwapTLV.from_bytes(swap.to_bytes()) == swap


def test_real_v3_mint_and_burn_agree_with_eth_abi() -> None:
    mint_log, burn_log = logs()[3], logs()[4]
    mint, burn = decode(mint_log), decode(burn_log)
    assert isinstance(mint, PoolMintTLV) and isinstance(burn, PoolBurnTLV)
    sender, liquidity, amount0, amount1 = abi(mint_log, "mint")
    assert bytes.fromhex(sender[2:]) == NFPM
    assert (mint.liquidity_delta, mint.amount0, mint.amount1) == (liquidity, amount0, amount1)
    assert (mint.tick_lower, mint.tick_upper) == (
        topic_int(mint_log, 2, "int24"), topic_int(mint_log, 3, "int24")) == (-887272, 887272)  # fmt: skip
    assert (burn.liquidity_delta, burn.amount0, burn.amount1) == abi(burn_log, "burn")
    assert (burn.tick_lower, burn.tick_upper) == (
        topic_int(burn_log, 2, "int24"), topic_int(burn_log, 3, "int24")) == (-139767, -139764)  # fmt: skip
    owner = topic_int(burn_log, 1, "address")
    assert mint.provider_addr == burn.provider_addr == bytes.fromhex(owner[2:]) == NFPM
    assert (mint.venue, mint.token0_decimals, mint.token1_decimals) == (VenueId.UNISWAP_V3, 18, 18)
    assert mint.pool_address == RAIN_WETH and mint.timestamp_ns == NOW
    assert PoolMintTLV.from_bytes(mint.to_bytes()) == mint
    assert PoolBurnTLV.from_bytes(burn.to_bytes()) == burn


def test_block_timestamp_is_used_when_the_node_adds_it() -> None:
    """The sources carry no ``blockTimestamp`` (arrival time, flagged); with it the TLV
    is stamped with the block's time."""
    entry = {**logs()[3], "blockTimestamp": "0x6553f100"}
    assert decode(entry).timestamp_ns == 0x6553F100 * 10**9


def test_pools_come_from_the_config_file(tmp_path: Path) -> None:
    """The Etherscan Mint log of a pool outside the packaged table decodes once the pool
    is configured; its negative tick comes through as a signed int24."""
    etherscan = logs()[5]
    assert decode(etherscan, None) is None  # not a pool we follow
    assert decode(logs()[3], None) is None  # the packaged table has Polygon's pools only
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
        (3, {"topics": 3}, "4 topics"),
        (4, {"data": 2}, "3 words"),
        (3, {"ticks": (5, -5)}, "tickLower"),
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
