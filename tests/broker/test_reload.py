"""Config reload end to end: ``mycelium reload`` and SIGHUP, under traffic, and refusals."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from broker_helpers import (
    BrokerProcess,
    Clients,
    Processes,
    expect_everything,
    mycelium,
    stop_consumers,
    wait_for,
)
from broker_workers import ProducerPlan

from mycelium import Consumer, Producer
from mycelium.client.admin import admin_request
from mycelium.control.wire import Ok, Reload
from mycelium.errors import UnknownTopic

STREAM = """
[[topics]]
name = "stream"
routing = "fanout"
max_message_size = 1024
backpressure_timeout_ms = {timeout}
"""
BASE = STREAM.format(timeout=5000)
FRESH = '\n[[topics]]\nname = "fresh"\nrouting = "queue"\n'
TRAFFIC_MESSAGES = 100_000


def topic_names(broker: BrokerProcess) -> set[str]:
    return {t["name"] for t in broker.stats()["topics"]}


def reload(broker: BrokerProcess, how: str) -> str:
    """Make the broker re-read its config file: ``mycelium reload``, the Reload request it
    sends (without the CLI's start-up time), or SIGHUP (asynchronous). Returns what the
    broker answered ("" for SIGHUP)."""
    if how == "request":
        reply = admin_request(Reload(), broker.socket)
        assert isinstance(reply, Ok)
        return reply.detail
    if how == "cli":
        out = mycelium("reload", "--socket", broker.socket)
        assert out.returncode == 0, out.stderr
        return out.stdout
    assert broker.proc is not None
    os.kill(broker.proc.pid, signal.SIGHUP)
    return ""


def edit_config(broker: BrokerProcess, text: str) -> None:
    assert broker.config is not None
    broker.config.write_text(text)


@pytest.mark.parametrize("how", ["cli", "sighup"])
def test_reload_adds_a_topic(make_broker: Callable[..., BrokerProcess], how: str) -> None:
    broker = make_broker(BASE)
    with pytest.raises(UnknownTopic):
        Consumer("fresh", socket_path=broker.socket)
    edit_config(broker, BASE + FRESH)
    answer = reload(broker, how)
    assert how == "sighup" or "added topic fresh (queue)" in answer
    wait_for(lambda: topic_names(broker) == {"stream", "fresh"}, what="the new topic")
    assert "reload: added topic fresh (queue)" in broker.log()
    with (
        Consumer("fresh", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish("fresh", b"hello fresh")
        assert c.recv(timeout=5.0) == b"hello fresh"


def test_reload_removes_a_topic_once_its_clients_leave(
    make_broker: Callable[..., BrokerProcess],
) -> None:
    idle = '\n[[topics]]\nname = "idle"\n'
    broker = make_broker(BASE + FRESH + idle)
    with Consumer("fresh", socket_path=broker.socket) as c:
        edit_config(broker, BASE)
        answer = reload(broker, "request")
        assert "removed topic idle" in answer
        assert "kept topic fresh until its clients leave" in answer
        assert topic_names(broker) == {"stream", "fresh"}
        with Producer(socket_path=broker.socket) as p:
            p.publish("fresh", b"still served")
        assert c.recv(timeout=5.0) == b"still served"
    wait_for(lambda: topic_names(broker) == {"stream"}, what="the topic removed")
    with pytest.raises(UnknownTopic):
        Consumer("fresh", socket_path=broker.socket)


def test_reload_under_traffic_loses_nothing(
    make_broker: Callable[..., BrokerProcess], procs: Processes
) -> None:
    """Reloads that change the streaming topic make every client re-read the topology
    mid-stream; nothing may be lost or reordered."""
    broker = make_broker(BASE)
    clients = Clients(procs)
    consumers = clients.consumers(broker.socket, "stream", ["c1", "c2"])
    progress = clients.counter()
    producer = clients.producer(
        ProducerPlan(broker.socket, "stream", 1, TRAFFIC_MESSAGES), progress
    )
    producer.report("ready")
    producer.go()
    wait_for(lambda: progress.value > 0, what="traffic")
    reloads = 0
    while progress.value < TRAFFIC_MESSAGES:
        edit_config(broker, STREAM.format(timeout=4000 + reloads % 2) + FRESH)
        done = broker.log().count("reload: updated topic stream")
        reload(broker, ("request", "sighup")[reloads % 2])
        wait_for(
            lambda done=done: broker.log().count("reload: updated topic stream") > done,
            what="the reload",
        )
        reloads += 1
    producer.report("done")
    assert reloads >= 4, "the stream ended before the reloads began"
    for report in stop_consumers(consumers):
        expect_everything(report, {1: TRAFFIC_MESSAGES})
    assert topic_names(broker) == {"stream", "fresh"}


def test_bad_config_on_reload_is_refused(make_broker: Callable[..., BrokerProcess]) -> None:
    broker = make_broker(BASE)
    with (
        Consumer("stream", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish("stream", b"before")
        edit_config(broker, BASE.replace('"fanout"', '"broadcast"') + FRESH)
        out = mycelium("reload", "--socket", broker.socket)
        assert out.returncode != 0
        assert "topics[0].routing" in out.stderr, out.stderr
        assert broker.log().count("reload refused") == 1
        reload(broker, "sighup")
        wait_for(lambda: broker.log().count("reload refused") == 2, what="the SIGHUP refusal")
        assert topic_names(broker) == {"stream"}
        p.publish("stream", b"after")
        assert [c.recv(timeout=5.0) for _ in range(2)] == [b"before", b"after"]
    assert broker.answers()
