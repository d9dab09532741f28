"""Uniswap V2 ``Sync`` / ``Swap`` and V3 ``Swap`` / ``Mint`` / ``Burn`` event logs and block
heads, as a JSON-RPC node sends them, decoded to TLVs: kept apart from the adapter service
(``polygon.py``) so the decoding can be read and tested without a feed.

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
of another event, or marked ``removed`` (a reorg) is ignored. A head becomes GasPriceTLV:
its base fee plus the priority fee the adapter last heard.
"""

from __future__ import annotations

import json
from typing import Any

from mycelium.protocol import (
    GasPriceTLV,
    PoolBurnTLV,
    PoolMintTLV,
    PoolSwapTLV,
    PoolSyncTLV,
    TypedTLV,
)
from mycelium.services.base import Malformed
from mycelium.services.markets import POLYGON_CHAIN_ID, POOLS, Pool

__all__ = [
    "BURN_V3_TOPIC",
    "EVENTS",
    "MINT_V3_TOPIC",
    "PRIORITY_FEE_REQUEST_ID",
    "SWAP_V2_TOPIC",
    "SWAP_V3_TOPIC",
    "SYNC_TOPIC",
    "WORD",
    "Event",
    "block_time_ns",
    "convert",
    "quantity",
    "split",
]

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
#: Request id of our ``eth_maxPriorityFeePerGas`` call: its reply is the priority fee.
PRIORITY_FEE_REQUEST_ID = 4
WORD = 32


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


def quantity(value: Any, what: str) -> int:
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
    block = quantity(obj.get("blockNumber"), "blockNumber")
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
    return now_ns if stamp is None else quantity(stamp, "blockTimestamp") * 1_000_000_000


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
    base = quantity(head["baseFeePerGas"], "baseFeePerGas")
    return GasPriceTLV(
        block_number=quantity(head.get("number"), "number"),
        timestamp_ns=quantity(head.get("timestamp"), "timestamp") * 1_000_000_000,
        gas_price_gwei=_gwei(base + priority_fee_wei),
        base_fee_gwei=_gwei(base),
        priority_fee_gwei=_gwei(priority_fee_wei),
        venue=POLYGON_CHAIN_ID,
    )
