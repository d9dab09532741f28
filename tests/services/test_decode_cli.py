"""``mycelium decode`` (a subprocess) on the frames the services make of real data: the
Kraken book sample as OrderBookTLVs, the real Uniswap logs as pool TLVs, the strategy's
order legs, and the golden payloads of the other typed TLVs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mycelium.protocol import (
    TYPED_TLV_CLASSES,
    OrderBookTLV,
    OrderRequestTLV,
    RelayDomain,
    SourceType,
    TLVType,
    encode_message,
)
from mycelium.services import polygon
from mycelium.services.adapter import market_message
from mycelium.services.kraken import KrakenCollector
from mycelium.services.markets import load_pools

NOW = 1_700_000_000_555_000_000
DATA = Path(__file__).resolve().parents[1] / "data"
DECODE_TIMEOUT_S = 60


def decode_cli(frame: bytes) -> dict[str, Any]:
    """The JSON ``mycelium decode HEX`` prints (exit status checked)."""
    done = subprocess.run(
        [sys.executable, "-m", "mycelium", "decode", frame.hex()],
        capture_output=True, text=True, timeout=DECODE_TIMEOUT_S, check=True,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def only_tlv(frame: bytes) -> dict[str, Any]:
    (tlv,) = decode_cli(frame)["tlvs"]
    return tlv


def test_a_real_kraken_book_decodes_with_instrument_sequence_and_levels() -> None:
    collector = KrakenCollector(None)
    lines = (DATA / "kraken_v2_book_btcusd.jsonl").read_text().splitlines()
    books = [collector.convert(e, NOW) for line in lines[:2] for e in collector.split(line)]
    snapshot = books[0]
    assert isinstance(snapshot, OrderBookTLV)
    tlv = only_tlv(market_message(KrakenCollector.source, snapshot, 7))
    assert (tlv["struct"], tlv["form"]) == ("OrderBookTLV", "extended")
    fields = tlv["fields"]
    assert fields["instrument"] == {"symbol": "BTC", "quote": "USD", "venue": "KRAKEN"}
    assert fields["sequence"] == snapshot.sequence
    assert fields["timestamp_ns"] == snapshot.timestamp_ns
    levels = fields["levels"]
    assert [lv["side"] for lv in levels] == ["bid"] * 10 + ["ask"] * 10
    first_ask = levels[10]
    assert (first_ask["price"], first_ask["size"]) == ("27918.6", "0.10013466")
    bids = [float(lv["price"]) for lv in levels[:10]]
    assert bids == sorted(bids, reverse=True)


def test_every_real_uniswap_log_decodes_to_its_struct() -> None:
    pools = load_pools(DATA / "uniswap_pools.toml")
    logs = (DATA / "uniswap_logs.jsonl").read_text().splitlines()[:5]
    structs = []
    for line in logs:
        (event,) = polygon.split(line)
        tlv = polygon.convert(event, NOW, pools)
        assert tlv is not None
        decoded = only_tlv(market_message(SourceType.POLYGON, tlv, 1))
        structs.append(decoded["struct"])
        assert decoded["fields"] == json.loads(json.dumps(tlv.to_dict()))
    assert structs == ["PoolSwapTLV", "PoolSyncTLV", "PoolSwapTLV", "PoolMintTLV", "PoolBurnTLV"]


def test_the_strategys_order_legs_decode() -> None:
    legs = [OrderRequestTLV(9, 7, side, side, 0x4554480000000000, 150_000_000, 2_500 * 10**8)
            for side in (0, 1)]  # fmt: skip
    frame = encode_message(RelayDomain.EXECUTION, SourceType.ARBITRAGE_STRATEGY,
                           [(TLVType.ORDER_REQUEST, leg.to_bytes()) for leg in legs])  # fmt: skip
    decoded = decode_cli(frame)["tlvs"]
    assert [t["struct"] for t in decoded] == ["OrderRequestTLV"] * 2
    assert [t["fields"]["side"] for t in decoded] == [0, 1]
    assert decoded[0]["fields"]["quantity"] == 150_000_000


@pytest.mark.parametrize(
    "sample",
    [json.loads(line) for line in (DATA / "typed_tlvs.jsonl").read_text().splitlines()],
    ids=lambda s: s["struct"],
)
def test_the_other_typed_tlvs_decode(sample: dict[str, Any]) -> None:
    """PoolMint, PoolBurn, PoolTick, PoolState, PoolLiquidity, StateInvalidation and
    OrderBook from their golden payloads."""
    by_name = {cls.__name__: t for t, cls in TYPED_TLV_CLASSES.items()}
    tlv_type = by_name.get(sample["struct"], TLVType.ORDER_BOOK)
    payload = bytes.fromhex(sample["payload_hex"])
    frame = encode_message(RelayDomain.MARKET_DATA, SourceType.POLYGON, [(tlv_type, payload)])
    decoded = only_tlv(frame)
    assert decoded["struct"] == sample["struct"]
    for name, value in sample["values"].items():
        if name not in ("bids", "asks"):
            assert decoded["fields"][name] == value, name


def test_a_truncated_book_keeps_its_hex_and_says_why() -> None:
    frame = encode_message(RelayDomain.MARKET_DATA, SourceType.KRAKEN,
                           [(TLVType.ORDER_BOOK, bytes(40))])  # fmt: skip
    tlv = only_tlv(frame)
    assert "fields" not in tlv and "head alone" in tlv["decode_error"]
    assert tlv["payload_hex"] == "00" * 40
