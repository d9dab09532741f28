"""Routing end to end: fanout, queue groups, topic isolation, refusals, batch and V2 APIs.

Each test runs a real broker, producers and consumers in their own processes, and
checks every message by content (see ``broker_workers``).
"""

from __future__ import annotations

import pytest
from broker_helpers import (
    BrokerProcess,
    Clients,
    Processes,
    expect_everything,
    expect_exactly_once,
    run_stream,
    seqs_of,
    stop_consumers,
    topic_stats,
    wait_for,
)
from broker_workers import ProducerPlan, check_payload, make_message, make_payload

from mycelium import Consumer, Producer
from mycelium.errors import MessageTooLarge, UnknownTopic
from mycelium.protocol import InvalidMagic, RelayDomain

FANOUT_MESSAGES = 20_000
QUEUE_MESSAGES = 15_000


def test_fanout_every_consumer_gets_every_message(broker: BrokerProcess, procs: Processes) -> None:
    clients = Clients(procs)
    consumers = clients.consumers(broker.socket, "market_data", ["c1", "c2", "c3"])
    producers = [
        clients.producer(ProducerPlan(broker.socket, "market_data", tag, FANOUT_MESSAGES))
        for tag in (1, 2)
    ]
    for report in run_stream(consumers, producers):
        expect_everything(report, {1: FANOUT_MESSAGES, 2: FANOUT_MESSAGES})
    topic = topic_stats(broker.stats(), "market_data")
    assert topic["published"] == 2 * FANOUT_MESSAGES
    assert topic["delivered"] == 3 * 2 * FANOUT_MESSAGES


def test_queue_group_delivers_each_message_once(broker: BrokerProcess, procs: Processes) -> None:
    clients = Clients(procs)
    consumers = clients.consumers(broker.socket, "execution", ["q1", "q2", "q3"])
    producers = [
        clients.producer(ProducerPlan(broker.socket, "execution", tag, QUEUE_MESSAGES))
        for tag in (1, 2)
    ]
    reports = run_stream(consumers, producers)
    expect_exactly_once(reports, {1: QUEUE_MESSAGES, 2: QUEUE_MESSAGES})
    for r in reports:  # the work is shared, not all sent to one member
        assert sum(len(s) for s in seqs_of(r["seqs"]).values()) > QUEUE_MESSAGES // 10


def test_two_groups_on_one_queue_topic_each_get_everything(
    broker: BrokerProcess, procs: Processes
) -> None:
    clients = Clients(procs)
    alpha = clients.consumers(broker.socket, "execution", ["a1", "a2"], group="alpha")
    beta = clients.consumers(broker.socket, "execution", ["b1", "b2"], group="beta")
    producer = clients.producer(ProducerPlan(broker.socket, "execution", 1, QUEUE_MESSAGES))
    reports = run_stream(alpha + beta, [producer])
    expect_exactly_once(reports[:2], {1: QUEUE_MESSAGES})
    expect_exactly_once(reports[2:], {1: QUEUE_MESSAGES})


@pytest.mark.parametrize("topic", ["market_data", "execution"])
def test_late_subscriber_gets_what_is_published_after_it_joined(
    broker: BrokerProcess, procs: Processes, topic: str
) -> None:
    """Fanout: the late consumer gets exactly the rest of the stream. Queue: it joins the
    group, shares the rest, and the group still gets every message once."""
    clients = Clients(procs)
    n, joined_at = 20_000, 8_000
    (early,) = clients.consumers(broker.socket, topic, ["early"])
    producer = clients.producer(ProducerPlan(broker.socket, topic, 1, n, pauses=(joined_at,)))
    producer.go()
    assert producer.report("paused") == joined_at
    (late,) = clients.consumers(broker.socket, topic, ["late"])
    producer.go()
    producer.report("done")
    reports = stop_consumers([early, late])
    late_seqs = seqs_of(reports[1]["seqs"])[1]
    if topic == "market_data":
        expect_everything(reports[0], {1: n})
        assert late_seqs == list(range(joined_at, n))
    else:
        expect_exactly_once(reports, {1: n})
        assert late_seqs and min(late_seqs) >= joined_at


