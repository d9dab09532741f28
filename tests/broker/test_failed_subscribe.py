"""A subscription the broker granted but whose segments the client cannot open (a
scribbled or foreign state segment, a registry gone) is undone: the constructor raises
the MyceliumError and leaves no consumer entry behind, so producers never gate on it."""

from __future__ import annotations

import pytest
from broker_helpers import BrokerProcess, status_json

from mycelium import Consumer, Producer
from mycelium.client import consumer as consumer_module
from mycelium.errors import SegmentError
from mycelium.shm.consumer_state import ConsumerState


def _consumers_of(broker: BrokerProcess, topic: str) -> list[dict[str, object]]:
    return [c for c in status_json(broker)["consumers"] if c["topic"] == topic]


def test_a_consumer_whose_state_segment_fails_to_attach_leaves_no_entry(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object) -> ConsumerState:
        raise SegmentError("state segment refused (test)")

    with monkeypatch.context() as patch:
        patch.setattr(consumer_module.ConsumerState, "attach", staticmethod(refused))
        with pytest.raises(SegmentError, match="refused"):
            Consumer("signals", socket_path=broker.socket)
    assert _consumers_of(broker, "signals") == []
    with Consumer("signals", socket_path=broker.socket) as c, Producer(broker.socket) as p:
        p.publish("signals", b"after")  # no dead entry for the producer to gate on
        assert c.recv(timeout=5.0) == b"after"
