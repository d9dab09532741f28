"""numpy records through a real broker: ``publish_array`` (one frame per record) and
``recv_array`` (records back, vectorised), including Protocol V2 fixed-layout batches.
Forbidden outcomes: a record lost, reordered or torn; a message of another size read as
a record or dropped; a strided array half-published."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from mycelium import Consumer, Producer
from mycelium.aio import AsyncConsumer, AsyncProducer
from mycelium.errors import NonContiguousPayload, RecordSizeMismatch
from mycelium.protocol import parse_message
from mycelium.protocol.batch import TRADE_MESSAGE_DTYPE, decode_batch, encode_batch

TOPIC = "market_data"
TICK = np.dtype([("ts", "<u8"), ("price", "<f8"), ("qty", "<u4"), ("venue", "<u4")])


def ticks(first: int, n: int) -> np.ndarray:
    out = np.zeros(n, TICK)
    out["ts"] = np.arange(first, first + n)
    out["price"] = out["ts"] * 0.5
    out["qty"] = out["ts"] % 1000
    out["venue"] = 7
    return out


def recv_records(c: Consumer, dtype: Any, n: int) -> np.ndarray:
    parts: list[np.ndarray] = []
    got = 0
    while got < n:
        batch = c.recv_array(dtype, 4096, timeout=5.0)
        assert len(batch), "no records within 5 s"
        parts.append(batch)
        got += len(batch)
    return np.concatenate(parts)


def test_structured_records_round_trip(broker: Any) -> None:
    """50 000 records (more than a lane holds at once): every one arrives, in order."""
    sent = ticks(0, 50_000)
    with (
        Consumer(TOPIC, socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        got: list[np.ndarray] = []
        for k in range(0, len(sent), 5_000):
            assert p.publish_array(TOPIC, sent[k : k + 5_000]) == 5_000
            got.append(recv_records(c, TICK, 5_000))
        p.publish_array(TOPIC, ticks(9, 1))
        env = c.recv_envelope(timeout=5.0)
    assert np.array_equal(np.concatenate(got), sent)
    assert env.sequence == 50_001 and env.payload == ticks(9, 1).tobytes()


def test_protocol_v2_batches_end_to_end(broker: Any) -> None:
    """Trades encoded with ``encode_batch`` go out as one message each: a consumer parses
    any of them with ``parse_message`` and decodes a received array with ``decode_batch``."""
    trades = np.zeros(2_000, TRADE_MESSAGE_DTYPE)
    trades["relay_domain"], trades["source"] = 1, 2
    trades["sequence"] = np.arange(2_000)
    trades["timestamp"] = 1_700_000_000_123_456_789
    trades["price"] = np.arange(2_000) * 100_000_000
    wire = np.frombuffer(encode_batch(trades), TRADE_MESSAGE_DTYPE)
    with (
        Consumer(TOPIC, socket_path=broker.socket) as c,
        Consumer(TOPIC, socket_path=broker.socket) as one_by_one,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish_array(TOPIC, wire)
        got = decode_batch(recv_records(c, TRADE_MESSAGE_DTYPE, 2_000).tobytes())
        first = parse_message(one_by_one.recv(timeout=5.0))
    assert np.array_equal(got["price"], trades["price"])
    assert np.array_equal(got["sequence"], trades["sequence"])
    assert first.header.sequence == 0 and first.header.relay_domain == 1


def test_a_message_of_another_size_is_refused_and_kept(broker: Any) -> None:
    with (
        Consumer(TOPIC, socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish(TOPIC, b"odd")
        p.publish_array(TOPIC, ticks(0, 5))
        with pytest.raises(RecordSizeMismatch) as info:
            c.recv_array(TICK, 100, timeout=5.0)
        assert (info.value.size, info.value.itemsize, info.value.topic) == (3, 24, TOPIC)
        assert c.recv(timeout=5.0) == b"odd"  # left unread, not lost
        p.publish(TOPIC, b"odd again")
        p.publish_array(TOPIC, ticks(5, 5))
        assert np.array_equal(c.recv_array(TICK, 100, timeout=5.0), ticks(0, 5))
        with pytest.raises(RecordSizeMismatch):
            c.recv_array(TICK, 100, timeout=5.0)
        assert c.recv(timeout=5.0) == b"odd again"
        assert np.array_equal(c.recv_array(TICK, 100, timeout=5.0), ticks(5, 5))
        assert len(c.recv_array(TICK, 100, timeout=0.05)) == 0


def test_a_strided_array_is_refused_whole(broker: Any) -> None:
    with (
        Consumer(TOPIC, socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        with pytest.raises(NonContiguousPayload):
            p.publish_array(TOPIC, ticks(0, 10)[::2])
        with pytest.raises(ValueError, match="1-D"):
            p.publish_array(TOPIC, ticks(0, 10).reshape(2, 5))
        assert len(c.recv_array(TICK, 100, timeout=0.1)) == 0


def test_queue_topic_arrays(broker: Any) -> None:
    with (
        Consumer("execution", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish_array("execution", ticks(0, 300))
        assert np.array_equal(recv_records(c, TICK, 300), ticks(0, 300))


def test_async_arrays(broker: Any) -> None:
    async def main() -> np.ndarray:
        async with (
            AsyncConsumer(TOPIC, socket_path=broker.socket) as c,
            AsyncProducer(socket_path=broker.socket) as p,
        ):
            assert await p.publish_array(TOPIC, ticks(0, 1_000)) == 1_000
            parts = []
            while sum(map(len, parts)) < 1_000:
                parts.append(await c.recv_array(TICK, 512, timeout=5.0))
            return np.concatenate(parts)

    assert np.array_equal(asyncio.run(main()), ticks(0, 1_000))
