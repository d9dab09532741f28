"""Failures end to end: coordinator crash and restart, dead clients, backpressure.

The data plane must not care about the coordinator, a dead client must cost nobody a
message, and a reader that does not read must hold a producer back only within the
topic's bound.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from broker_helpers import (
    SMALL_RINGS,
    BrokerProcess,
    Clients,
    Processes,
    delivery_counts,
    expect_everything,
    expect_exactly_once,
    mycelium,
    seqs_of,
    status_json,
    stop_consumers,
    topic_stats,
    wait_for,
)
from broker_workers import HEAD, SIZE_SPREAD, ConsumerPlan, ProducerPlan, make_payload, payload_size

from mycelium import Consumer, Producer
from mycelium.config import frame_bytes
from mycelium.errors import BackpressureTimeout

RESTART_MESSAGES = 30_000
MAX_FRAME_BYTES = frame_bytes(HEAD.size + SIZE_SPREAD)


def consumer_stats(broker: BrokerProcess, pid: int) -> dict[str, Any] | None:
    """The coordinator's view of the consumer in process ``pid`` (None once forgotten)."""
    return next((c for c in broker.stats()["consumers"] if c["pid"] == pid), None)


def rings_full(broker: BrokerProcess, topic: str, lanes: int = 1, read: int = 0) -> bool:
    """Whether ``lanes`` rings of ``topic``, fed by producer 1 and read ``read`` messages
    far, are (about) too full for the next message: the unread frames fill each but for
    three maximum frames (the next one, and what wraps may leave unused)."""
    stats = topic_stats(broker.stats(), topic)
    unread = sum(frame_bytes(payload_size(1, s)) for s in range(read, stats["published"]))
    return unread > lanes * (stats["lane_bytes"] - 3 * MAX_FRAME_BYTES)


