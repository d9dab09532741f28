"""Envelopes through a real broker: topic, producer, sequence and publish time as the
frame and its lane recorded them. Forbidden outcomes: a sequence that differs between
two readers of one message, or for a redelivered message after a durable restart; two
producers with one identity; a sequence that is not 1, 2, 3... per producer lane."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from mycelium import Consumer, Envelope, Producer
from mycelium.aio import AsyncConsumer
from mycelium.config import parse_config
from mycelium.errors import ConfigError

TOPIC = "signals"


def recv_envelopes(c: Consumer, n: int) -> list[Envelope]:
    return [c.recv_envelope(timeout=5.0) for _ in range(n)]


def test_envelopes_name_topic_producer_sequence(broker: Any) -> None:
    """Two producers of one name: each numbers its own messages 1, 2, 3, ... and their
    identities differ; the payload is the message; published_ns is 0 with timestamps off."""
    with (
        Consumer(TOPIC, socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket, name="feed") as a,
        Producer(socket_path=broker.socket, name="feed") as b,
    ):
        for i in range(5):
            a.publish(TOPIC, b"a%d" % i)
            b.publish(TOPIC, b"b%d" % i)
        got = recv_envelopes(c, 10)
    by: dict[str, list[Envelope]] = {}
    for env in got:
        assert env.topic == TOPIC and env.published_ns == 0
        by.setdefault(env.producer, []).append(env)
    assert len(by) == 2 and all(p.startswith("feed/") for p in by)
    for envs in by.values():
        assert [e.sequence for e in envs] == [1, 2, 3, 4, 5]
        assert len({e.payload[:1] for e in envs}) == 1  # one producer's payloads only
        assert [e.payload[1:] for e in envs] == [b"0", b"1", b"2", b"3", b"4"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        got[0].sequence = 7  # type: ignore[misc]
    assert not hasattr(got[0], "__dict__")  # slots


def test_two_consumers_see_the_same_identity_and_sequence(broker: Any) -> None:
    with (
        Consumer(TOPIC, socket_path=broker.socket) as c1,
        Consumer(TOPIC, socket_path=broker.socket) as c2,
        Producer(socket_path=broker.socket, name="src") as p,
    ):
        p.publish_many(TOPIC, [b"m%d" % i for i in range(100)])
        p.publish(TOPIC, b"last")
        one, two = recv_envelopes(c1, 101), recv_envelopes(c2, 101)
    assert one == two
    assert [e.sequence for e in one] == list(range(1, 102))


def test_durable_manual_ack_redelivers_with_the_same_sequence(broker: Any) -> None:
    """A durable, manually acknowledging consumer acks 30 of 50 and goes: its next
    process gets 31..50 again with the same (producer, sequence), then the rest."""
    with Producer(socket_path=broker.socket, name="src") as p:
        c = Consumer(TOPIC, socket_path=broker.socket, durable="exp", ack="manual")
        p.publish_many(TOPIC, [b"x%d" % i for i in range(100)])
        first = recv_envelopes(c, 30)
        c.ack()
        unacked = recv_envelopes(c, 20)
        c.close()
        with Consumer(TOPIC, socket_path=broker.socket, durable="exp", ack="manual") as again:
            replay = recv_envelopes(again, 70)
            again.ack()
            assert again.redelivered == 20
    assert [e.sequence for e in first + unacked] == list(range(1, 51))
    assert replay[:20] == unacked
    assert [e.sequence for e in replay] == list(range(31, 101))
    assert {e.producer for e in first + replay} == {first[0].producer}


def test_queue_topic_envelopes(broker: Any) -> None:
    with (
        Consumer("execution", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket, name="orders") as p,
    ):
        p.publish_many("execution", [b"o%d" % i for i in range(20)])
        got = recv_envelopes(c, 20)
    assert [e.sequence for e in got] == list(range(1, 21))
    assert {e.topic for e in got} == {"execution"}
    assert got[0].producer.startswith("orders/")


def test_recv_envelope_times_out_like_recv(broker: Any) -> None:
    with Consumer(TOPIC, socket_path=broker.socket) as c:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            c.recv_envelope(timeout=0.2)
        assert time.monotonic() - t0 >= 0.2


def test_envelope_iterator(broker: Any) -> None:
    with (
        Consumer(TOPIC, socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish_many(TOPIC, [b"%d" % i for i in range(10)])
        envs = c.envelopes()
        got = [next(envs) for _ in range(10)]
    assert [e.payload for e in got] == [b"%d" % i for i in range(10)]


def test_async_envelopes(broker: Any) -> None:
    async def main() -> list[Envelope]:
        async with AsyncConsumer(TOPIC, socket_path=broker.socket, ack="manual") as c:
            with Producer(socket_path=broker.socket, name="aio") as p:
                p.publish_many(TOPIC, [b"%d" % i for i in range(6)])
                out = [await c.recv_envelope(timeout=5.0) for _ in range(3)]
                it = c.envelopes()
                out += [await it.__anext__() for _ in range(3)]
                await it.aclose()
                c.ack()
                with pytest.raises(TimeoutError):
                    await c.recv_envelope(timeout=0.1)
        return out

    got = asyncio.run(main())
    assert [e.sequence for e in got] == list(range(1, 7))
    assert [e.payload for e in got] == [b"%d" % i for i in range(6)]
    assert got[0].producer.startswith("aio/")


TIMESTAMPS_CONFIG = """
[[topics]]
name = "ticks"
routing = "fanout"
timestamps = true

[[topics]]
name = "jobs"
routing = "queue"
timestamps = true
"""


@pytest.mark.parametrize("topic", ["ticks", "jobs"])
def test_timestamps_topic_stores_the_publish_time(make_broker: Any, topic: str) -> None:
    """``timestamps = true``: published_ns is CLOCK_REALTIME between the publish call's
    start and end, for single publishes and batches alike."""
    broker = make_broker(TIMESTAMPS_CONFIG)
    with (
        Consumer(topic, socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        before = time.time_ns()
        p.publish(topic, b"one")
        p.publish_many(topic, [b"x"] * 40)
        after = time.time_ns()
        got = recv_envelopes(c, 41)
    assert all(before <= e.published_ns <= after for e in got)
    assert [e.sequence for e in got] == list(range(1, 42))


def test_timestamps_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="timestamps"):
        parse_config('[[topics]]\nname = "t"\nrouting = "fanout"\ntimestamps = "yes"\n')
