"""The ``mycelium`` command line against real brokers: start-up refusals, status, cleanup."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from broker_helpers import (
    BrokerProcess,
    Clients,
    Processes,
    mycelium,
    status_json,
    topic_stats,
    wait_for,
)
from broker_workers import ProducerPlan, make_payload

from mycelium import Consumer, Producer
from mycelium.shm.segment import broker_id_for, list_segments

TOPIC = '[[topics]]\nname = "t"\n'

BAD_CONFIGS = {
    "unknown_key": ("[server]\nbogus = 1\n" + TOPIC, "server.bogus"),
    "bad_routing": ('[[topics]]\nname = "t"\nrouting = "broadcast"\n', "topics[0].routing"),
    "wrong_type": ('[server]\nmax_connections = "many"\n' + TOPIC, "server.max_connections"),
    "ring_not_pow2": (TOPIC + "lane_bytes = 300000\n", "topics[0].lane_bytes"),
    "duplicate_topic": (TOPIC + TOPIC, "topics[1].name"),
    "no_topics": ("[server]\nmax_connections = 5\n", "topics"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_broker_refuses_a_bad_config(tmp_path: Path, case: str) -> None:
    text, key = BAD_CONFIGS[case]
    config = tmp_path / "bad.toml"
    config.write_text(text)
    sock = str(tmp_path / "bad.sock")
    out = mycelium("broker", "--config", str(config), "--socket", sock)
    assert out.returncode != 0
    assert f"{key}:" in out.stderr, out.stderr
    assert not os.path.exists(sock)
    assert list_segments(broker_id_for(sock)) == []


def test_broker_refuses_a_config_that_is_not_toml(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server\n")
    out = mycelium("broker", "--config", str(config), "--socket", str(tmp_path / "x.sock"))
    assert out.returncode != 0
    assert str(config) in out.stderr and "invalid TOML" in out.stderr


def test_second_broker_on_a_live_socket_is_refused(broker: BrokerProcess) -> None:
    out = mycelium("broker", "--socket", broker.socket)
    assert out.returncode != 0
    assert f"another broker is already running on {broker.socket}" in out.stderr
    assert os.path.exists(broker.socket)
    assert broker.answers()


def test_stale_socket_of_a_killed_broker_is_taken_over(broker: BrokerProcess) -> None:
    with Producer(socket_path=broker.socket) as p:
        p.publish("signals", b"before")
    broker.kill()
    assert os.path.exists(broker.socket)
    assert mycelium("status", "--socket", broker.socket).returncode != 0
    broker.start()
    assert "taking over stale socket" in broker.log()
    with (
        Consumer("signals", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        p.publish("signals", b"after")
        assert c.recv(timeout=5.0) == b"after"


def test_status_json_reports_topics_lag_and_segments(broker: BrokerProcess) -> None:
    with (
        Consumer("market_data", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket, name="feed") as p,
    ):
        p.publish_many("market_data", [make_payload(1, s) for s in range(100)])
        assert len(c.recv_many(40, timeout=5.0)) == 40
        doc = status_json(broker)
        md = topic_stats(doc, "market_data")
        assert (md["routing"], md["lanes"], md["producers"], md["consumers"]) == (
            "fanout",
            1,
            1,
            1,
        )
        assert (md["published"], md["delivered"], md["dropped"]) == (100, 40, 0)
        assert topic_stats(doc, "signals")["published"] == 0
        (consumer,) = doc["consumers"]
        assert (consumer["topic"], consumer["received"], consumer["lag"]) == ("market_data", 40, 60)
        assert consumer["pid"] == os.getpid() and consumer["alive"]
        (producer,) = doc["producers"]
        assert (producer["name"], producer["published"], producer["topics"]) == (
            "feed",
            100,
            ["market_data"],
        )
        assert doc["segments"]["count"] == 3  # the registry, one lane, one consumer
        assert doc["segments"]["bytes"] >= md["lane_bytes"]
        assert doc["broker"]["id"] == broker.broker_id
        assert doc["broker"]["pid"] == broker.proc.pid
        text = mycelium("status", "--socket", broker.socket)
        assert text.returncode == 0
        assert "market_data" in text.stdout and "segments: 3" in text.stdout


def test_status_without_a_broker_fails_clearly(tmp_path: Path) -> None:
    sock = str(tmp_path / "nobody-home.sock")
    for command in ("status", "stats"):
        out = mycelium(command, "--socket", sock)
        assert out.returncode != 0
        assert f"no Mycelium broker answers on {sock}" in out.stderr, out.stderr


def test_cleanup_removes_a_dead_brokers_segments_only(
    make_broker: Callable[..., BrokerProcess], procs: Processes
) -> None:
    dead = make_broker()
    live = make_broker()
    clients = Clients(procs)
    consumers = []
    for tag, b in enumerate((dead, live), 1):
        consumers += clients.consumers(b.socket, "execution", [f"c{tag}"])
        producer = clients.producer(ProducerPlan(b.socket, "execution", tag, 10))
        producer.go()
        producer.report("done")

    dead.kill()
    dead_before = dead.leftovers()
    assert len(dead_before) >= 3  # at least the registry, a consumer state, its doorbell
    out = mycelium("cleanup", "--socket", dead.socket)
    assert out.returncode == 0
    assert "removed 0 orphaned" in out.stdout, "its clients still run: adoptable"
    assert dead.leftovers() == dead_before
    for c in consumers:
        os.kill(c.pid, signal.SIGKILL)
        c.proc.join(10)
    wait_for(lambda: live.stats()["consumers"] == [], what="the live broker's sweep")
    live_before = live.leftovers()

    dry = mycelium("cleanup", "--socket", dead.socket, "--dry-run")
    assert dry.returncode == 0 and f"would remove {len(dead_before)} orphaned" in dry.stdout
    assert dead.leftovers() == dead_before
    out = mycelium("cleanup", "--socket", dead.socket)
    assert out.returncode == 0 and f"removed {len(dead_before)} orphaned" in out.stdout
    assert dead.leftovers() == []
    out = mycelium("cleanup", "--socket", live.socket)
    assert out.returncode == 0 and "removed 0 orphaned" in out.stdout
    assert live.leftovers() == live_before
    assert live.answers()


def test_shutdown_command_stops_the_broker_cleanly(broker: BrokerProcess) -> None:
    out = mycelium("shutdown", "--socket", broker.socket)
    assert out.returncode == 0 and "shutting down" in out.stdout
    assert broker.proc is not None and broker.proc.wait(10) == 0
    assert not os.path.exists(broker.socket)
    assert broker.leftovers() == []
