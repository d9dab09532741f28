"""Zero-copy receive through a real broker: a view into the ring that no writer can
overwrite while its block is open. Forbidden outcomes: bytes that change under a held
view; a writer that laps it; a view still usable after the block; a view on a lossy
topic; a message lost by a refused view."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mycelium import Consumer, Producer
from mycelium.aio import AsyncConsumer
from mycelium.errors import BackpressureTimeout, MyceliumError, ZeroCopyUnavailable

CONFIG = """
[[topics]]
name = "views"
routing = "fanout"
max_message_size = 256
lane_bytes = 2048
backpressure_timeout_ms = 300

[[topics]]
name = "lossy"
routing = "fanout"
lossy = true
"""


@pytest.fixture
def broker(make_broker: Any) -> Any:
    return make_broker(CONFIG)


def test_a_held_view_cannot_be_lapped(broker: Any) -> None:
    """While the block holds the first frame, the producer fills the 2 KiB ring and is
    held back (BackpressureTimeout) instead of overwriting it; the view's bytes never
    change; on exit the view is released and everything published arrives in order."""
    first = bytes(range(200))
    with (
        Consumer("views", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish("views", first)
        with c.recv_view(timeout=5.0) as view:
            assert view.readonly and view == first
            sent = 0
            with pytest.raises(BackpressureTimeout):
                while sent < 100:  # 100 x 224 B frames: far more than the ring holds
                    p.publish("views", bytes([sent]) * 200)
                    sent += 1
                    assert view == first  # intact after every write
            assert 0 < sent < 2048 // 224 and view == first
        with pytest.raises(ValueError):
            view[0]
        p.publish("views", b"after")  # the space is free again
        got = [c.recv(timeout=5.0) for _ in range(sent + 1)]
    assert got == [bytes([i]) * 200 for i in range(sent)] + [b"after"]


def test_views_work_with_manual_ack(broker: Any) -> None:
    with (
        Consumer("views", socket_path=broker.socket, ack="manual") as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish_many("views", [b"a", b"b"])
        with c.recv_view(timeout=5.0) as v:
            assert v == b"a"
        with c.recv_view(timeout=5.0) as v:
            assert v == b"b"
        c.ack()
        with pytest.raises(TimeoutError), c.recv_view(timeout=0.1):
            pass


def test_a_lossy_topic_refuses_views_and_loses_nothing(broker: Any) -> None:
    with (
        Consumer("lossy", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish("lossy", b"kept")
        with pytest.raises(ZeroCopyUnavailable, match="lossy") as info, c.recv_view(1.0):
            pass
        assert isinstance(info.value, MyceliumError) and info.value.topic == "lossy"
        assert c.recv(timeout=5.0) == b"kept"


def test_nested_views_are_refused(broker: Any) -> None:
    with (
        Consumer("views", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish_many("views", [b"1", b"2"])
        with c.recv_view(timeout=5.0) as v:
            with pytest.raises(RuntimeError, match="already open"), c.recv_view(1.0):
                pass
            assert v == b"1"
        with c.recv_view(timeout=5.0) as v:
            assert v == b"2"


def test_async_view(broker: Any) -> None:
    async def main() -> bytes:
        async with AsyncConsumer("views", socket_path=broker.socket) as c:
            with Producer(socket_path=broker.socket) as p:
                p.publish("views", b"async view")
                async with c.recv_view(timeout=5.0) as view:
                    out = bytes(view)
                with pytest.raises(ValueError):
                    view[0]
                lossy = await AsyncConsumer("lossy", socket_path=broker.socket).connect()
                try:
                    with pytest.raises(ZeroCopyUnavailable):
                        async with lossy.recv_view(timeout=1.0):
                            pass
                finally:
                    await lossy.close()
        return out

    assert asyncio.run(main()) == b"async view"