def test_recv_many_does_not_starve_a_lane(broker: BrokerProcess) -> None:
    """A lane that always has a full batch waiting must not keep the reader from the
    others (their producers would be held back)."""
    with (
        Consumer("signals", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as busy,
        Producer(socket_path=broker.socket) as quiet,
    ):
        busy.publish_many("signals", [make_payload(1, s) for s in range(100)])
        quiet.publish_many("signals", [make_payload(2, s) for s in range(100)])
        got: list[tuple[int, int]] = []
        for round_ in range(4):
            got += [check_payload(d) for d in c.recv_many(50, timeout=5.0)]
            more = range(100 + 50 * round_, 150 + 50 * round_)  # busy stays a batch ahead
            busy.publish_many("signals", [make_payload(1, s) for s in more])
        quiet_seqs = [seq for tag, seq in got if tag == 2]
        assert len(quiet_seqs) >= 50
        assert quiet_seqs == list(range(len(quiet_seqs)))


def test_consumer_iterates_blocking_between_messages(
    broker: BrokerProcess, procs: Processes
) -> None:
    clients = Clients(procs)
    producer = clients.producer(ProducerPlan(broker.socket, "signals", 2, 5_000))
    producer.report("ready")
    got = []
    with Consumer("signals", socket_path=broker.socket) as c:
        producer.go()
        for payload in c:
            got.append(check_payload(payload))
            if len(got) == 5_000:
                break
    assert got == [(2, seq) for seq in range(5_000)]
    producer.report("done")


def test_topics_are_isolated(broker: BrokerProcess, procs: Processes) -> None:
    clients = Clients(procs)
    topics = {"market_data": 1, "signals": 2, "execution": 3}
    consumers = [clients.consumers(broker.socket, topic, [f"on_{topic}"])[0] for topic in topics]
    producers = [
        clients.producer(ProducerPlan(broker.socket, topic, tag, 5_000 * tag))
        for topic, tag in topics.items()
    ]
    reports = run_stream(consumers, producers)
    for report, tag in zip(reports, topics.values(), strict=True):
        expect_everything(report, {tag: 5_000 * tag})


@pytest.mark.parametrize("topic", ["signals", "execution"])
def test_oversize_publish_is_refused_and_writes_nothing(
    broker: BrokerProcess, procs: Processes, topic: str
) -> None:
    clients = Clients(procs)
    limit = topic_stats(broker.stats(), topic)["max_message_size"]
    with Producer(socket_path=broker.socket) as p:
        with pytest.raises(MessageTooLarge):  # refused even with nobody to deliver to
            p.publish(topic, make_payload(7, 0, limit + 1))
        (consumer,) = clients.consumers(broker.socket, topic, ["c"])
        p.publish(topic, make_payload(7, 0))
        with pytest.raises(MessageTooLarge) as exc:
            p.publish(topic, make_payload(7, 1, limit + 1))
        assert (exc.value.size, exc.value.max_size) == (limit + 1, limit)
        with pytest.raises(MessageTooLarge):
            p.publish_many(topic, [make_payload(7, 1), make_payload(7, 1, limit + 1)])
        p.publish(topic, make_payload(7, 1, limit))  # exactly the limit is fine
        p.publish(topic, make_payload(7, 2))
    consumer.go()
    expect_everything(consumer.report("done"), {7: 3})
    assert topic_stats(broker.stats(), topic)["published"] == 3


def test_unknown_topic_is_refused(broker: BrokerProcess) -> None:
    with Producer(socket_path=broker.socket) as p:
        with pytest.raises(UnknownTopic) as exc:
            p.publish("no_such_topic", b"x")
        assert exc.value.topic == "no_such_topic"
        with pytest.raises(UnknownTopic):
            p.publish_many("no_such_topic", [b"x"])
        p.publish("signals", b"still works")
    with pytest.raises(UnknownTopic) as exc2:
        Consumer("no_such_topic", socket_path=broker.socket)
    assert exc2.value.topic == "no_such_topic"
    stats = broker.stats()
    assert {t["name"] for t in stats["topics"]} == {"market_data", "signals", "execution"}
    assert stats["consumers"] == []


def test_publish_many_and_recv_many(broker: BrokerProcess, procs: Processes) -> None:
    clients = Clients(procs)
    consumers = clients.consumers(broker.socket, "market_data", ["m1", "m2"], batch=333)
    producer = clients.producer(
        ProducerPlan(broker.socket, "market_data", 4, FANOUT_MESSAGES, batch=250)
    )
    for report in run_stream(consumers, [producer]):
        expect_everything(report, {4: FANOUT_MESSAGES})


def test_recv_one_at_a_time(broker: BrokerProcess, procs: Processes) -> None:
    clients = Clients(procs)
    consumers = clients.consumers(broker.socket, "execution", ["r1", "r2"], batch=1)
    producer = clients.producer(ProducerPlan(broker.socket, "execution", 5, 4_000, batch=100))
    expect_exactly_once(run_stream(consumers, [producer]), {5: 4_000})


def test_publish_message_routes_by_relay_domain(broker: BrokerProcess, procs: Processes) -> None:
    clients = Clients(procs)
    domains = {
        "market_data": RelayDomain.MARKET_DATA,
        "signals": RelayDomain.SIGNAL,
        "execution": RelayDomain.EXECUTION,
    }
    consumers = [
        clients.consumers(
            broker.socket, topic, [f"v2_{topic}"], messages=True, domain=int(d), batch=b
        )[0]
        for (topic, d), b in zip(domains.items(), (1, 500, 1), strict=True)
    ]
    # Tags double as Protocol V2 source ids: BINANCE=1, KRAKEN=2, POLYGON=4.
    producers = [
        clients.producer(ProducerPlan(broker.socket, "", tag, 3_000, domain=int(d)))
        for tag, d in zip((1, 2, 4), domains.values(), strict=True)
    ]
    reports = run_stream(consumers, producers)
    for report, tag in zip(reports, (1, 2, 4), strict=True):
        expect_everything(report, {tag: 3_000})


def test_publish_message_refuses_what_it_cannot_route(broker: BrokerProcess) -> None:
    with Producer(socket_path=broker.socket) as p:
        with pytest.raises(UnknownTopic):
            p.publish_message(make_message(RelayDomain.SYSTEM, 1, 0))
        bad = bytearray(make_message(RelayDomain.SIGNAL, 1, 0))
        bad[0] ^= 0xFF
        with pytest.raises(InvalidMagic):
            p.publish_message(bytes(bad))
    assert all(t["published"] == 0 for t in broker.stats()["topics"])


def test_clean_close_releases_every_segment(broker: BrokerProcess) -> None:
    """Clients that close leave nothing behind once the broker stops (the fixture checks
    /dev/shm); while the broker runs, closed clients' lanes and states are already gone."""
    consumers = [Consumer(t, socket_path=broker.socket) for t in ("market_data", "execution")]
    with Producer(socket_path=broker.socket) as p:
        for topic in ("market_data", "execution"):
            p.publish_many(topic, [make_payload(1, s) for s in range(100)])
    for c in consumers:
        assert len(c.recv_many(1000, timeout=1.0)) == 100
        c.close()
    registry = f"/myc-{broker.broker_id}-R."
    wait_for(
        lambda: [n[: len(registry)] for n in broker.leftovers()] == [registry],
        what="only the registry",
    )
    assert broker.stop() == 0
    assert broker.leftovers() == []
