"""A consumer of several topics through a real broker: every receive, ack, the figures,
fairness under a flood, one doorbell for every topic, cleanup after a crash.

Forbidden outcomes: a message lost or delivered twice; a trickle topic starved by a
flooded one; a blocked consumer not woken by a publish on any of its topics; a refused
topic list that leaves a subscription or a segment behind; a killed multi-topic
consumer whose segments (doorbell included) outlive the sweep, or that still gates
producers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import threading
import time
from typing import Any

import numpy as np
import pytest

from mycelium import Consumer, Producer
from mycelium.aio import AsyncConsumer
from mycelium.client.admin import admin_request
from mycelium.client.control import ControlChannel
from mycelium.control.wire import DeleteDurable, Subscribe
from mycelium.errors import ConfigError, ReceiveTimeout, UnknownTopic
from mycelium.protocol import MessageBuilder, RelayDomain, SourceType
from tests.harness import wait_for

TOPICS = ["market_data", "signals"]
#: Flood and trickle payloads: a tag, the sequence, the publish time (CLOCK_MONOTONIC ns).
STAMP = struct.Struct("<QQ")
TRICKLE_N = 40
TRICKLE_GAP_S = 0.005
#: Flood messages published after a trickle message that may be read before it, for 9 in
#: 10 trickle messages (the stamp is taken just before the frame is written: a producer
#: descheduled in between lets the flood overtake; the round-robin bounds the rest) ...
OVERTAKE_MAX = {"recv": 64, "recv_many": 512}
#: ... and for every one: a fifth of the flood's ring (100,000), which a reader that
#: drained one lane before the next would exceed.
OVERTAKE_WORST = 20_000
SMALL_RINGS = """
[[topics]]
name = "market_data"
routing = "fanout"
buffer_size = 1000
[[topics]]
name = "signals"
routing = "fanout"
buffer_size = 1000
"""


def consumer_objects(broker: Any) -> list[str]:
    """The broker's consumer segments and doorbells still in /dev/shm."""
    return [n for n in broker.leftovers() if "-C" in n or "-D" in n]


def test_one_string_is_one_topic_and_a_list_is_many(broker: Any) -> None:
    with (
        Consumer("signals", socket_path=broker.socket) as one,
        Consumer(TOPICS, socket_path=broker.socket) as two,
    ):
        assert (one.topic, one.topics) == ("signals", ("signals",))
        assert (two.topic, two.topics) == ("market_data,signals", tuple(TOPICS))
        assert len({c["id"] for c in broker.stats()["consumers"]}) == 3
        with pytest.raises(ReceiveTimeout) as err:
            two.recv(timeout=0.01)
        assert err.value.topic == "market_data,signals"


@pytest.mark.parametrize(
    "topics",
    [[], ["signals", "signals"], ["signals", 7], b"signals", {"signals"}],
    ids=["empty", "duplicate", "not-str", "bytes", "set"],
)
def test_bad_topic_lists_are_refused_and_leave_nothing(broker: Any, topics: Any) -> None:
    with pytest.raises(ConfigError):
        Consumer(topics, socket_path=broker.socket)
    with pytest.raises(ConfigError):
        AsyncConsumer(topics, socket_path=broker.socket)
    assert broker.stats()["consumers"] == [] and consumer_objects(broker) == []


@pytest.mark.parametrize("durable", [None, "dur"])
def test_an_unknown_topic_leaves_nothing(broker: Any, durable: str | None) -> None:
    with pytest.raises(UnknownTopic) as err:
        Consumer(["signals", "nope"], socket_path=broker.socket, durable=durable)
    assert err.value.topic == "nope" and "signals" in err.value.known
    assert broker.stats()["consumers"] == [] and consumer_objects(broker) == []
    # Nothing held either: the durable name is free for a consumer of the known topic.
    with Consumer("signals", socket_path=broker.socket, durable=durable) as c:
        assert c.topics == ("signals",)


def trade_message(domain: RelayDomain, seq: int) -> bytes:
    builder = MessageBuilder(domain, SourceType.KRAKEN).sequence(seq).timestamp(seq)
    return builder.add_tlv(200, b"\x01" * 8).build()


