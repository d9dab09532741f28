"""The per-topic publisher handle through a real broker: the same deliveries and the
same errors as ``Producer.publish``. Forbidden outcomes: a consumer that joined after
the handle was made missing messages; a full ring overwritten instead of waited for; a
second thread writing to the lane; an unknown topic accepted."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from mycelium import Consumer, Producer
from mycelium.errors import BackpressureTimeout, MessageTooLarge, UnknownTopic

CONFIG = """
[[topics]]
name = "fast"
routing = "fanout"
max_message_size = 256
lane_bytes = 2048
backpressure_timeout_ms = 300

[[topics]]
name = "work"
routing = "queue"
"""


@pytest.fixture
def broker(make_broker: Any) -> Any:
    return make_broker(CONFIG)


def test_handle_publishes_and_follows_topology_changes(broker: Any) -> None:
    with Producer(socket_path=broker.socket) as p, Consumer("fast", socket_path=broker.socket) as a:
        pub = p.topic("fast")
        pub.publish(b"one")
        with Consumer("fast", socket_path=broker.socket) as b:  # the generation moves
            pub.publish(b"two")
            pub.publish_many([b"three", b"four"])
            assert [b.recv(timeout=5.0) for _ in range(3)] == [b"two", b"three", b"four"]
        got = [a.recv_envelope(timeout=5.0) for _ in range(4)]
    assert [e.payload for e in got] == [b"one", b"two", b"three", b"four"]
    assert [e.sequence for e in got] == [1, 2, 3, 4]


def test_handle_keeps_every_check(broker: Any) -> None:
    with Producer(socket_path=broker.socket) as p, Consumer("fast", socket_path=broker.socket):
        with pytest.raises(UnknownTopic):
            p.topic("nope")
        pub = p.topic("fast")
        with pytest.raises(MessageTooLarge):
            pub.publish(b"x" * 257)
        errors: list[BaseException] = []

        def other() -> None:
            try:
                pub.publish(b"from another thread")
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
        sent = 0
        with pytest.raises(BackpressureTimeout):  # the consumer never reads: the ring fills
            while sent < 100:
                pub.publish(bytes(200))
                sent += 1
        assert 0 < sent <= 2048 // 224


def test_queue_topic_handle_and_arrays(broker: Any) -> None:
    rec = np.arange(50, dtype="<u8")
    with Producer(socket_path=broker.socket) as p, Consumer("work", socket_path=broker.socket) as c:
        pub = p.topic("work")
        pub.publish(b"job")
        assert pub.publish_array(rec) == 50
        assert c.recv(timeout=5.0) == b"job"
        got = c.recv_array("<u8", 100, timeout=5.0)
        while len(got) < 50:
            got = np.concatenate([got, c.recv_array("<u8", 100, timeout=5.0)])
    assert np.array_equal(got, rec)
