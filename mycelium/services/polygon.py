"""Polygon adapter: Uniswap V2 ``Sync`` / ``Swap`` and V3 ``Swap`` / ``Mint`` / ``Burn``
event logs, as ``eth_getLogs`` and ``eth_subscribe`` return them, -> PoolSyncTLV /
PoolSwapTLV / PoolMintTLV / PoolBurnTLV on ``market_data``; new block heads -> GasPriceTLV.

How this works
--------------
The decoding of logs and heads is ``polygon_logs.py`` (``split``, ``convert``, re-exported
here); this file is the service around it: the feed (a file, the built-in generator or a
live node) and its subscriptions.

Pools, their tokens and decimals come from configuration (``markets.load_pools``). Logs
carry no time of their own: ``blockTimestamp`` is used when the node adds it; otherwise
the message is stamped on arrival and its header carries ``FLAG_ARRIVAL_TIME``. The gas
price is the head's base fee plus the priority fee the node last answered to
``eth_maxPriorityFeePerGas`` (0, a lower bound, until it has).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from mycelium.protocol import SourceType, TypedTLV
from mycelium.services.adapter import FLAG_ARRIVAL_TIME, FeedAdapter
from mycelium.services.base import Malformed
from mycelium.services.markets import POOLS, Pool, load_pools
from mycelium.services.polygon_logs import (
    BURN_V3_TOPIC,
    EVENTS,
    MINT_V3_TOPIC,
    PRIORITY_FEE_REQUEST_ID,
    SWAP_V2_TOPIC,
    SWAP_V3_TOPIC,
    SYNC_TOPIC,
    WORD,
    Event,
    block_time_ns,
    convert,
    quantity,
    split,
)
from mycelium.services.synthetic import PriceModel, wall_clock

__all__ = [
    "BURN_V3_TOPIC",
    "MINT_V3_TOPIC",
    "PRIORITY_FEE_REQUEST_ID",
    "SWAP_V2_TOPIC",
    "SWAP_V3_TOPIC",
    "SYNC_TOPIC",
    "Event",
    "Malformed",
    "PolygonAdapter",
    "block_time_ns",
    "convert",
    "generate",
    "split",
]


def _json(obj: object) -> str:
    """Compact JSON, as the feed sends it."""
    return json.dumps(obj, separators=(",", ":"))


LIVE_URL = "wss://polygon-bor-rpc.publicnode.com"
Q96 = 1 << 96

# -- the generator ------------------------------------------------------------------------
#: Depth of each synthetic pool in units of its base token (WETH).
POOL_DEPTH_ETH = 1500.0
#: Ticks per Polygon block (2 s blocks; the feed runs faster than real time).
TICKS_PER_BLOCK = 3
SUBSCRIPTION = "0x9ce59a13059e417087c02d3236a0b1cc"
#: Chance per tick that a V3 pool also logs a Mint or Burn.
LIQUIDITY_EVENT_CHANCE = 0.05
#: Uniswap V3's NonfungiblePositionManager (the same address on Polygon and Ethereum).
POSITION_MANAGER = "0xc36442b4a4522e871399cd717abdd847ab11fe88"


def _hex_word(value: int) -> str:
    return (value % (1 << 256)).to_bytes(WORD, "big").hex()


def _log(pool: Pool, topics: list[str], words: list[int], block: int, ts_s: int, index: int,
         tx: int) -> dict[str, Any]:  # fmt: skip
    return {
        "address": "0x" + pool.address.hex(),
        "topics": topics,
        "data": "0x" + "".join(_hex_word(w) for w in words),
        "blockNumber": hex(block),
        "blockHash": "0x" + _hex_word(block * 7919),
        "blockTimestamp": hex(ts_s),
        "transactionHash": "0x" + _hex_word(tx),
        "transactionIndex": hex(index),
        "logIndex": hex(index),
        "removed": False,
    }


def _notify(result: dict[str, Any]) -> str:
    return _json(
        {"jsonrpc": "2.0", "method": "eth_subscription",
         "params": {"subscription": SUBSCRIPTION, "result": result}}
    )  # fmt: skip


def pool_events(pool: Pool, price: float, rng: Any) -> tuple[list[str], list[int]]:
    """Topics and data words of a Sync (V2) or Swap (V3) that leaves ``pool`` at ``price``
    USD per ETH (token0 is USDC, token1 WETH)."""
    usdc, weth = pool.token0, pool.token1
    if pool.version == 2:
        reserve_eth = POOL_DEPTH_ETH * (1 + rng.uniform(-0.01, 0.01))
        return [SYNC_TOPIC], [
            int(reserve_eth * price * 10**usdc.decimals),
            int(reserve_eth * 10**weth.decimals),
        ]
    raw_price = 10**weth.decimals / (price * 10**usdc.decimals)  # token1 per token0
    sqrt_price = int(raw_price**0.5 * Q96)
    liquidity = int(POOL_DEPTH_ETH * 10**weth.decimals / raw_price**0.5)
    size_eth = rng.uniform(0.05, 3.0)
    amount_eth = int(size_eth * 10**weth.decimals)
    amount_usdc = int(size_eth * price * 10**usdc.decimals)
    if rng.random() < 0.5:  # someone sells ETH into the pool
        amount0, amount1 = -amount_usdc, amount_eth
    else:
        amount0, amount1 = amount_usdc, -amount_eth
    tick = math.floor(math.log(raw_price, 1.0001))
    sender = "0x" + _hex_word(rng.getrandbits(160))
    return [SWAP_V3_TOPIC, sender, sender], [amount0, amount1, sqrt_price, liquidity, tick]


def liquidity_event(pool: Pool, price: float, rng: Any) -> tuple[list[str], list[int]]:
    """Topics and data words of a V3 Mint or Burn by the position manager: a range of a
    few tick spacings around ``price``, the token amounts that liquidity holds there."""
    raw_price = 10**pool.token1.decimals / (price * 10**pool.token0.decimals)
    spacing = pool.tick_spacing
    lower = (math.floor(math.log(raw_price, 1.0001)) // spacing - rng.randrange(1, 20)) * spacing
    upper = lower + spacing * rng.randrange(20, 40)
    sqrt_p, sqrt_lo, sqrt_hi = (math.sqrt(raw_price), 1.0001 ** (lower / 2),
                                1.0001 ** (upper / 2))  # fmt: skip
    liquidity = int(POOL_DEPTH_ETH * 10**pool.token1.decimals / sqrt_p * rng.uniform(1e-4, 1e-3))
    amount0 = int(liquidity * (1 / sqrt_p - 1 / sqrt_hi))
    amount1 = int(liquidity * (sqrt_p - sqrt_lo))
    topics = ["0x" + _hex_word(int(POSITION_MANAGER, 16)), "0x" + _hex_word(lower),
              "0x" + _hex_word(upper)]  # fmt: skip
    if rng.random() < 0.5:
        return [MINT_V3_TOPIC, *topics], [int(POSITION_MANAGER, 16), liquidity, amount0, amount1]
    return [BURN_V3_TOPIC, *topics], [liquidity, amount0, amount1]


def generate(seed: int, clock: Iterator[int]) -> Iterator[str]:
    """An endless ``eth_subscribe`` stream: logs of every known pool each tick (now and
    then a V3 Mint or Burn besides), and a ``newHeads`` notification per block. ``clock``
    yields the time (ns) of each tick."""
    pools = list(POOLS.values())
    model = PriceModel(seed, [f"pool:{p.address.hex()}" for p in pools], ["ETH"])
    rng = model.rng(f"pool:{pools[0].address.hex()}")
    block = 50_000_000 + rng.randrange(1_000_000)
    base_fee = 40e9
    yield _json({"jsonrpc": "2.0", "id": 1, "result": SUBSCRIPTION})
    yield _json({"jsonrpc": "2.0", "id": 2, "result": SUBSCRIPTION})
    yield _json({"jsonrpc": "2.0", "id": PRIORITY_FEE_REQUEST_ID, "result": hex(30 * 10**9)})
    tx = rng.getrandbits(200)
    index = 0
    for tick, now in enumerate(clock):
        model.step()
        ts_s = now // 1_000_000_000
        if tick % TICKS_PER_BLOCK == 0:
            block += 1
            index = 0
            base_fee = max(25e9, base_fee * (1 + rng.uniform(-0.1, 0.1)))
            yield _notify({
                "number": hex(block), "hash": "0x" + _hex_word(block * 7919),
                "parentHash": "0x" + _hex_word((block - 1) * 7919), "timestamp": hex(ts_s),
                "baseFeePerGas": hex(int(base_fee)), "gasLimit": hex(30_000_000),
                "gasUsed": hex(rng.randrange(5_000_000, 25_000_000)),
                "miner": "0x" + bytes(20).hex()})  # fmt: skip
        for pool in pools:
            topics, words = pool_events(pool, model.price(f"pool:{pool.address.hex()}", "ETH"), rng)
            tx += 1
            index += 1
            yield _notify(_log(pool, topics, words, block, ts_s, index, tx))
            if pool.version == 3 and rng.random() < LIQUIDITY_EVENT_CHANCE:
                topics, words = liquidity_event(pool, model.price(f"pool:{pool.address.hex()}",
                                                                  "ETH"), rng)  # fmt: skip
                tx += 1
                index += 1
                yield _notify(_log(pool, topics, words, block, ts_s, index, tx))


class PolygonAdapter(FeedAdapter):
    """Uniswap-style pool events on Polygon (file, generator or live) as market data."""

    name = "polygon_adapter"
    source = SourceType.POLYGON
    live_url = LIVE_URL
    split = staticmethod(split)

    def __init__(self, *args: Any, pools: dict[bytes, Pool] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pools = load_pools() if pools is None else pools
        self.priority_fee_wei = 0

    def convert(self, event: Any, now_ns: int) -> TypedTLV | None:
        if event[0] == "priority_fee":
            self.priority_fee_wei = quantity(event[1].get("result"), "priority fee")
            return None
        return convert(event, now_ns, self.pools, self.priority_fee_wei)

    def message_flags(self, event: Any) -> int:
        kind, obj = event
        return FLAG_ARRIVAL_TIME if kind == "log" and "blockTimestamp" not in obj else 0

    def generate(self) -> Iterator[str]:
        return generate(self.seed, wall_clock())

    def subscriptions(self) -> list[dict[str, Any]]:
        pools = ["0x" + address.hex() for address in self.pools]
        return [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
             "params": ["logs", {"address": pools, "topics": [list(EVENTS)]}]},
            {"jsonrpc": "2.0", "id": 2, "method": "eth_subscribe", "params": ["newHeads"]},
            {"jsonrpc": "2.0", "id": PRIORITY_FEE_REQUEST_ID,
             "method": "eth_maxPriorityFeePerGas", "params": []},
        ]  # fmt: skip
