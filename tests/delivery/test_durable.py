"""Durable consumers: the position outlives the process; producers keep holding for it
until it returns, it is deleted, or its topic's ``durable_ttl_s`` runs out."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from delivery_kit import Clients
from delivery_workers import ConsumerPlan, number_of, numbered
from harness import wait_for

from mycelium import Consumer, Producer
from mycelium.errors import BackpressureTimeout, LimitExceeded

TOPIC = "signals"


def durable_entry(broker: Any, name: str) -> dict[str, Any] | None:
    return next((c for c in broker.stats()["consumers"] if c.get("durable") == name), None)


def topic_of(broker: Any, name: str) -> dict[str, Any]:
    return next(t for t in broker.stats()["topics"] if t["name"] == name)


def test_durable_consumer_resumes_after_its_last_message(broker: Any) -> None:
    """Closed after 400 of 1 000, away while 1 000 more are published: the next process
    of the name gets exactly 400..1 999; status lists it, away, with its lag."""
    with Producer(socket_path=broker.socket) as p:
        c = Consumer(TOPIC, socket_path=broker.socket, durable="portfolio")
        p.publish_many(TOPIC, [numbered(s) for s in range(1_000)])
        first = [number_of(d) for d in c.recv_many(400, timeout=5.0)]
        c.close()
        p.publish_many(TOPIC, [numbered(s) for s in range(1_000, 2_000)])
        entry = durable_entry(broker, "portfolio")
        assert entry is not None and not entry["alive"] and entry["lag"] == 1_600
        with Consumer(TOPIC, socket_path=broker.socket, durable="portfolio") as again:
            rest: list[int] = []
            while len(rest) < 1_600:
                rest += [number_of(d) for d in again.recv_many(1_000, timeout=5.0)]
            assert first == list(range(400))
            assert rest == list(range(400, 2_000))
            with pytest.raises(LimitExceeded):  # one live process per name
                Consumer(TOPIC, socket_path=broker.socket, durable="portfolio")
    entry = durable_entry(broker, "portfolio")
    assert entry is not None and not entry["alive"] and entry["lag"] == 0
    out = subprocess.run(
        [sys.executable, "-m", "mycelium", "consumer", "delete", "portfolio",
         "--socket", broker.socket],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    wait_for(lambda: durable_entry(broker, "portfolio") is None, what="the durable deleted")


def test_durable_killed_and_restarted_ten_times_under_a_stream(
    broker: Any, clients: Clients
) -> None:
    """SIGKILLed and restarted 10 times while 20 000 msg/s are published: nothing lost,
    and the only duplicates are messages received but not acknowledged before a kill."""
    n, rate, take = 60_000, 20_000, 2_050
    kw: dict[str, Any] = {"durable": "fills", "ack": "manual", "ack_every": 100}
    worker = clients.consumer(ConsumerPlan(broker.socket, TOPIC, "d0", take=take, **kw))
    producer = clients.producer(broker.socket, TOPIC, n, rate)  # after it: it owes all
    parts: list[list[int]] = []
    unacked: Counter[int] = Counter()
    for k in range(1, 11):
        got = worker.report("took")
        parts.append(got)
        unacked.update(got[len(got) - len(got) % 100 :])  # after its last ack
        worker.kill()
        wait_for(lambda: not durable_entry(broker, "fills")["alive"], what="noticed away")  # type: ignore[index]
        plan = ConsumerPlan(broker.socket, TOPIC, f"d{k}", take=take if k < 10 else 0, **kw)
        worker = clients.consumer(plan)
    producer.report("published")
    worker.tell("stop")
    parts.append(worker.report("done")["seqs"])
    counts = Counter(s for part in parts for s in part)
    missing = [s for s in range(n) if s not in counts]
    assert not missing, f"{len(missing)} lost, first {missing[:10]}"
    extra = {s: k - 1 for s, k in counts.items() if k > 1}
    assert all(unacked[s] >= k for s, k in extra.items()), "a duplicate that was acknowledged"
    for part in parts:
        assert part == sorted(part), "one lane: each incarnation gets its messages in order"
    producer.tell("close")


TTL_CONFIG = """
[[topics]]
name = "held"
routing = "fanout"
max_message_size = 1024
lane_bytes = 65536
backpressure_timeout_ms = 200
durable_ttl_s = 1
"""


def test_absent_durable_past_its_ttl_stops_holding_producers(make_broker: Any) -> None:
    """Away, the durable consumer holds the producer back (BackpressureTimeout once the
    ring is full); past its TTL it is dropped, its unread messages counted as lost."""
    broker = make_broker(TTL_CONFIG)
    Consumer("held", socket_path=broker.socket, durable="slow").close()
    with Producer(socket_path=broker.socket) as p:
        sent = 0
        with pytest.raises(BackpressureTimeout):
            while True:
                p.publish("held", numbered(sent))
                sent += 1
        wait_for(lambda: durable_entry(broker, "slow") is None, what="the durable dropped")
        p.publish("held", numbered(sent))  # no longer held back
        sent += 1
    topic = topic_of(broker, "held")
    assert topic["published"] == sent
    assert topic["dropped"] == sent - 1
    assert "dropped durable consumer slow" in broker.log()


def test_queue_durable_member_gets_its_own_backlog_back(broker: Any) -> None:
    """On a queue topic an absent durable member's lane is not handed to the group: its
    producer keeps filling it, and the member gets all of it when it returns."""
    with Producer(socket_path=broker.socket) as p:
        c = Consumer("execution", socket_path=broker.socket, group="g", durable="orders")
        p.publish_many("execution", [numbered(s) for s in range(100)])
        first = [number_of(d) for d in c.recv_many(40, timeout=5.0)]
        c.close()
        with Consumer("execution", socket_path=broker.socket, group="g") as other:
            p.publish_many("execution", [numbered(s) for s in range(100, 200)])
            shared = [number_of(d) for d in other.recv_many(200, timeout=1.0)]
            with Consumer(
                "execution", socket_path=broker.socket, group="g", durable="orders"
            ) as again:
                rest: list[int] = []
                while batch := again.recv_many(200, timeout=0.5):
                    rest += [number_of(d) for d in batch]
    assert first == list(range(40))
    assert not set(shared) & set(range(100)), "the durable's backlog stayed its own"
    assert sorted(first + shared + rest) == list(range(200))
    assert rest[:60] == list(range(40, 100))
