"""Polygon adapter: Uniswap V2 ``Sync`` / ``Swap`` and V3 ``Swap`` / ``Mint`` / ``Burn``
event logs, as ``eth_getLogs`` and ``eth_subscribe`` return them, -> PoolSyncTLV /
PoolSwapTLV / PoolMintTLV / PoolBurnTLV on ``market_data``; new block heads -> GasPriceTLV.

How this works
--------------
``split`` accepts what a JSON-RPC node sends: an ``eth_subscription`` notification (a log,
or a ``newHeads`` block head), an ``eth_getLogs`` response (a list of logs), a bare log, or
another response (a subscription id, an error: nothing to publish). ``convert`` decodes a
log by its topic0 from the hex ABI encoding: a Sync's data is two 32-byte words (reserve0,
reserve1, uint112 each); a V3 Swap has sender and recipient in topics[1..2] and five words
of data (amount0 and amount1 int256 from the pool's view, positive = paid in;
sqrtPriceX96 uint160; liquidity uint128; tick int24); a V2 Swap has four uint words
(amount0In, amount1In, amount0Out, amount1Out) and becomes a PoolSwapTLV without price or
liquidity (its Sync carries the reserves); a V3 Mint has owner, tickLower, tickUpper in
topics and (sender, amount, amount0, amount1) as data, a Burn the same topics and
(amount, amount0, amount1). Every width is range-checked. A log of a pool we do not know,
of another event, or marked ``removed`` (a reorg) is ignored.

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

from mycelium.protocol import (
    GasPriceTLV,
    PoolBurnTLV,
    PoolMintTLV,
    PoolSwapTLV,
    PoolSyncTLV,
    SourceType,
    TypedTLV,
)
from mycelium.services.adapter import FLAG_ARRIVAL_TIME, FeedAdapter
from mycelium.services.base import Malformed
from mycelium.services.markets import POLYGON_CHAIN_ID, POOLS, Pool, load_pools
from mycelium.services.synthetic import PriceModel, wall_clock

__all__ = [
    "BURN_V3_TOPIC",
    "MINT_V3_TOPIC",
    "SWAP_V2_TOPIC",
    "SWAP_V3_TOPIC",
    "SYNC_TOPIC",
    "PolygonAdapter",
    "convert",
    "generate",
    "split",
]


def _json(obj: object) -> str:
    """Compact JSON, as the feed sends it."""
    return json.dumps(obj, separators=(",", ":"))


SYNC_TOPIC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
SWAP_V3_TOPIC = "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
SWAP_V2_TOPIC = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
MINT_V3_TOPIC = "0x7a53080ba414158be7ec69b987b5fb7d07dee101fe85488f0853ae16239d0bde"
BURN_V3_TOPIC = "0x0c396cd989a39f4459b5fa1aed6a9a8dcdbc45908acfd67e028cd568da98982c"
#: topic0 -> (pool version, topics, data words)
EVENTS = {
    SYNC_TOPIC: (2, 1, 2),
    SWAP_V2_TOPIC: (2, 3, 4),
    SWAP_V3_TOPIC: (3, 3, 5),
    MINT_V3_TOPIC: (3, 4, 4),
    BURN_V3_TOPIC: (3, 4, 3),
}
LIVE_URL = "wss://polygon-bor-rpc.publicnode.com"
#: Request id of our ``eth_maxPriorityFeePerGas`` call: its reply is the priority fee.
PRIORITY_FEE_REQUEST_ID = 4
WORD = 32
Q96 = 1 << 96

Event = tuple[str, dict[str, Any]]


def split(line: str) -> list[Event]:
    """("log", log), ("head", block) and ("priority_fee", reply) events of one JSON-RPC
    message."""
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Malformed(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("method") == "eth_subscription":
        params = doc.get("params")
        result = params.get("result") if isinstance(params, dict) else None
        if not isinstance(result, dict):
            raise Malformed("eth_subscription notification without a result object")
        return [_event(result)]
    if "result" in doc:
        result = doc["result"]
        if isinstance(result, list):
            return [_event(x) for x in result]
        if doc.get("id") == PRIORITY_FEE_REQUEST_ID:
            return [("priority_fee", doc)]
        return []  # a subscription id, true/false: a reply, not data
    if "error" in doc:
        return []
    return [_event(doc)]


def _event(obj: Any) -> Event:
    if isinstance(obj, dict) and "topics" in obj:
        return ("log", obj)
    if isinstance(obj, dict) and "parentHash" in obj:
        return ("head", obj)
    raise Malformed("neither a log nor a block head")


def _hex(value: Any, what: str, size: int | None = None) -> bytes:
    """A 0x-prefixed hex string as bytes (of exactly ``size`` bytes if given)."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise Malformed(f"{what} is not a 0x hex string: {str(value)[:80]!r}")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise Malformed(f"{what} is not valid hex: {value[:80]!r}") from None
    if size is not None and len(raw) != size:
        raise Malformed(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def _quantity(value: Any, what: str) -> int:
    """A JSON-RPC quantity ("0x1b4") as an int."""
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > 66:
        raise Malformed(f"{what} is not a hex quantity: {str(value)[:80]!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise Malformed(f"{what} is not a hex quantity: {value!r}") from None


def _words(data: bytes, n: int, what: str) -> list[bytes]:
    if len(data) != n * WORD:
        raise Malformed(f"{what} data must be {n} words ({n * WORD} bytes), got {len(data)}")
    return [data[i : i + WORD] for i in range(0, len(data), WORD)]


def _uint(word: bytes, bits: int, what: str) -> int:
    value = int.from_bytes(word, "big")
    if value >> bits:
        raise Malformed(f"{what} does not fit uint{bits}")
    return value


def _int(word: bytes, bits: int, what: str) -> int:
    value = int.from_bytes(word, "big", signed=True)
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise Malformed(f"{what} does not fit int{bits}")
    return value


def convert(
    event: Event, now_ns: int, pools: dict[bytes, Pool] | None = None, priority_fee_wei: int = 0
) -> TypedTLV | None:
    """A log as its TLV (Sync, Swap, Mint, Burn), a head as GasPriceTLV; None for a log we
    do not publish. ``pools`` defaults to the packaged table."""
    kind, obj = event
    if kind == "head":
        return _gas(obj, priority_fee_wei)
    if kind != "log" or obj.get("removed") is True:
        return None
    pool = (POOLS if pools is None else pools).get(_hex(obj.get("address"), "address", 20))
    topics = obj.get("topics")
    if not isinstance(topics, list) or not topics:
        raise Malformed("log without topics")
    topic0 = topics[0].lower() if isinstance(topics[0], str) else topics[0]
    shape = EVENTS.get(topic0)
    if pool is None or shape is None or shape[0] != pool.version:
        return None
    _, n_topics, n_words = shape
    for i, topic in enumerate(topics):
        _hex(topic, f"topics[{i}]", WORD)
    if len(topics) != n_topics:
        raise Malformed(f"this event has {n_topics} topics, got {len(topics)}")
    words = _words(_hex(obj.get("data"), "data"), n_words, "event")
    block = _quantity(obj.get("blockNumber"), "blockNumber")
    ts = block_time_ns(obj, now_ns)
    if topic0 == SYNC_TOPIC:
        return _sync(pool, words, block, ts)
    if topic0 == SWAP_V2_TOPIC:
        return _swap_v2(pool, words, block, ts)
    if topic0 == SWAP_V3_TOPIC:
        return _swap(pool, words, block, ts)
    return _liquidity(pool, topic0 == MINT_V3_TOPIC, topics, words, ts)


def block_time_ns(log: dict[str, Any], now_ns: int) -> int:
    """The log's ``blockTimestamp`` in ns, or ``now_ns`` when the node sent none."""
    stamp = log.get("blockTimestamp")
    return now_ns if stamp is None else _quantity(stamp, "blockTimestamp") * 1_000_000_000


def _sync(pool: Pool, words: list[bytes], block: int, ts: int) -> PoolSyncTLV:
    r0, r1 = words
    return PoolSyncTLV(
        reserve0=_uint(r0, 112, "reserve0"),
        reserve1=_uint(r1, 112, "reserve1"),
        timestamp_ns=ts,
        block_number=block,
        venue=pool.venue,
        token0_decimals=pool.token0.decimals,
        token1_decimals=pool.token1.decimals,
        pool_address=pool.address,
        token0_addr=pool.token0.address,
        token1_addr=pool.token1.address,
    )


def _swap_tlv(pool: Pool, amount0: int, amount1: int, block: int, ts: int,
              **v3: Any) -> PoolSwapTLV:  # fmt: skip
    """A swap from the pool's view (positive = paid in) as token in and out."""
    if amount0 > 0 >= amount1:
        token_in, token_out, amount_in, amount_out = pool.token0, pool.token1, amount0, -amount1
    elif amount1 > 0 >= amount0:
        token_in, token_out, amount_in, amount_out = pool.token1, pool.token0, amount1, -amount0
    else:
        raise Malformed(
            f"a swap pays one token in and one out: amount0={amount0} amount1={amount1}"
        )
    if amount_in >> 128 or amount_out >> 128:
        raise Malformed("swap amount does not fit u128")
    return PoolSwapTLV(
        amount_in=amount_in,
        amount_out=amount_out,
        timestamp_ns=ts,
        block_number=block,
        venue=pool.venue,
        amount_in_decimals=token_in.decimals,
        amount_out_decimals=token_out.decimals,
        pool_address=pool.address,
        token_in_addr=token_in.address,
        token_out_addr=token_out.address,
        **v3,
    )


def _swap(pool: Pool, w: list[bytes], block: int, ts: int) -> PoolSwapTLV:
    amount0, amount1 = _int(w[0], 256, "amount0"), _int(w[1], 256, "amount1")
    sqrt_price = _uint(w[2], 160, "sqrtPriceX96")
    return _swap_tlv(pool, amount0, amount1, block, ts,
                     liquidity_after=_uint(w[3], 128, "liquidity"),
                     tick_after=_int(w[4], 24, "tick"),
                     sqrt_price_x96_after=sqrt_price.to_bytes(32, "little"))  # fmt: skip


def _swap_v2(pool: Pool, w: list[bytes], block: int, ts: int) -> PoolSwapTLV:
    """amount0In, amount1In, amount0Out, amount1Out: net of each token, the pool's view."""
    in0, in1, out0, out1 = (_uint(word, 256, "amount") for word in w)
    return _swap_tlv(pool, in0 - out0, in1 - out1, block, ts)


def _liquidity(pool: Pool, mint: bool, topics: list[str], w: list[bytes],
               ts: int) -> PoolMintTLV | PoolBurnTLV:  # fmt: skip
    owner = bytes.fromhex(topics[1][2:])
    if owner[:12] != bytes(12):
        raise Malformed("owner topic is not an address")
    lower = _int(bytes.fromhex(topics[2][2:]), 24, "tickLower")
    upper = _int(bytes.fromhex(topics[3][2:]), 24, "tickUpper")
    if lower >= upper:
        raise Malformed(f"tickLower {lower} >= tickUpper {upper}")
    amounts = w[1:] if mint else w
    liquidity = _uint(amounts[0], 128, "amount")
    amount0, amount1 = _uint(amounts[1], 128, "amount0"), _uint(amounts[2], 128, "amount1")
    cls = PoolMintTLV if mint else PoolBurnTLV
    return cls(liquidity_delta=liquidity, amount0=amount0, amount1=amount1, timestamp_ns=ts,
               tick_lower=lower, tick_upper=upper, venue=pool.venue,
               token0_decimals=pool.token0.decimals, token1_decimals=pool.token1.decimals,
               pool_address=pool.address, provider_addr=owner[12:],
               token0_addr=pool.token0.address, token1_addr=pool.token1.address)  # fmt: skip


def _gwei(wei: int) -> int:
    """Wei as whole gwei, rounded up (a gas price is a bid: never under-state it)."""
    return min(-(-wei // 1_000_000_000), 0xFFFFFFFF)


def _gas(head: dict[str, Any], priority_fee_wei: int) -> GasPriceTLV | None:
    if "baseFeePerGas" not in head:
        return None  # a chain without EIP-1559: no base fee to report
    base = _quantity(head["baseFeePerGas"], "baseFeePerGas")
    return GasPriceTLV(
        block_number=_quantity(head.get("number"), "number"),
        timestamp_ns=_quantity(head.get("timestamp"), "timestamp") * 1_000_000_000,
        gas_price_gwei=_gwei(base + priority_fee_wei),
        base_fee_gwei=_gwei(base),
        priority_fee_gwei=_gwei(priority_fee_wei),
        venue=POLYGON_CHAIN_ID,
    )


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
            self.priority_fee_wei = _quantity(event[1].get("result"), "priority fee")
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
