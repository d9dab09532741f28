"""The adapters' pure decoders: Kraken v2 JSON and Uniswap logs in, typed TLVs out, field
by field; malformed input raises ``Malformed``; the recorded samples are the project's."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest
from service_helpers import (
    BLOCK,
    BLOCK_TIME,
    BTC_ASSET,
    ETH_ASSET,
    HEARTBEAT,
    QUICKSWAP,
    STATUS,
    SUBSCRIBED,
    UNISWAP_V3,
    USDC,
    WETH,
    log_entry,
    new_head,
    notification,
    swap_log,
    sync_log,
    ticker,
    trade,
)

from mycelium.protocol import (
    GasPriceTLV,
    PoolSwapTLV,
    PoolSyncTLV,
    QuoteTLV,
    TradeTLV,
    VenueId,
    parse_message,
)
from mycelium.services import kraken, polygon
from mycelium.services.adapter import FLAG_ARRIVAL_TIME, market_message
from mycelium.services.base import Malformed
from mycelium.services.feeds import OP_PING, OP_TEXT, FrameParser, encode_frame

NOW = 1_700_000_000_555_000_000
SAMPLES = Path(kraken.__file__).parent / "samples"
TOOLS = Path(__file__).resolve().parents[2] / "tools"


def one(module: object, line: str) -> object:
    events = module.split(line)  # type: ignore[attr-defined]
    assert len(events) == 1
    return module.convert(events[0], NOW)  # type: ignore[attr-defined]


# -- Kraken -------------------------------------------------------------------------------
def test_kraken_trade_becomes_a_trade_tlv() -> None:
    assert one(kraken, trade()) == TradeTLV(
        asset_id=BTC_ASSET,
        price=2_650_010_000_000,
        volume=120_000,
        timestamp_ns=1_695_628_177_708_706_000,
        venue_id=VenueId.KRAKEN,
        asset_type=51,
        side=0,
    )
    sell = one(kraken, trade("ETH/USD", "sell", 3120.5, 2.5, "2023-09-25T07:49:37Z"))
    assert (sell.asset_id, sell.side, sell.price, sell.volume, sell.timestamp_ns) == (
        ETH_ASSET, 1, 312_050_000_000, 250_000_000, 1_695_628_177_000_000_000,
    )  # fmt: skip


def test_kraken_ticker_becomes_a_quote_tlv_stamped_on_arrival() -> None:
    assert one(kraken, ticker()) == QuoteTLV(
        asset_id=ETH_ASSET,
        bid_price=199_950_000_000,
        bid_size=350_000_000,
        ask_price=200_000_000_000,
        ask_size=425_000_000,
        timestamp_ns=NOW,
        venue_id=VenueId.KRAKEN,
        asset_type=51,
    )


def test_kraken_numbers_are_exact_decimals() -> None:
    t = one(kraken, '{"channel":"trade","type":"snapshot","data":[{"symbol":"ETH/USD",'
                    '"side":"buy","price":0.1,"qty":12345678.12345678,"ord_type":"limit",'
                    '"trade_id":1,"timestamp":"2023-09-25T07:49:37.123456789Z"}]}')  # fmt: skip
    assert (t.price, t.volume, t.timestamp_ns % 10**9) == (
        10_000_000,
        1_234_567_812_345_678,
        123_456_789,
    )


def test_kraken_batches_give_one_event_per_entry() -> None:
    doc = json.loads(trade())
    doc["data"] *= 3
    assert len(kraken.split(json.dumps(doc))) == 3


@pytest.mark.parametrize("line", [HEARTBEAT, STATUS, SUBSCRIBED, '{"channel":"book","data":[]}'])
def test_kraken_control_messages_carry_no_events(line: str) -> None:
    assert kraken.split(line) == []


def test_kraken_pairs_in_an_unknown_quote_currency_are_ignored() -> None:
    assert one(kraken, ticker("ETH/GBP", 1500, 1501)) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"channel":"trade","data":{"symbol":"BTC/USD"}}', "list of objects"),
        (trade(price="26500.1"), "not a number"),
        (trade(price=True), "not a number"),
        (trade(qty=-1), "must be positive"),
        (trade(price=0), "must be positive"),
        (trade(side="short"), "bad side"),
        (trade(symbol="BTCUSD"), "bad symbol"),
        (trade(timestamp="yesterday"), "bad timestamp"),
        (trade(timestamp="2023-13-45T07:49:37Z"), "bad timestamp"),
        (trade(price=1e300), "price"),
        (ticker(bid=2001, ask=2000), "crossed"),
        (ticker(bid_qty=None), "bid_qty"),
    ],
)
def test_kraken_malformed_input_is_refused_with_a_reason(line: str, reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        for event in kraken.split(line):
            kraken.convert(event, NOW)


# -- Polygon ------------------------------------------------------------------------------
def test_v2_sync_log_becomes_a_pool_sync_tlv() -> None:
    line = notification(sync_log(3_000_000_000_000, 1_500 * 10**18))
    assert one(polygon, line) == PoolSyncTLV(
        reserve0=3_000_000_000_000,
        reserve1=1_500 * 10**18,
        timestamp_ns=BLOCK_TIME * 10**9,
        block_number=BLOCK,
        venue=VenueId.QUICKSWAP,
        token0_decimals=6,
        token1_decimals=18,
        pool_address=QUICKSWAP.address,
        token0_addr=USDC.address,
        token1_addr=WETH.address,
    )


def test_v3_swap_log_becomes_a_pool_swap_tlv() -> None:
    sqrt_price = 1_771_595_571_142_957_166_518_320_255_467_520
    line = notification(
        swap_log(-3_512_345_678, 10**18, sqrt_price, 123_456_789_012_345_678_901, -200_123)
    )
    assert one(polygon, line) == PoolSwapTLV(
        amount_in=10**18,
        amount_out=3_512_345_678,
        liquidity_after=123_456_789_012_345_678_901,
        timestamp_ns=BLOCK_TIME * 10**9,
        block_number=BLOCK,
        tick_after=-200_123,
        venue=VenueId.UNISWAP_V3,
        amount_in_decimals=18,
        amount_out_decimals=6,
        pool_address=UNISWAP_V3.address,
        token_in_addr=WETH.address,
        token_out_addr=USDC.address,
        sqrt_price_x96_after=sqrt_price.to_bytes(32, "little"),
    )
    usdc_in = one(polygon, notification(swap_log(2_000_000_000, -(10**18), sqrt_price, 1, 5)))
    assert (usdc_in.token_in_addr, usdc_in.amount_in, usdc_in.amount_out) == (
        USDC.address, 2_000_000_000, 10**18,
    )  # fmt: skip


def test_new_head_becomes_a_gas_price_tlv_with_the_feeds_priority_fee() -> None:
    adapter = polygon.PolygonAdapter(None)
    head = polygon.split(notification(new_head(45_400_000_000)))[0]
    assert adapter.convert(head, NOW).priority_fee_gwei == 0  # type: ignore[union-attr]
    reply = json.dumps({"jsonrpc": "2.0", "id": polygon.PRIORITY_FEE_REQUEST_ID,
                        "result": hex(30_000_000_001)})  # fmt: skip
    assert adapter.convert(polygon.split(reply)[0], NOW) is None
    assert adapter.convert(head, NOW) == GasPriceTLV(
        block_number=BLOCK,
        timestamp_ns=BLOCK_TIME * 10**9,
        gas_price_gwei=76,  # 75.400000001 gwei, rounded up: a bid is never under-stated
        base_fee_gwei=46,
        priority_fee_gwei=31,
        venue=137,
    )


def test_get_logs_reply_and_bare_logs_are_accepted() -> None:
    logs = [sync_log(1, 2), sync_log(3, 4, logIndex="0x8")]
    events = polygon.split(json.dumps({"jsonrpc": "2.0", "id": 1, "result": logs}))
    assert [polygon.convert(e, NOW).reserve0 for e in events] == [1, 3]
    assert polygon.convert(polygon.split(json.dumps(logs[1]))[0], NOW).reserve1 == 4


def test_logs_without_block_time_are_stamped_on_arrival_and_flagged() -> None:
    entry = sync_log(1, 2)
    adapter = polygon.PolygonAdapter(None)
    assert adapter.message_flags(polygon.split(json.dumps(entry))[0]) == 0
    del entry["blockTimestamp"]
    assert one(polygon, json.dumps(entry)).timestamp_ns == NOW
    assert adapter.message_flags(polygon.split(json.dumps(entry))[0]) == FLAG_ARRIVAL_TIME


@pytest.mark.parametrize(
    "line",
    [
        json.dumps({"jsonrpc": "2.0", "id": 1, "result": "0x9ce59a13059e417087c02d3236a0b1cc"}),
        json.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "busy"}}),
    ],
)
def test_rpc_replies_carry_no_events(line: str) -> None:
    assert polygon.split(line) == []


@pytest.mark.parametrize(
    "entry",
    [
        sync_log(1, 2, removed=True),  # reorged away
        log_entry(b"\x11" * 20, [polygon.SYNC_TOPIC], [1, 2]),  # a pool we do not know
        log_entry(QUICKSWAP.address, ["0x" + "ee" * 32], [1]),  # another event
        log_entry(
            QUICKSWAP.address,
            [polygon.SWAP_V3_TOPIC, "0x" + "00" * 32, "0x" + "00" * 32],
            [1, -1, 1, 1, 1],
        ),  # a V3 event at a V2 pool
    ],
)
def test_logs_we_do_not_publish_are_ignored(entry: dict[str, object]) -> None:
    assert one(polygon, notification(entry)) is None


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (sync_log(1, 2, data="0x" + "00" * 63), "2 words"),
        (sync_log(1, 2, data="0xzz"), "not valid hex"),
        (sync_log(1, 2, data=12), "not a 0x hex string"),
        (sync_log(1 << 112, 2), "uint112"),
        (sync_log(1, 2, blockNumber="12"), "blockNumber"),
        (sync_log(1, 2, address="0x1234"), "20 bytes"),
        (sync_log(1, 2, topics=[]), "without topics"),
        (sync_log(1, 2, topics=[polygon.SYNC_TOPIC, "0x12"]), "32 bytes"),
        (swap_log(5, 5, 1, 1, 1), "one token in and one out"),
        (swap_log(-1, 1, 1 << 160, 1, 1), "uint160"),
        (swap_log(-1, 1, 1, 1 << 128, 1), "uint128"),
        (swap_log(-1, 1, 1, 1, 1 << 23), "int24"),
        (swap_log(-1, 1, 1, 1, 1, topics=[polygon.SWAP_V3_TOPIC]), "3 topics"),
    ],
)
def test_malformed_logs_are_refused_with_a_reason(entry: dict[str, object], reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        one(polygon, notification(entry))


@pytest.mark.parametrize(
    "line",
    ["", "null", '{"method":"eth_subscription","params":{"result":7}}', '{"result":[{"x":1}]}',
     '{"hello":"world"}'],
)  # fmt: skip
def test_malformed_rpc_messages_are_refused(line: str) -> None:
    with pytest.raises(Malformed):
        polygon.split(line)


# -- messages, samples, generators, framing -----------------------------------------------
def test_each_tlv_travels_as_one_market_data_message() -> None:
    tlv = one(kraken, trade())
    m = parse_message(market_message(kraken.KrakenCollector.source, tlv, 42))
    assert (m.header.relay_domain, m.header.source, m.header.sequence) == (1, 2, 42)
    assert [(t.type, TradeTLV.from_bytes(t.payload)) for t in m.tlvs] == [(1, tlv)]


@pytest.mark.parametrize(("module", "sample"), [(kraken, "kraken_v2.jsonl"),
                                                (polygon, "polygon_logs.jsonl")])  # fmt: skip
def test_recorded_samples_decode_and_are_what_the_tool_writes(module: object, sample: str) -> None:
    lines = (SAMPLES / sample).read_text().splitlines()
    adapter = kraken.KrakenCollector(None) if module is kraken else polygon.PolygonAdapter(None)
    tlvs = [adapter.convert(e, NOW) for line in lines for e in adapter.split(line)]
    kinds = {type(t).__name__ for t in tlvs if t is not None}
    assert kinds == ({"TradeTLV", "QuoteTLV", "OrderBookTLV"} if module is kraken
                     else {"PoolSyncTLV", "PoolSwapTLV", "GasPriceTLV", "PoolMintTLV",
                           "PoolBurnTLV"})  # fmt: skip
    if module is kraken:  # every generated book update carries Kraken's checksum
        assert adapter.checksum_mismatches == 0  # type: ignore[attr-defined]
    sys.path.insert(0, str(TOOLS))
    try:
        import make_samples
    finally:
        sys.path.remove(str(TOOLS))
    written = make_samples.kraken_lines() if module is kraken else make_samples.polygon_lines()
    assert written == lines


@pytest.mark.parametrize("module", [kraken, polygon])
def test_generators_are_deterministic_per_seed(module: object) -> None:
    def run(seed: int) -> list[str]:
        clock = itertools.count(NOW, 10_000_000)
        return list(itertools.islice(module.generate(seed, clock), 200))  # type: ignore[attr-defined]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_websocket_frames_round_trip_fragmented_and_masked() -> None:
    text = json.dumps({"channel": "heartbeat"}).encode()
    big = b"x" * 70_000
    first = bytearray(encode_frame(OP_TEXT, text[:5], b"abcd"))
    first[0] &= 0x7F  # not final: a continuation frame follows
    cont = bytearray(encode_frame(0x0, text[5:], b"wxyz"))
    stream = bytes(first) + encode_frame(OP_PING, b"p") + bytes(cont) + encode_frame(OP_TEXT, big)
    parser = FrameParser()
    out = []
    for i in range(0, len(stream), 7):  # bytes arrive in small pieces
        out += parser.feed(stream[i : i + 7])
    assert out == [(OP_PING, b"p"), (OP_TEXT, text), (OP_TEXT, big)]
