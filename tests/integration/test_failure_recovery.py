"""Failure recovery: the migration plan's reliability scenarios, with traffic flowing.

* The coordinator stops (gracefully, or killed) mid-stream: messages keep flowing through
  shared memory while it is down, a restarted coordinator adopts the segments, both
  clients reconnect, a new consumer can join, and nothing is lost or reordered.
* One of two producers is killed: the other's stream is untouched, the dead one's
  messages published before it died are all delivered, and the broker retires its lane.
* A consumer frozen with SIGSTOP holds its producer back for at most the topic's
  backpressure bound per publish (the publish then fails having written nothing); after
  SIGCONT every message arrives, in order.
* A frame whose length header is damaged in the ring is reported (CorruptFrame, once,
  counted in the consumer's state and the broker's stats), never delivered as data,
  and frames published afterwards flow.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from integration_env import (
    BrokerProcess,
    Clients,
    Processes,
    broker_config,
    consumer_stats,
    expect_whole_stream,
    producer_stats,
    topic_stats,
    wait_for,
)
from integration_workers import CORRUPTIONS, ConsumerSpec, ProducerSpec

from mycelium.shm.layout import frame_bytes

RATE_MSG_S = 2000


@pytest.mark.parametrize("how", ["graceful", "crash"])
def test_coordinator_graceful_or_crash_restart_keeps_every_message(
    broker: BrokerProcess, procs: Processes, how: str
) -> None:
    clients = Clients(procs)
    consumer = clients.consumer(ConsumerSpec(broker.socket, "market_data", (1,)))
    Clients.wait_ready(consumer)
    producer = clients.producer(
        ProducerSpec(broker.socket, "market_data", 1, rate=RATE_MSG_S, size=128, deadline_s=120)
    )
    wait_for(lambda: consumer.count >= 500, 20, "traffic")

    if how == "graceful":
        assert broker.stop() == 0
    else:
        broker.kill()
    assert broker.leftovers(), "the segments must stay while their clients run"
    received_at_stop = consumer.count
    wait_for(lambda: consumer.count >= received_at_stop + 1000, 20, "traffic while down")

    broker.start()
    # Our producer and consumer, plus the stats request's own connection.
    wait_for(lambda: broker.stats()["broker"]["connections"] >= 3, 20, "clients to reconnect")
    late = clients.consumer(
        ConsumerSpec(broker.socket, "market_data", (1,), from_start=False), "late consumer"
    )
    Clients.wait_ready(late)
    wait_for(lambda: late.count >= 200, 20, "the late consumer's first messages")

    producer.stop()
    produced = producer.result()
    assert produced["reconnects"] >= 1
    report = consumer.result()
    expect_whole_stream(report, 1, produced["sent"])
    assert report["reconnects"] >= 1
    expect_whole_stream(late.result(), 1, produced["sent"], joined_late=True)


def test_producer_failure_is_isolated(broker: BrokerProcess, procs: Processes) -> None:
    clients = Clients(procs)
    consumer = clients.consumer(ConsumerSpec(broker.socket, "market_data", (1, 2), ends=(2,)))
    Clients.wait_ready(consumer)
    victim, survivor = (
        clients.producer(ProducerSpec(broker.socket, "market_data", tag, rate=RATE_MSG_S))
        for tag in (1, 2)
    )
    wait_for(lambda: victim.count >= 1000 and survivor.count >= 1000, 20, "both streams")

    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.join(10)
    published_before_death = victim.count  # stored after each batch: at most one batch short
    wait_for(lambda: not producer_stats(broker, victim.pid), 20, "the broker to forget it")
    wait_for(lambda: topic_stats(broker, "market_data")["lanes"] == 1, 20, "its lane to retire")
    survivor_at_death = survivor.count
    wait_for(lambda: survivor.count >= survivor_at_death + 1000, 20, "the survivor to go on")

    survivor.stop()
    report = consumer.result()
    expect_whole_stream(report, 2, survivor.result()["sent"])
    batch = ProducerSpec.batch
    assert published_before_death <= report["counts"][1] <= published_before_death + batch


BOUND_MS = 1000
SMALL_RING = 1 << 16
STALL_SIZE = 256


def test_stopped_consumer_holds_its_producer_back_only_up_to_the_bound(
    make_broker: Callable[..., BrokerProcess], procs: Processes
) -> None:
    broker = make_broker(
        broker_config(
            market_data={
                "lane_bytes": SMALL_RING,
                "max_message_size": 4096,
                "backpressure_timeout_ms": BOUND_MS,
            }
        )
    )
    clients = Clients(procs)
    consumer = clients.consumer(ConsumerSpec(broker.socket, "market_data", (1,)))
    Clients.wait_ready(consumer)
    spec = ProducerSpec(broker.socket, "market_data", 1, count=20_000, size=STALL_SIZE, rate=5000)
    producer = clients.producer(spec)
    wait_for(lambda: consumer.count >= 1000, 20, "traffic")

    os.kill(consumer.pid, signal.SIGSTOP)
    try:
        # What the frozen reader has released to the producer (its stored cursor's count).
        released = consumer_stats(broker, consumer.pid)[0]["received"]
        wait_for(lambda: producer.events >= 2, 20, "two publishes to give up on the frozen reader")
        ring_frames = SMALL_RING // frame_bytes(STALL_SIZE)
        assert producer.count - released <= ring_frames, "overran the frozen reader"
    finally:
        os.kill(consumer.pid, signal.SIGCONT)

    produced = producer.result()
    assert produced["sent"] == 20_000
    bound_s = BOUND_MS / 1000
    assert len(produced["stalls"]) >= 2
    assert all(bound_s * 0.95 <= s <= bound_s + 1.0 for s in produced["stalls"]), produced["stalls"]
    expect_whole_stream(consumer.result(), 1, 20_000)


GOOD = 500
AFTER = 500
#: What CorruptFrame says for each kind of damage.
REASONS = {
    "length_over_max_message": "exceeds max_message",
    "length_past_cursor": "past the published cursor",
}


@pytest.mark.parametrize("batch", [1, 1000], ids=["recv", "recv_many"])
@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_frame_is_reported_not_delivered_and_later_frames_flow(
    broker: BrokerProcess, procs: Processes, how: str, batch: int
) -> None:
    clients = Clients(procs)
    consumer = clients.consumer(
        ConsumerSpec(broker.socket, "market_data", (1,), ends=(), batch=batch, hold=True)
    )
    Clients.wait_ready(consumer)
    producer = clients.corrupting_producer(
        ProducerSpec(broker.socket, "market_data", 1, count=AFTER), consumer, GOOD, how
    )
    wait_for(lambda: producer.count == GOOD + 1, 20, "the damaged frame")
    consumer.go()
    assert producer.result()["victim"] == GOOD

    wait_for(lambda: consumer.count == GOOD + AFTER, 20, "the frames after the damaged one")
    wait_for(lambda: consumer_stats(broker, consumer.pid)[0]["corrupt"] == 1, 10, "broker stats")
    consumer.stop()
    report = consumer.result()
    assert report["counts"] == {1: GOOD + AFTER}
    assert report["gaps"] == [(1, GOOD, GOOD + 1)]  # only the damaged frame is missing
    assert report["corrupt"] == 1
    (error,) = report["corrupt_errors"]
    assert REASONS[how] in error
    assert report["ended"] == [1]
    assert report["disorder"] == [] and report["damaged"] == [] and report["foreign"] == 0
