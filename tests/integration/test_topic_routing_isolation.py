"""Topic routing and isolation across the original plan's three topics.

Two producer processes per topic publish numbered streams on market_data and signals
(fanout) and execution (queue), all at once. Each tag belongs to one topic, so a message
that leaks into another topic shows up as foreign there. What must hold:

* every market_data and signals consumer gets its topic's streams whole, in order, and
  nothing else;
* the two members of execution's group "default" share its streams: each message goes
  to exactly one of them, each member sees each producer's messages in order;
* a consumer in a second group "audit" gets its own copy of every execution message;
* the broker's stats count what was published and delivered per topic.
"""

from __future__ import annotations

from integration_env import (
    BrokerProcess,
    Clients,
    Processes,
    expect_whole_stream,
    topic_stats,
    wait_for,
)
from integration_workers import ConsumerSpec, ProducerSpec

MESSAGES = 3000
TAGS = {"market_data": (1, 2), "signals": (11, 12), "execution": (21, 22)}
SIZES = {"market_data": 200, "signals": 96, "execution": 64}
#: signals is published one message at a time, the others with publish_many.
BATCHES = {"market_data": 100, "signals": 1, "execution": 100}


def test_each_topic_reaches_its_consumers_and_no_other(
    broker: BrokerProcess, procs: Processes
) -> None:
    clients = Clients(procs)
    sock = broker.socket
    fanout = [
        clients.consumer(ConsumerSpec(sock, topic, TAGS[topic]), f"{topic} consumer {i}")
        for topic in ("market_data", "signals")
        for i in range(2)
    ]
    member = ConsumerSpec(
        sock, "execution", TAGS["execution"], group="default", ends=(), contiguous=False,
        keep_seqs=True,
    )  # fmt: skip
    group = [clients.consumer(member, f"execution default member {i}") for i in range(2)]
    audit = clients.consumer(
        ConsumerSpec(sock, "execution", TAGS["execution"], group="audit"), "execution audit"
    )
    Clients.wait_ready(*fanout, *group, audit)

    producers = [
        clients.producer(
            ProducerSpec(sock, topic, tag, count=MESSAGES, size=SIZES[topic], batch=BATCHES[topic])
        )
        for topic, tags in TAGS.items()
        for tag in tags
    ]
    for p in producers:
        assert p.result()["sent"] == MESSAGES

    for c in [*fanout, audit]:
        report = c.result()
        for tag in report["counts"]:
            expect_whole_stream(report, tag, MESSAGES)

    wait_for(lambda: sum(c.count for c in group) == 2 * MESSAGES, 30, "the group to drain")
    for c in group:
        c.stop()
    members = [c.result() for c in group]
    for tag in TAGS["execution"]:
        shares = [m["seqs"][tag] for m in members]
        assert sorted(shares[0] + shares[1]) == list(range(MESSAGES)), f"producer {tag}"
        assert all(shares), f"one member got none of producer {tag}: no sharing"
    for m in members:
        assert m["disorder"] == [] and m["damaged"] == [] and m["foreign"] == 0

    frames = 2 * (MESSAGES + 1)  # two producers per topic, each stream ends with END
    for topic in ("market_data", "signals"):
        wait_for(
            lambda t=topic: topic_stats(broker, t)["delivered"] == 2 * frames,
            10,
            f"{topic} stats to count two consumers' deliveries",
        )
        assert topic_stats(broker, topic)["published"] == frames
