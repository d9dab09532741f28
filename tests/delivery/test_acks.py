"""Manual acknowledgement: what was received but not acknowledged is delivered again."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from delivery_kit import Clients
from delivery_workers import ConsumerPlan
from harness import wait_for
from test_queue_handover import TOPIC, gone, lag_of, reconciled

from mycelium import Consumer, Producer
from mycelium.errors import ConfigError

N = 6_000


def test_unacknowledged_messages_of_a_killed_member_reach_the_survivor(
    broker: Any, clients: Clients
) -> None:
    """ack="manual", SIGKILLed after receiving 1 000 and acknowledging 600: the other 400
    reach the survivor (counted in its ``redelivered``), nothing is lost, and they are
    the only duplicates."""
    plan = ConsumerPlan(broker.socket, TOPIC, "survivor", ack="manual", ack_every=100)
    survivor = clients.consumer(plan)
    victim = clients.consumer(
        ConsumerPlan(broker.socket, TOPIC, "victim", ack="manual", take=1_000, acked=600)
    )
    producer = clients.producer(broker.socket, TOPIC, N)
    producer.report("published")
    taken = victim.report("took")
    victim.kill()
    wait_for(lambda: gone(broker, victim.proc.pid), what="the coordinator to notice")
    survivor.tell("stop")
    report = survivor.report("done")
    counts = Counter([*taken, *report["seqs"]])
    assert set(counts) == set(range(N)), f"{N - len(counts)} lost"
    dups = sorted(s for s, k in counts.items() if k > 1)
    assert dups == sorted(taken[600:]) and all(counts[s] == 2 for s in dups)
    assert report["redelivered"] == 400
    producer.tell("close")
    wait_for(lambda: reconciled(broker, N), what="published == delivered (acknowledged)")


def test_bad_ack_mode_is_refused(broker: Any) -> None:
    with pytest.raises(ConfigError):
        Consumer(TOPIC, socket_path=broker.socket, ack="sometimes")
    assert broker.stats()["consumers"] == []


def test_manual_ack_holds_the_position_until_acknowledged(broker: Any) -> None:
    """With "manual" the broker's lag counts what was received but not acknowledged;
    ``ack()`` releases it. With "auto" ``ack()`` is harmless."""
    with (
        Consumer(TOPIC, socket_path=broker.socket, ack="manual", group="m") as c,
        Consumer(TOPIC, socket_path=broker.socket, group="a") as auto,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish_many(TOPIC, [bytes(16)] * 10)
        assert len(c.recv_many(10, timeout=5.0)) == 10
        assert len(auto.recv_many(10, timeout=5.0)) == 10
        assert lag_of(broker, c.state.pid) == 10  # same pid: both consumers are ours
        c.ack()
        auto.ack()
        wait_for(lambda: all(e["lag"] == 0 for e in broker.stats()["consumers"]), what="lag 0")
        assert c.redelivered == auto.redelivered == 0