def noticed_dead(broker: BrokerProcess, pid: int) -> bool:
    entry = consumer_stats(broker, pid)
    return entry is None or not entry["alive"]


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_coordinator_restart_mid_stream_loses_nothing(
    broker: BrokerProcess, procs: Processes, how: str
) -> None:
    """Clients exchange messages while the coordinator is down (SIGKILL, or SIGTERM with
    clients alive), a new one adopts the segments, the control channels reconnect."""
    clients = Clients(procs)
    n = RESTART_MESSAGES
    fanout_progress = clients.counter()
    fanout = [clients.consumer(ConsumerPlan(broker.socket, "market_data", "f1"), fanout_progress)]
    fanout += clients.consumers(broker.socket, "market_data", ["f2"])
    group = clients.consumers(broker.socket, "execution", ["q1", "q2"])
    fanout[0].report("ready")
    producers = [
        clients.producer(ProducerPlan(broker.socket, topic, tag, n, pauses=(n // 3, 2 * n // 3)))
        for topic, tag in (("market_data", 1), ("execution", 2))
    ]
    workers = fanout + group + producers
    for p in producers:
        p.go()
        p.report("paused")

    if how == "sigkill":
        broker.kill()
    else:
        assert broker.stop() == 0
    assert broker.leftovers(), "the segments must outlive the coordinator"
    down = mycelium("status", "--socket", broker.socket)
    assert down.returncode != 0

    for p in producers:  # published while no coordinator runs
        p.go()
        p.report("paused")
    wait_for(lambda: fanout_progress.value >= 2 * n // 3, what="delivery while down")

    broker.start()
    wait_for(
        lambda: broker.stats()["broker"]["connections"] >= len(workers) + 1,
        what="every client's control channel back",
    )
    stats = status_json(broker)
    assert {c["pid"] for c in stats["consumers"]} == {w.pid for w in fanout + group}
    assert all(c["alive"] for c in stats["consumers"])

    for p in producers:
        p.go()
        assert p.report("done") == {"published": n, "reconnects": 1}
    reports = stop_consumers(fanout + group)
    for r in reports[:2]:
        expect_everything(r, {1: n})
        assert r["reconnects"] == 1
    expect_exactly_once(reports[2:], {2: n})
    assert all(r["reconnects"] == 1 for r in reports[2:])


@pytest.mark.parametrize("then", ["publishing", "closing"])
@pytest.mark.parametrize("leaves", ["sigkill", "close"])
def test_departed_queue_consumer_messages_go_to_the_group(
    broker: BrokerProcess, procs: Processes, leaves: str, then: str, record_property: Any
) -> None:
    """At-least-once: what a member had not read when it was SIGKILLed (or closed) is
    delivered to the others, whether its producer goes on publishing or just closes."""
    clients = Clients(procs)
    n = 20_000
    victim = clients.consumer(ConsumerPlan(broker.socket, "execution", "victim", pause_after=500))
    others = clients.consumers(broker.socket, "execution", ["q1", "q2"])
    victim.report("ready")
    pauses = (n // 2,) if then == "publishing" else ()
    producer = clients.producer(
        ProducerPlan(broker.socket, "execution", 1, n, pauses=pauses, hold=then == "closing")
    )
    producer.go()
    victim_seqs = seqs_of(victim.report("paused"))
    producer.report("paused" if then == "publishing" else "done")
    lag = consumer_stats(broker, victim.pid)
    assert lag is not None and lag["lag"] > 0, "the victim must die with unread messages"

    if leaves == "sigkill":
        os.kill(victim.pid, signal.SIGKILL)
    else:
        victim.go()  # it closes its Consumer and exits
    victim.proc.join(10)
    wait_for(lambda: noticed_dead(broker, victim.pid), what="the coordinator to notice")
    producer.go()  # publishing: the rest of the stream; closing: close
    if then == "publishing":
        producer.report("done")
    else:
        producer.proc.join(30)
    reports = stop_consumers(others)

    counts = delivery_counts([victim_seqs, *(seqs_of(r["seqs"]) for r in reports)])
    missing = [s for s in range(n) if (1, s) not in counts]
    assert not missing, f"{len(missing)} messages lost, first {missing[:10]}"
    assert set(counts) == {(1, s) for s in range(n)}
    duplicates = sum(c - 1 for c in counts.values())
    record_property("duplicates", duplicates)
    print(f"redelivery after a queue consumer's {leaves}: {duplicates} duplicates")
    wait_for(lambda: consumer_stats(broker, victim.pid) is None, what="the victim forgotten")


def test_unread_messages_of_a_groups_last_member_wait_for_the_next(
    broker: BrokerProcess, procs: Processes
) -> None:
    """The group's only member dies with 4 700 unread: they wait in the producer until a
    new member joins, and reach it before anything newer. Messages published while the
    group had no member at all belong to no group and go nowhere (as on any topic)."""
    clients = Clients(procs)
    victim = clients.consumer(
        ConsumerPlan(broker.socket, "execution", "victim", group="solo", pause_after=300)
    )
    victim.report("ready")
    producer = clients.producer(
        ProducerPlan(broker.socket, "execution", 1, 7_000, pauses=(5_000, 6_000))
    )
    producer.go()
    assert seqs_of(victim.report("paused")) == {1: list(range(300))}
    producer.report("paused")
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.join(10)
    wait_for(lambda: noticed_dead(broker, victim.pid), what="the coordinator to notice")
    producer.go()
    producer.report("paused")  # 5 000..5 999 published to an empty group
    (heir,) = clients.consumers(broker.socket, "execution", ["heir"], group="solo")
    producer.go()
    producer.report("done")
    (report,) = stop_consumers([heir])
    assert seqs_of(report["seqs"]) == {1: [*range(300, 5_000), *range(6_000, 7_000)]}


def test_queue_consumer_dying_while_the_coordinator_is_down(
    broker: BrokerProcess, procs: Processes
) -> None:
    """The next coordinator finds the member dead and its producer hands its unread
    messages to the rest of the group."""
    clients = Clients(procs)
    n = 20_000
    victim = clients.consumer(ConsumerPlan(broker.socket, "execution", "victim", pause_after=300))
    others = clients.consumers(broker.socket, "execution", ["q1", "q2"])
    victim.report("ready")
    producer = clients.producer(ProducerPlan(broker.socket, "execution", 1, n, pauses=(n // 2,)))
    producer.go()
    victim_seqs = seqs_of(victim.report("paused"))
    producer.report("paused")
    broker.kill()
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.join(10)
    broker.start()
    wait_for(lambda: noticed_dead(broker, victim.pid), what="the new coordinator to notice")
    producer.go()
    producer.report("done")
    reports = stop_consumers(others)
    counts = delivery_counts([victim_seqs, *(seqs_of(r["seqs"]) for r in reports)])
    assert set(counts) == {(1, s) for s in range(n)}


def test_killed_producer_lane_drains_and_retires(broker: BrokerProcess, procs: Processes) -> None:
    """Consumers get every message a SIGKILLed producer published, in order; the other
    producer goes on; the coordinator then forgets the dead one and retires its lane."""
    clients = Clients(procs)
    consumers = clients.consumers(broker.socket, "market_data", ["c1", "c2"])
    progress = clients.counter()
    victim = clients.producer(ProducerPlan(broker.socket, "market_data", 1, 500_000), progress)
    survivor = clients.producer(ProducerPlan(broker.socket, "market_data", 2, 20_000, hold=True))
    victim.report("ready")
    victim.go()
    survivor.go()
    wait_for(lambda: progress.value >= 5_000, what="the victim to be publishing")
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.join(10)
    published = progress.value  # the publish in flight may have landed too
    assert published < 500_000, "the victim must die mid-stream"
    survivor.report("done")

    def victim_gone() -> bool:
        stats = broker.stats()
        return victim.pid not in {p["pid"] for p in stats["producers"]} and (
            topic_stats(stats, "market_data")["lanes"] == 1
        )

    wait_for(victim_gone, what="the dead producer forgotten and its lane retired")
    reports = stop_consumers(consumers)
    victim_counts = {len(seqs_of(r["seqs"])[1]) for r in reports}
    assert len(victim_counts) == 1, "both consumers must see the same prefix"
    (got,) = victim_counts
    assert published <= got <= published + 1
    for r in reports:
        expect_everything(r, {1: got, 2: 20_000})
    survivor.go()

    def totals() -> tuple[int, int, int]:
        topic = topic_stats(broker.stats(), "market_data")
        return topic["published"], topic["delivered"], topic["consumers"]

    # The counts survive the retired lane and the departed consumers.
    n = got + 20_000
    wait_for(lambda: totals() == (n, 2 * n, 0), what="the totals after everyone left")


def test_dead_fanout_consumer_stops_holding_the_producer(
    make_broker: Callable[..., BrokerProcess], procs: Processes
) -> None:
    clients = Clients(procs)
    broker = make_broker(SMALL_RINGS)
    n = 5_000
    (reader,) = clients.consumers(broker.socket, "patient", ["reader"])
    stuck = clients.consumer(ConsumerPlan(broker.socket, "patient", "stuck", pause_after=10))
    stuck.report("ready")
    producer = clients.producer(ProducerPlan(broker.socket, "patient", 1, n))
    producer.go()
    stuck.report("paused")
    wait_for(lambda: rings_full(broker, "patient", read=10), what="the stuck reader's ring to fill")
    killed_at = time.monotonic()
    os.kill(stuck.pid, signal.SIGKILL)
    producer.report("done")
    # The bound is 10 s: finishing well before it (a loaded box's margin) means it did not wait.
    assert time.monotonic() - killed_at < 7.0, "the producer waited out the bound"
    expect_everything(stop_consumers([reader])[0], {1: n})
    wait_for(lambda: consumer_stats(broker, stuck.pid) is None, what="the dead reader forgotten")


def test_queue_consumer_dying_on_a_full_lane_loses_nothing(
    make_broker: Callable[..., BrokerProcess], procs: Processes
) -> None:
    """Both members of a group stop reading and the producer blocks on their full lanes;
    one member is SIGKILLed. Its unread frames must stay until they are handed to the
    other (the writer must not stop gating on the dead reader and overwrite them), and
    the blocked publish must go to the other member instead."""
    clients = Clients(procs)
    broker = make_broker(SMALL_RINGS)
    n = 2_000
    victim = clients.consumer(ConsumerPlan(broker.socket, "narrow", "victim", pause_after=20))
    victim.report("ready")
    (other,) = clients.consumers(broker.socket, "narrow", ["other"])
    os.kill(other.pid, signal.SIGSTOP)
    try:
        producer = clients.producer(ProducerPlan(broker.socket, "narrow", 1, n))
        producer.go()
        victim_seqs = seqs_of(victim.report("paused"))
        wait_for(lambda: rings_full(broker, "narrow", 2, read=20), what="both lanes to fill")
        os.kill(victim.pid, signal.SIGKILL)
        wait_for(lambda: noticed_dead(broker, victim.pid), what="the coordinator to notice")
    finally:
        os.kill(other.pid, signal.SIGCONT)
    producer.report("done")
    (report,) = stop_consumers([other])
    counts = delivery_counts([victim_seqs, seqs_of(report["seqs"])])
    missing = [s for s in range(n) if (1, s) not in counts]
    assert not missing, f"{len(missing)} messages lost, first {missing[:10]}"


def test_queue_group_with_a_stuck_member_still_takes_messages(
    make_broker: Callable[..., BrokerProcess], procs: Processes
) -> None:
    """Both members stop (SIGSTOP) and the producer fills their lanes; one resumes. The
    publish waiting for room must take the lane that frees up, not wait out its bound
    on the stuck member's."""
    clients = Clients(procs)
    broker = make_broker(SMALL_RINGS)
    n = 3_000
    members = clients.consumers(broker.socket, "narrow", ["resumes", "stuck"])
    for m in members:
        os.kill(m.pid, signal.SIGSTOP)
    try:
        producer = clients.producer(ProducerPlan(broker.socket, "narrow", 1, n))
        producer.go()
        wait_for(lambda: rings_full(broker, "narrow", 2), what="both lanes to fill")
        os.kill(members[0].pid, signal.SIGCONT)
        producer.report("done")  # within the 3 s bound, or it reports BackpressureTimeout
    finally:
        for m in members:
            os.kill(m.pid, signal.SIGCONT)
    expect_exactly_once(stop_consumers(members), {1: n})


@pytest.mark.parametrize("topic", ["quick", "brief"])
def test_backpressure_times_out_writing_nothing(
    make_broker: Callable[..., BrokerProcess], procs: Processes, topic: str
) -> None:
    """A reader that does not read (SIGSTOP) makes publish fail after the topic's bound
    with nothing written: on the queue topic, with two groups, not even to the group
    that reads. Once it reads again, everything published arrives."""
    clients = Clients(procs)
    broker = make_broker(SMALL_RINGS)
    groups = ["reads", "sleeps"] if topic == "brief" else [None]
    consumers = [clients.consumers(broker.socket, topic, [f"c-{g}"], group=g)[0] for g in groups]
    sleeper = consumers[-1]
    os.kill(sleeper.pid, signal.SIGSTOP)
    try:
        with Producer(socket_path=broker.socket) as p:
            sent = 0
            while True:
                started = time.monotonic()
                try:
                    p.publish(topic, make_payload(1, sent))
                except BackpressureTimeout:
                    waited = time.monotonic() - started
                    break
                sent += 1
                assert sent < 1000, "an 8 KiB ring cannot take this much"
            assert 0.3 <= waited < 1.5
            assert topic_stats(broker.stats(), topic)["published"] == len(groups) * sent
            with pytest.raises(BackpressureTimeout) as exc:
                p.publish_many(topic, [make_payload(1, sent)])
            assert exc.value.published == 0  # type: ignore[attr-defined]
            assert topic_stats(broker.stats(), topic)["published"] == len(groups) * sent
            os.kill(sleeper.pid, signal.SIGCONT)
            for seq in range(sent, sent + 200):  # the refused one again, and more
                p.publish(topic, make_payload(1, seq))
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)
    for report in stop_consumers(consumers):
        expect_everything(report, {1: sent + 200})


def test_handles_closed_while_the_coordinator_is_down_are_released(
    make_broker: Callable[..., BrokerProcess], procs: Processes
) -> None:
    """A producer and a consumer closed (not exited) while no coordinator runs still say
    Goodbye to the next one; else a live process's closed consumer would hold every new
    fanout lane back and its segments would stay for as long as the process runs."""
    clients = Clients(procs)
    broker = make_broker(SMALL_RINGS)
    ghost_consumer = Consumer("patient", socket_path=broker.socket)
    ghost_producer = Producer(socket_path=broker.socket)
    ghost_producer.publish("patient", make_payload(9, 0))
    broker.kill()
    ghost_consumer.close()
    ghost_producer.close()
    broker.start()

    def released() -> bool:
        stats = broker.stats()
        return os.getpid() not in {c["pid"] for c in stats["consumers"]} | {
            p["pid"] for p in stats["producers"]
        }

    wait_for(released, what="the closed handles' Goodbye")
    (reader,) = clients.consumers(broker.socket, "patient", ["reader"])
    producer = clients.producer(ProducerPlan(broker.socket, "patient", 1, 5_000))
    producer.go()
    producer.report("done")
    expect_everything(stop_consumers([reader])[0], {1: 5_000})


@pytest.mark.stress
def test_repeated_coordinator_crashes_under_sustained_traffic(
    broker: BrokerProcess, procs: Processes
) -> None:
    """Ten times the coordinator goes down (SIGKILL or SIGTERM) or comes back
    while 600 000 messages flow; nothing may be lost, duplicated or reordered."""
    clients = Clients(procs)
    n, legs = 300_000, 11
    fanout = clients.consumers(broker.socket, "market_data", ["f1", "f2", "f3"], batch=2_000)
    group = clients.consumers(broker.socket, "execution", ["q1", "q2"], batch=2_000)
    pauses = tuple(n * k // legs for k in range(1, legs))
    producers = [
        clients.producer(ProducerPlan(broker.socket, topic, tag, n, batch=100, pauses=pauses))
        for topic, tag in (("market_data", 1), ("execution", 2))
    ]
    up = True
    for k in range(legs):
        for p in producers:
            p.go()
        if k == legs - 1:
            break
        for p in producers:
            p.report("paused")
        if up and k % 4 == 0:
            broker.kill()
        elif up:
            assert broker.stop() == 0
        else:
            broker.start()
        up = not up
    assert up
    for p in producers:
        assert p.report("done")["published"] == n
    wait_for(
        lambda: broker.stats()["broker"]["connections"] == len(fanout + group) + 1,
        what="every control channel back",
    )
    reports = stop_consumers(fanout + group)
    for r in reports[:3]:
        expect_everything(r, {1: n})
    expect_exactly_once(reports[3:], {2: n})


@pytest.mark.stress
def test_queue_group_churn_loses_nothing(broker: BrokerProcess, procs: Processes) -> None:
    """Members join and are SIGKILLed leg after leg while a stream flows; every message
    reaches the group at least once."""
    clients = Clients(procs)
    n, legs = 200_000, 8
    survivors = clients.consumers(broker.socket, "execution", ["s1", "s2"])
    pauses = tuple(n * k // legs for k in range(1, legs))
    producer = clients.producer(ProducerPlan(broker.socket, "execution", 1, n, pauses=pauses))
    victims_read: list[dict[int, list[int]]] = []
    for leg in range(legs - 1):
        victim = clients.consumer(
            ConsumerPlan(broker.socket, "execution", f"victim{leg}", pause_after=200)
        )
        victim.report("ready")
        producer.go()
        victims_read.append(seqs_of(victim.report("paused")))
        producer.report("paused")
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.join(10)
        wait_for(lambda v=victim: noticed_dead(broker, v.pid), what="the coordinator to notice")
    producer.go()
    producer.report("done")
    reports = stop_consumers(survivors)
    counts = delivery_counts([*victims_read, *(seqs_of(r["seqs"]) for r in reports)])
    assert set(counts) == {(1, s) for s in range(n)}
    print(f"group churn: {sum(c - 1 for c in counts.values())} duplicates")