def test_every_receive_reads_every_topic(broker: Any) -> None:
    """recv, recv_many, recv_message, recv_envelope, envelopes(), recv_view, recv_array,
    iteration and the figures, each across both topics."""
    word = struct.Struct("<Q")
    with (
        Consumer(TOPICS, socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):

        def both(make: Any) -> None:
            for t in TOPICS:
                p.publish(t, make(t))

        both(lambda t: t.encode())
        assert c.backlog == 2 and (c.lost, c.corrupt, c.redelivered) == (0, 0, 0)
        assert sorted([c.recv(timeout=5.0), c.recv(timeout=5.0)]) == [b"market_data", b"signals"]
        both(lambda t: t.encode() + b"-many")
        got = wait_for(lambda: c.recv_many(10), 5.0, "recv_many")
        got += c.recv_many(10, timeout=1.0) if len(got) < 2 else []
        assert sorted(got) == [b"market_data-many", b"signals-many"]
        p.publish_message(trade_message(RelayDomain.MARKET_DATA, 1))
        p.publish_message(trade_message(RelayDomain.SIGNAL, 2))
        seqs = {c.recv_message(timeout=5.0).header.sequence for _ in range(2)}
        assert seqs == {1, 2}
        both(lambda t: t.encode())
        envs = [c.recv_envelope(timeout=5.0) for _ in range(2)]
        assert {(e.topic, e.payload) for e in envs} == {(t, t.encode()) for t in TOPICS}
        both(lambda t: t.encode())
        it = c.envelopes()
        assert {next(it).topic for _ in range(2)} == set(TOPICS)
        both(lambda t: t.encode() + b"-view")
        views = []
        for _ in range(2):
            with c.recv_view(timeout=5.0) as view:
                views.append(bytes(view))
        assert sorted(views) == [b"market_data-view", b"signals-view"]
        p.publish("market_data", word.pack(1))
        p.publish("signals", word.pack(2))
        arr = c.recv_array(np.dtype("<u8"), 10, timeout=5.0)
        if len(arr) < 2:
            arr = np.concatenate([arr, c.recv_array(np.dtype("<u8"), 10, timeout=5.0)])
        assert sorted(arr.tolist()) == [1, 2]
        both(lambda t: t.encode() + b"-iter")
        seen = []
        for payload in c:
            seen.append(payload)
            if len(seen) == 2:
                break
        assert sorted(seen) == [b"market_data-iter", b"signals-iter"]
        assert c.backlog == 0 and (c.lost, c.corrupt) == (0, 0)


def test_manual_ack_covers_every_topic_and_durable_keeps_a_position_per_topic(
    broker: Any,
) -> None:
    """Acked: 3 per topic; read past the ack: 2 per topic. The next process of the name
    gets those 2 per topic again (4 redelivered), then the rest, nothing lost."""
    opts: dict[str, Any] = {"socket_path": broker.socket, "durable": "multi", "ack": "manual"}
    with Producer(socket_path=broker.socket) as p:
        c = Consumer(TOPICS, **opts)
        for t in TOPICS:
            p.publish_many(t, [f"{t}{i}".encode() for i in range(8)])
        first = sorted(c.recv(timeout=5.0) for _ in range(6))
        c.ack()
        ahead = sorted(c.recv(timeout=5.0) for _ in range(4))
        c.close()
        assert len(broker.stats()["consumers"]) == 2  # one durable position per topic
        with Consumer(TOPICS, **opts) as again:
            replay = sorted(again.recv(timeout=5.0) for _ in range(10))
            again.ack()
            assert again.redelivered == 4
            with pytest.raises(ReceiveTimeout):
                again.recv(timeout=0.05)
    for t in TOPICS:
        mine = [m for m in first + ahead if m.startswith(t.encode())]
        assert mine == [f"{t}{i}".encode() for i in range(5)]
    assert set(ahead) < set(replay)
    assert sorted(set(first) | set(replay)) == sorted(
        f"{t}{i}".encode() for t in TOPICS for i in range(8)
    )
    admin_request(DeleteDurable(name="multi"), broker.socket)  # both topics' positions
    wait_for(lambda: consumer_objects(broker) == [], 10.0, "durable segments removed")


def _flood(sock: str, started: Any, stop: Any) -> None:
    """Publish on market_data as fast as the ring lets us until told to stop."""
    with Producer(socket_path=sock) as p:
        seq = 0
        while not stop.is_set():
            now = time.monotonic_ns()
            p.publish_many("market_data", [b"F" + STAMP.pack(seq + i, now) for i in range(64)])
            seq += 64
            started.set()


def _trickle(sock: str, started: Any) -> None:
    """Publish TRICKLE_N messages on signals, a few ms apart, once the flood flows."""
    with Producer(socket_path=sock) as p:
        p.topic("signals")  # the lane exists before the first timed message
        started.wait(30)
        for i in range(TRICKLE_N):
            p.publish("signals", b"T" + STAMP.pack(i, time.monotonic_ns()))
            due = time.monotonic() + TRICKLE_GAP_S
            while time.monotonic() < due:
                pass  # paced by the clock, not by a sleep's granularity


@pytest.mark.parametrize("how", ["recv", "recv_many"])
def test_a_flooded_topic_does_not_starve_a_trickle(broker: Any, procs: Any, how: str) -> None:
    """One producer floods market_data, another trickles on signals: every trickle
    message arrives, in order and promptly (few flood messages published after it are
    read before it), and no flood message is lost or doubled."""
    started, stop = procs.event(), procs.event()
    flood: list[int] = []  # flood sequence numbers in the order read
    stamps: list[int] = []  # their publish times
    trickles: list[int] = []
    overtaken: list[int] = []  # per trickle message: flood ones published later, read before
    with Consumer(TOPICS, socket_path=broker.socket) as c:
        flooder = procs.start(_flood, broker.socket, started, stop)
        trickler = procs.start(_trickle, broker.socket, started)
        deadline = time.monotonic() + 60.0
        while len(trickles) < TRICKLE_N and time.monotonic() < deadline:
            batch = c.recv_many(256, timeout=1.0) if how == "recv_many" else [c.recv(5.0)]
            for m in batch:
                if m.startswith(b"F"):
                    seq, stamp = STAMP.unpack_from(m, 1)
                    flood.append(seq)
                    stamps.append(stamp)
                    continue
                seq, stamp = STAMP.unpack_from(m, 1)
                trickles.append(seq)
                later = 0
                while later < len(stamps) and stamps[-1 - later] > stamp:
                    later += 1
                overtaken.append(later)
        stop.set()
    assert procs.join(trickler) == 0 and procs.join(flooder) == 0
    assert trickles == list(range(TRICKLE_N))
    assert flood == list(range(len(flood))) and len(flood) > 10 * TRICKLE_N
    assert sorted(overtaken)[TRICKLE_N * 9 // 10] <= OVERTAKE_MAX[how], overtaken
    assert max(overtaken) <= OVERTAKE_WORST, overtaken


def warm(c: Consumer, p: Producer) -> None:
    """Both topics' lanes exist and are mapped, so a later wake is the doorbell's."""
    for t in TOPICS:
        p.publish(t, b"warm")
    assert [c.recv(timeout=5.0) for _ in TOPICS] == [b"warm", b"warm"]


@pytest.mark.parametrize("wait", ["block", "adaptive"])
@pytest.mark.parametrize("topic", TOPICS)
def test_a_blocked_consumer_wakes_for_either_topic(broker: Any, topic: str, wait: str) -> None:
    """recv(timeout=5) blocked on the one doorbell returns the message published on
    either topic, well within the timeout."""
    with (
        Consumer(TOPICS, socket_path=broker.socket, wait=wait) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        warm(c, p)
        got: list[tuple[bytes, float]] = []
        waiter = threading.Thread(
            target=lambda: got.append((c.recv(timeout=5.0), time.monotonic()))
        )
        waiter.start()
        try:
            states = c.state.states  # type: ignore[union-attr]
            wait_for(lambda: all(s.sleeping for s in states), 5.0, "the consumer asleep")
            sent = time.monotonic()
            p.publish(topic, topic.encode())
            wait_for(lambda: got, 5.0, "the blocked recv to return")
        finally:
            waiter.join(10.0)
        payload, at = got[0]
        assert payload == topic.encode() and at - sent < 1.0


def test_every_topic_rings_the_one_doorbell(broker: Any) -> None:
    """The subscriptions share one doorbell: a publish on either topic while the flags
    are up posts to it (the coordinator's registry names the same doorbell twice)."""
    with (
        Consumer(TOPICS, socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        warm(c, p)
        topo = c.watch.read()[1]
        mine = [e for e in topo.consumers if e.id in {s.id for s in c.subs}]
        assert len(mine) == 2 and mine[0].doorbell == mine[1].doorbell
        bell = c.state.doorbell
        for t in TOPICS:
            c.state.set_sleeping(True)
            p.publish(t, b"ring")
            wait_for(lambda: bell.value > 0, 5.0, f"a ring from {t}")
            c.state.set_sleeping(False)
            bell.acquire(0)
            assert c.recv(timeout=5.0) == b"ring"


def _hold(sock: str, ready: Any) -> None:
    """A process that holds a multi-topic consumer and reads until it is killed."""
    with Consumer(TOPICS, socket_path=sock) as c:
        ready.set()
        for _ in c:
            pass


def test_a_killed_multi_topic_consumer_is_swept(make_broker: Any, procs: Any) -> None:
    """SIGKILL: the sweep removes both subscriptions, their segments and the shared
    doorbell, and producers fill the rings many times over without gating on it."""
    broker = make_broker(SMALL_RINGS)
    ready = procs.event()
    with Producer(socket_path=broker.socket) as p:
        for t in TOPICS:
            p.publish(t, b"before")  # lanes the consumer gates
        child = procs.start(_hold, broker.socket, ready)
        assert ready.wait(30)
        wait_for(lambda: len(broker.stats()["consumers"]) == 2, 10.0, "two subscriptions")
        assert len([n for n in consumer_objects(broker) if "-D" in n]) == 1  # one doorbell
        os.kill(child.pid, signal.SIGKILL)
        procs.join(child)
        wait_for(lambda: broker.stats()["consumers"] == [], 15.0, "the sweep")
        wait_for(lambda: consumer_objects(broker) == [], 10.0, "its segments gone")
        for t in TOPICS:
            sent = p.publish_many(t, [b"x" * 64] * 5000)  # five rings' worth
            assert sent == 5000


def test_async_consumer_reads_and_wakes_for_every_topic(broker: Any) -> None:
    async def run() -> None:
        async with AsyncConsumer(TOPICS, socket_path=broker.socket, wait="block") as c:
            assert c.topic == "market_data,signals"
            with Producer(socket_path=broker.socket) as p:
                for t in TOPICS:
                    p.publish(t, t.encode())
                envs = [await c.recv_envelope(timeout=5.0) for _ in TOPICS]
                assert {(e.topic, e.payload) for e in envs} == {(t, t.encode()) for t in TOPICS}
                for t in TOPICS:
                    pending = asyncio.ensure_future(c.recv(timeout=5.0))
                    states = c.core.state.states  # type: ignore[union-attr]
                    while not all(s.sleeping for s in states):
                        await asyncio.sleep(0.005)  # polling with the deadline below
                    p.publish(t, b"wake-" + t.encode())
                    assert await asyncio.wait_for(pending, 2.0) == b"wake-" + t.encode()

    asyncio.run(asyncio.wait_for(run(), 30.0))


def test_a_broker_restart_keeps_both_subscriptions_and_the_doorbell(broker: Any) -> None:
    """The new coordinator adopts both subscriptions and their one doorbell: messages
    published while it was down and after arrive on both topics; closing leaves nothing."""
    with Producer(socket_path=broker.socket) as p:
        with Consumer(TOPICS, socket_path=broker.socket, wait="block") as c:
            warm(c, p)
            broker.stop()
            for t in TOPICS:
                p.publish(t, b"down-" + t.encode())
            assert sorted(c.recv(timeout=5.0) for _ in TOPICS) == [
                b"down-market_data",
                b"down-signals",
            ]
            broker.start()
            # Our producer and consumer, plus the stats request's own connection.
            wait_for(lambda: broker.stats()["broker"]["connections"] >= 3, 20.0, "reconnects")
            assert len(broker.stats()["consumers"]) == 2
            assert len([n for n in consumer_objects(broker) if "-D" in n]) == 1
            for t in TOPICS:
                p.publish(t, b"up-" + t.encode())
            assert sorted(c.recv(timeout=5.0) for _ in TOPICS) == [b"up-market_data", b"up-signals"]
        wait_for(lambda: consumer_objects(broker) == [], 10.0, "segments and doorbell gone")


def test_a_doorbell_is_shared_only_within_one_connection(broker: Any) -> None:
    """Subscribe.doorbell_of naming no subscription of the same connection is refused
    (ConfigError) and creates nothing."""
    with Consumer("signals", socket_path=broker.socket) as other:
        ch = ControlChannel(broker.socket, "consumer")
        try:
            for cid in (other.id, 999_999):
                with pytest.raises(ConfigError, match="doorbell_of"):
                    ch.request(Subscribe(topic="market_data", doorbell_of=cid))
        finally:
            ch.close()
        assert [c["id"] for c in broker.stats()["consumers"]] == [other.id]
        assert len([n for n in consumer_objects(broker) if "-D" in n]) == 1


def test_durable_positions_taken_apart_are_refused_together(broker: Any) -> None:
    """A durable name held on two topics by two separate consumers has two doorbells:
    taking both up in one consumer is refused (ConfigError), both positions stay."""
    with Producer(socket_path=broker.socket) as p:
        for t in TOPICS:
            Consumer(t, socket_path=broker.socket, durable="apart").close()
            p.publish(t, b"kept-" + t.encode())
        with pytest.raises(ConfigError, match="apart"):
            Consumer(TOPICS, socket_path=broker.socket, durable="apart")
        for t in TOPICS:
            with Consumer(t, socket_path=broker.socket, durable="apart") as c:
                assert c.recv(timeout=5.0) == b"kept-" + t.encode()
    admin_request(DeleteDurable(name="apart"), broker.socket)
    wait_for(lambda: consumer_objects(broker) == [], 10.0, "durable segments removed")
