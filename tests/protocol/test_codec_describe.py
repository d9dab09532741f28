"""describe_message and the ``mycelium decode`` command built on it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from mycelium.cli import app
from mycelium.protocol import ChecksumMismatch, UnknownSource
from mycelium.protocol.describe import describe_message


def test_describes_every_vector_as_json(vector: dict[str, Any]) -> None:
    doc = describe_message(bytes.fromhex(vector["hex"]))
    assert json.loads(json.dumps(doc)) == doc
    header = vector["parsed"]["parse_header"]["header"]
    assert {k: doc["header"][k] for k in header} == header
    assert len(doc["tlvs"]) == len(vector["fields"]["tlvs"])
    for described, recorded in zip(doc["tlvs"], vector["fields"]["tlvs"], strict=True):
        assert described["type"] == recorded["tlv_type"]
        assert described["form"] == recorded["expected_format"]
        assert described["length"] == recorded["payload_len"]
        assert described["payload_hex"] == recorded["payload_hex"]
        if described.get("struct"):
            assert described["struct"] == recorded["struct"]
            fields = described["fields"]
            assert {k: fields[k] for k in recorded["values"] if k in fields} == {
                k: v for k, v in recorded["values"].items() if k in fields
            }


def test_names_and_untyped_payloads(vectors_by_name: dict[str, Any]) -> None:
    doc = describe_message(bytes.fromhex(vectors_by_name["vendor_tlv_plus_signal_identity"]["hex"]))
    assert (doc["header"]["relay_domain_name"], doc["header"]["source_name"]) == (
        "SIGNAL",
        "ARBITRAGE_STRATEGY",
    )
    assert [t["type_name"] for t in doc["tlvs"]] == ["VENDOR", "SIGNAL_IDENTITY"]
    assert all("fields" not in t for t in doc["tlvs"])
    trade = describe_message(bytes.fromhex(vectors_by_name["trade_buy_binance"]["hex"]))
    assert trade["tlvs"][0]["fields"]["price"] == 4512345678900


def test_describe_raises_the_parse_errors(vectors_by_name: dict[str, Any]) -> None:
    raw = bytearray.fromhex(vectors_by_name["trade_buy_binance"]["hex"])
    raw[28] ^= 0xFF
    with pytest.raises(ChecksumMismatch):
        describe_message(bytes(raw))
    assert describe_message(bytes(raw), verify_checksum=False)["header"]["sequence"] == 42
    raw[6] = 99
    with pytest.raises(UnknownSource):
        describe_message(bytes(raw), verify_checksum=False)


def test_cli_decode(vectors_by_name: dict[str, Any]) -> None:
    runner = CliRunner()
    good = vectors_by_name["gas_price"]["hex"]
    result = runner.invoke(app, ["decode", good])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tlvs"][0]["fields"]["venue"] == 137
    bad = good[:-2] + "ff"  # last payload byte changed: checksum no longer matches
    assert runner.invoke(app, ["decode", bad]).exit_code == 1
    assert runner.invoke(app, ["decode", "--no-verify", bad]).exit_code == 0
