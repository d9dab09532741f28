"""Accounting: published, delivered and lost reconcile, a corrupt frame's skipped messages
included; start="earliest" gets exactly what the ring still holds, in order."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from delivery_workers import number_of, numbered
from harness import wait_for

from mycelium import Consumer, Producer
from mycelium.aio import AsyncConsumer
from mycelium.errors import ConfigError, CorruptFrame
from mycelium.shm.lane_header import read_tail_record
from mycelium.shm.layout import KIND_LANE, LANE_DATA_OFF, frame_bytes
from mycelium.shm.segment import Segment


def topic_of(broker: Any, name: str) -> dict[str, Any]:
    return next(t for t in broker.stats()["topics"] if t["name"] == name)


def test_skipped_corrupt_frame_counts_its_messages_as_lost(broker: Any) -> None:
    """Message 3 of 10 gets an impossible header: the reader skips 3..9, and those 7 are
    counted lost (not delivered): published == delivered + dropped."""
    with (
        Consumer("signals", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish_many("signals", [numbered(s) for s in range(10)])
        (lane,) = [x for x in p.watch.topology.lanes if x.topic == "signals"]
        seg = Segment.attach(lane.segment, KIND_LANE, writable=True)
        try:
            at = LANE_DATA_OFF + 3 * frame_bytes(len(numbered(3)))
            struct.pack_into("<Q", seg.mm, at, 1 << 31)  # a length past max_message
        finally:
            seg.close()
        got = [number_of(c.recv(timeout=5.0)) for _ in range(3)]
        with pytest.raises(CorruptFrame):
            c.recv(timeout=5.0)
        p.publish_many("signals", [numbered(s) for s in range(10, 15)])
        got += [number_of(d) for d in c.recv_many(10, timeout=5.0)]
        assert got == [0, 1, 2, *range(10, 15)]
        assert (c.lost, c.corrupt) == (7, 1)
        topic = topic_of(broker, "signals")
        assert (topic["published"], topic["delivered"], topic["dropped"]) == (15, 8, 7)


EARLIEST_CONFIG = """
[[topics]]
name = "ticks"
routing = "fanout"
max_message_size = 1024
lane_bytes = 1048576
"""


def test_earliest_gets_exactly_what_the_ring_retains(make_broker: Any) -> None:
    """10 000 messages of 200 B on a 1 MiB ring, nobody reading: it wrapped. A consumer
    with start="earliest" gets a run that ends at 9 999, in order, as long as the ring
    holds (less at most one checkpoint step); start="latest" gets nothing of it."""
    broker = make_broker(EARLIEST_CONFIG)
    body = bytes(192)
    with Producer(socket_path=broker.socket) as p:
        for s in range(10_000):
            p.publish("ticks", numbered(s)[:8] + body)
        (lane,) = p.watch.topology.lanes
        seg = Segment.attach(lane.segment, KIND_LANE)
        try:
            retained_from = read_tail_record(seg)[1]
        finally:
            seg.close()
        with (
            Consumer("ticks", socket_path=broker.socket, start="earliest") as early,
            Consumer("ticks", socket_path=broker.socket) as late,
        ):
            got: list[int] = []
            while batch := early.recv_many(1_000, timeout=0.5):
                got += [number_of(d) for d in batch]
            assert late.recv_many(10, timeout=0.2) == []
    frames = (1 << 20) // frame_bytes(200)
    assert got == list(range(retained_from, 10_000))  # exactly from the lane's tail on
    assert frames - 3 * (frames // 64) <= len(got) <= frames  # the tail moves in steps
    with pytest.raises(ConfigError):
        Consumer("ticks", socket_path=broker.socket, start="oldest")


def test_async_consumer_has_the_same_semantics(broker: Any) -> None:
    """AsyncConsumer: durable, manual ack, redelivery of the unacknowledged."""

    async def run() -> tuple[list[int], list[int], int]:
        async with AsyncConsumer(
            "signals", socket_path=broker.socket, durable="a", ack="manual"
        ) as c:
            with Producer(socket_path=broker.socket) as p:
                p.publish_many("signals", [numbered(s) for s in range(100)])
            first = [number_of(await c.recv(timeout=5.0)) for _ in range(30)]
            c.ack()
            first += [number_of(await c.recv(timeout=5.0)) for _ in range(20)]  # unacked
        async with AsyncConsumer(
            "signals", socket_path=broker.socket, durable="a", ack="manual"
        ) as again:
            rest = [number_of(d) for d in await again.recv_many(100, timeout=5.0)]
            again.ack()
            return first, rest, again.redelivered

    first, rest, redelivered = asyncio.run(run())
    assert first == list(range(50))
    assert rest == list(range(30, 100))  # 30..49 again: received, never acknowledged
    assert redelivered == 20
    wait_for(lambda: any(c["durable"] == "a" for c in broker.stats()["consumers"]))
