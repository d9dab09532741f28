"""Backwards compatibility: the original relay system's messages pass through unchanged.

Every golden Protocol V2 message (``tests/data/protocol-v2/vectors.jsonl``, produced by the
original Rust implementation) is published with ``publish_message`` and must arrive
byte-identical on the topic of its relay domain (1 market_data, 2 signals, 3 execution)
and on no other, in order, and decode to the fields the original builder was given.
A SYSTEM-domain message (4) has no topic: it is refused with UnknownTopic, publishing
nothing.

The topics get a max_message_size that fits the largest golden message (a 65,535-byte
extended TLV makes a 65,572-byte message, just over the original config's 65,536).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from integration_env import ORIGINAL_TOPICS, BrokerProcess, broker_config

from mycelium import Consumer, Producer
from mycelium.errors import UnknownTopic
from mycelium.protocol import RelayDomain, parse_message

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "protocol-v2" / "vectors.jsonl"
DOMAIN_TOPICS = {1: "market_data", 2: "signals", 3: "execution"}
#: Published after the golden messages on each topic: the next thing after them.
END = b"end of golden messages"
RECV_TIMEOUT_S = 5.0


def golden_vectors() -> list[dict[str, Any]]:
    assert VECTORS_PATH.is_file(), f"golden vector file missing: {VECTORS_PATH}"
    return [json.loads(line) for line in VECTORS_PATH.read_text().splitlines() if line.strip()]


def test_every_golden_message_arrives_byte_identical_on_its_domain_topic(
    make_broker: Callable[..., BrokerProcess],
) -> None:
    vectors = golden_vectors()
    largest = max(v["length"] for v in vectors)
    broker = make_broker(
        broker_config(**{t: {"max_message_size": max(largest, 65536)} for t in ORIGINAL_TOPICS})
    )
    expected: dict[str, list[dict[str, Any]]] = {t: [] for t in DOMAIN_TOPICS.values()}
    with ExitStack() as stack:
        consumers = {
            t: stack.enter_context(Consumer(t, socket_path=broker.socket)) for t in expected
        }
        producer = stack.enter_context(Producer(socket_path=broker.socket))
        for v in vectors:
            raw = bytes.fromhex(v["hex"])
            domain = v["fields"]["domain"]
            if domain == RelayDomain.SYSTEM:
                with pytest.raises(UnknownTopic):
                    producer.publish_message(raw)
            else:
                producer.publish_message(raw)
                expected[DOMAIN_TOPICS[domain]].append(v)
        for topic in expected:
            producer.publish(topic, END)

        for topic, consumer in consumers.items():
            arrived = []
            while (data := consumer.recv(timeout=RECV_TIMEOUT_S)) != END:
                arrived.append(data)
            assert [d.hex() for d in arrived] == [v["hex"] for v in expected[topic]], topic
            for data, v in zip(arrived, expected[topic], strict=True):
                expect_original_fields(data, v["fields"])


def expect_original_fields(data: bytes, fields: dict[str, Any]) -> None:
    """The message decodes to what the original builder was given."""
    m = parse_message(data)
    header = (m.header.relay_domain, m.header.source, m.header.sequence, m.header.timestamp)
    assert header == (fields["domain"], fields["source"], fields["sequence"], fields["timestamp"])
    assert m.header.flags == fields["flags"]
    tlvs = [(t.type, bytes(t.payload).hex()) for t in m.tlvs]
    assert tlvs == [(t["tlv_type"], t["payload_hex"]) for t in fields["tlvs"]]
