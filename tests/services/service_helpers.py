"""Test-side builders of feed input in the real formats, and the numbers they stand for.

Kraken messages follow the v2 WebSocket documentation's shapes; logs are what a node
returns for ``eth_getLogs`` / ``eth_subscribe`` (hex topics, ABI-encoded data).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from mycelium.services.markets import POOLS
from mycelium.services.polygon import SWAP_V3_TOPIC, SYNC_TOPIC

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def _root_conftest() -> ModuleType:
    """tests/conftest.py as a module. ``from conftest import`` is not it here: pytest binds
    ``conftest`` in sys.modules to the last conftest it imported, and tests/protocol has
    one that sorts before this directory."""
    module = sys.modules.get("conftest")
    if module is not None and Path(module.__file__ or "") == ROOT_CONFTEST:
        return module
    spec = importlib.util.spec_from_file_location("mycelium_tests_conftest", ROOT_CONFTEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wait_for = _root_conftest().wait_for

QUICKSWAP, SUSHISWAP, UNISWAP_V3 = list(POOLS.values())
USDC = QUICKSWAP.token0
WETH = QUICKSWAP.token1
BTC_ASSET = 0x4254430000000000  # "BTC" packed as the golden vectors do
ETH_ASSET = 0x4554480000000000
Q8 = 100_000_000  # the 8-decimal fixed-point scale
SENDER = "0x000000000000000000000000e592427a0aece92de3edee1f18e0157c05861564"
BLOCK = 50_000_123
BLOCK_TIME = 1_700_000_000


def trade(symbol: str = "BTC/USD", side: str = "buy", price: Any = 26500.1, qty: Any = 0.0012,
          timestamp: str = "2023-09-25T07:49:37.708706Z") -> str:  # fmt: skip
    return json.dumps({"channel": "trade", "type": "update", "data": [{
        "symbol": symbol, "side": side, "price": price, "qty": qty, "ord_type": "market",
        "trade_id": 4665906, "timestamp": timestamp}]})  # fmt: skip


def ticker(symbol: str = "ETH/USD", bid: Any = 1999.5, ask: Any = 2000.0,
           bid_qty: Any = 3.5, ask_qty: Any = 4.25) -> str:  # fmt: skip
    return json.dumps({"channel": "ticker", "type": "update", "data": [{
        "symbol": symbol, "bid": bid, "bid_qty": bid_qty, "ask": ask, "ask_qty": ask_qty,
        "last": ask, "volume": 1234.5, "vwap": 1999.7, "low": 1980.0, "high": 2010.0,
        "change": 5.0, "change_pct": 0.25}]})  # fmt: skip


HEARTBEAT = json.dumps({"channel": "heartbeat"})
STATUS = json.dumps({"channel": "status", "type": "update", "data": [{
    "version": "2.0.0", "system": "online", "api_version": "v2",
    "connection_id": 12393906104898154338}]})  # fmt: skip
SUBSCRIBED = json.dumps({"method": "subscribe", "result": {"channel": "ticker",
    "snapshot": True, "symbol": "ETH/USD"}, "success": True,
    "time_in": "2023-09-25T09:04:31.742599Z", "time_out": "2023-09-25T09:04:31.742648Z"})  # fmt: skip


def word(value: int) -> str:
    return (value % (1 << 256)).to_bytes(32, "big").hex()


def log_entry(
    address: bytes, topics: list[str], words: list[int], /, **extra: Any
) -> dict[str, Any]:
    entry = {
        "address": "0x" + address.hex(),
        "topics": topics,
        "data": "0x" + "".join(word(w) for w in words),
        "blockNumber": hex(BLOCK),
        "blockHash": "0x" + "ab" * 32,
        "blockTimestamp": hex(BLOCK_TIME),
        "transactionHash": "0x" + "cd" * 32,
        "transactionIndex": "0x3",
        "logIndex": "0x7",
        "removed": False,
    }
    entry.update(extra)
    return entry


def sync_log(
    reserve0: int, reserve1: int, /, pool: Any = QUICKSWAP, **extra: Any
) -> dict[str, Any]:
    return log_entry(pool.address, [SYNC_TOPIC], [reserve0, reserve1], **extra)


def swap_log(amount0: int, amount1: int, sqrt_price: int, liquidity: int, tick: int, /,
             **extra: Any) -> dict[str, Any]:  # fmt: skip
    return log_entry(UNISWAP_V3.address, [SWAP_V3_TOPIC, SENDER, SENDER],
                     [amount0, amount1, sqrt_price, liquidity, tick], **extra)  # fmt: skip


def notification(result: dict[str, Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                       "params": {"subscription": "0x9ce59a13059e417087c02d3236a0b1cc",
                                  "result": result}})  # fmt: skip


def new_head(base_fee_wei: int = 45_000_000_000) -> dict[str, Any]:
    return {"number": hex(BLOCK), "hash": "0x" + "ab" * 32, "parentHash": "0x" + "aa" * 32,
            "timestamp": hex(BLOCK_TIME), "baseFeePerGas": hex(base_fee_wei),
            "gasLimit": hex(30_000_000), "gasUsed": hex(12_000_000)}  # fmt: skip


def pool_reserves(price: float, depth_eth: float = 1500.0) -> tuple[int, int]:
    """Reserves (USDC, WETH raw) of a USDC/WETH pool at ``price`` USD per ETH."""
    return int(depth_eth * price * 10**6), int(depth_eth * 10**18)


def v3_state(price: float, depth_eth: float = 1500.0) -> tuple[int, int]:
    """(sqrtPriceX96, liquidity) of the USDC/WETH V3 pool at ``price`` USD per ETH."""
    raw = 10**18 / (price * 10**6)
    return int(raw**0.5 * (1 << 96)), int(depth_eth * 10**18 / raw**0.5)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path
