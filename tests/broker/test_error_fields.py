"""The errors a user meets first carry what they need: a receive timeout is a
MyceliumError that ``except TimeoutError`` still catches, an unknown topic lists the
known ones, a full ring names its topic. Sync and async, against a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from broker_helpers import BrokerProcess

from mycelium import Consumer, Producer
from mycelium.aio import AsyncConsumer, AsyncProducer
from mycelium.errors import BackpressureTimeout, MyceliumError, ReceiveTimeout, UnknownTopic

DEFAULT_TOPICS = ("market_data", "signals", "execution")
TIMEOUT_S = 0.05
#: One tiny ring and a short wait, so an idle reader fills it at once.
FULL_RING = """
[[topics]]
name = "tiny"
max_message_size = 1024
lane_bytes = 8192
backpressure_timeout_ms = 100
"""
PAYLOAD = b"x" * 1000


def test_a_receive_timeout_is_a_mycelium_error_and_a_timeout_error(
    broker: BrokerProcess,
) -> None:
    with Consumer("signals", socket_path=broker.socket) as c:
        with pytest.raises(ReceiveTimeout) as info:
            c.recv(timeout=TIMEOUT_S)
        assert isinstance(info.value, MyceliumError) and isinstance(info.value, TimeoutError)
        assert (info.value.topic, info.value.timeout_s) == ("signals", TIMEOUT_S)
        assert "signals" in str(info.value)
        try:  # code written for the built-in keeps working
            c.recv(timeout=TIMEOUT_S)
        except TimeoutError:
            pass
        else:
            pytest.fail("no timeout")
        assert c.recv_many(10, timeout=TIMEOUT_S) == []  # a batch is empty, not an error
        with pytest.raises(ReceiveTimeout):
            c.recv_envelope(timeout=TIMEOUT_S)
        with pytest.raises(ReceiveTimeout), c.recv_view(timeout=TIMEOUT_S):
            pytest.fail("a view of nothing")


def test_an_async_receive_timeout_is_a_mycelium_error_and_a_timeout_error(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        async with AsyncConsumer("signals", socket_path=broker.socket) as c:
            with pytest.raises(ReceiveTimeout) as info:
                await c.recv(timeout=TIMEOUT_S)
            assert isinstance(info.value, MyceliumError) and isinstance(info.value, TimeoutError)
            assert info.value.topic == "signals"
            with pytest.raises(TimeoutError):
                await c.recv(timeout=TIMEOUT_S)
            with pytest.raises(ReceiveTimeout):
                await c.recv_envelope(timeout=TIMEOUT_S)
            with pytest.raises(ReceiveTimeout):
                async with c.recv_view(timeout=TIMEOUT_S):
                    pytest.fail("a view of nothing")

    asyncio.run(main())


def test_subscribing_to_an_unknown_topic_lists_the_known_ones(broker: BrokerProcess) -> None:
    with pytest.raises(UnknownTopic) as info:
        Consumer("market-data", socket_path=broker.socket)
    assert info.value.topic == "market-data"
    assert info.value.known == DEFAULT_TOPICS
    assert "known topics: market_data, signals, execution" in str(info.value)

    async def main() -> None:
        with pytest.raises(UnknownTopic) as info:
            await AsyncConsumer("nope", socket_path=broker.socket).connect()
        assert info.value.known == DEFAULT_TOPICS

    asyncio.run(main())
    with Consumer("signals", socket_path=broker.socket):  # the refusal left nothing behind
        pass


def _fill(publish: Callable[[], object], limit: int = 100) -> BackpressureTimeout:
    """Publish until the ring is full; the BackpressureTimeout that ends it."""
    for _ in range(limit):
        try:
            publish()
        except BackpressureTimeout as exc:
            return exc
    pytest.fail(f"{limit} publishes of {len(PAYLOAD)} B fit a ring of 8 KiB")


def test_a_backpressure_timeout_names_its_topic(make_broker: Callable[..., BrokerProcess]) -> None:
    broker = make_broker(FULL_RING)
    with Consumer("tiny", socket_path=broker.socket), Producer(socket_path=broker.socket) as p:
        exc = _fill(lambda: p.publish("tiny", PAYLOAD))
        assert exc.topic == "tiny" and "'tiny'" in str(exc) and exc.waited_s > 0
        batch = p.publish_many
        exc = _fill(lambda: batch("tiny", [PAYLOAD, PAYLOAD]))
        assert exc.topic == "tiny" and exc.published == 0

    async def main() -> None:
        async with (
            AsyncConsumer("tiny", socket_path=broker.socket),
            AsyncProducer(socket_path=broker.socket) as p,
        ):
            for _ in range(100):
                try:
                    await p.publish("tiny", PAYLOAD, timeout=0.1)
                except BackpressureTimeout as exc:
                    assert exc.topic == "tiny" and "'tiny'" in str(exc)
                    return
            pytest.fail("the async producer never met a full ring")

    asyncio.run(main())
