"""The Prometheus endpoint end to end: scraped with a real HTTP client under traffic, its
counters checked against what was sent, and across a coordinator crash and restart."""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Callable

import pytest
from broker_helpers import (
    BrokerProcess,
    Clients,
    Processes,
    expect_everything,
    mycelium,
    status_json,
    stop_consumers,
    topic_stats,
    wait_for,
)
from broker_workers import ProducerPlan
from prometheus_client.parser import text_string_to_metric_families

from mycelium import Consumer, Producer
from mycelium.errors import BackpressureTimeout

FIRST = 20_000
SECOND = 5_000
SCRAPE_TIMEOUT_S = 5.0

CONFIG = """
[metrics]
listen = "127.0.0.1:{port}"

[performance]
stats_interval_ms = 100

[[topics]]
name = "ops"
routing = "fanout"
max_message_size = 1024

[[topics]]
name = "tight"
routing = "fanout"
max_message_size = 1024
lane_bytes = 8192
backpressure_timeout_ms = 200
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    """GET /metrics and parse it: (sample name, sorted labels) -> value."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def matching(
    samples: Samples, name: str, **labels: str
) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples called ``name`` whose labels include ``labels``."""
    return {
        lab: v for (n, lab), v in samples.items() if n == name and set(labels.items()) <= set(lab)
    }


def counters(samples: Samples) -> Samples:
    return {
        k: v for k, v in samples.items() if k[0].startswith("mycelium_") and k[0].endswith("_total")
    }


@pytest.fixture
def metered(make_broker: Callable[..., BrokerProcess]) -> tuple[BrokerProcess, int]:
    port = free_port()
    return make_broker(CONFIG.format(port=port)), port


def test_counters_match_what_was_sent_and_survive_a_coordinator_crash(
    metered: tuple[BrokerProcess, int], procs: Processes
) -> None:
    broker, port = metered
    clients = Clients(procs)
    (reader,) = clients.consumers(broker.socket, "ops", ["reader"])
    first = clients.producer(ProducerPlan(broker.socket, "ops", tag=1, count=FIRST))
    first.report("ready")
    first.go()
    # Under traffic: every scrape answers, and no counter ever goes back.
    last: Samples = {}
    while value(last or scrape(port), "mycelium_topic_published_total", topic="ops") < FIRST:
        now = counters(scrape(port))
        assert all(now.get(k, 0.0) >= v for k, v in last.items()), "a counter went back"
        last = now
    first.report("done")  # it closed: its lane drains, then the coordinator retires it
    second = clients.producer(ProducerPlan(broker.socket, "ops", tag=2, count=SECOND, hold=True))
    second.report("ready")
    second.go()
    second.report("done")
    sent = FIRST + SECOND

    def settled() -> Samples | None:
        s = scrape(port)
        lanes = matching(s, "mycelium_lane_capacity_bytes", topic="ops")
        ok = (
            value(s, "mycelium_topic_published_total", topic="ops") == sent
            and value(s, "mycelium_topic_delivered_total", topic="ops") == sent
            and len(lanes) == 1  # the first producer's lane was retired
        )
        return s if ok else None

    before = wait_for(settled, 30, "the scrape to count every message")
    (lag,) = matching(before, "mycelium_consumer_lag_messages", topic="ops").values()
    assert lag == 0
    assert value(before, "mycelium_producers", topic="ops") == 1
    assert value(before, "mycelium_consumers", topic="ops") == 1
    assert value(before, "mycelium_connections") >= 2
    assert value(before, "mycelium_backpressure_timeouts_total", topic="ops") == 0
    assert value(before, "process_resident_memory_bytes") > 0
    assert "process_cpu_seconds_total" in {k[0] for k in before}
    assert status_json(broker)["topics"][0]["published"] == sent  # one source of truth

    broker.kill()  # SIGKILL: no chance to save anything
    broker.start()  # adopts the segments and the retired totals the registry keeps
    after = wait_for(lambda: scrape(port), 10, "the restarted broker's endpoint")
    assert value(after, "mycelium_topic_published_total", topic="ops") == sent
    assert value(after, "mycelium_topic_delivered_total", topic="ops") == sent
    went_back = {k: (v, after.get(k)) for k, v in counters(before).items() if after.get(k, 0) < v}
    assert not went_back, f"counters went back across the restart: {went_back}"

    second.go()
    (report,) = stop_consumers([reader])
    expect_everything(report, {1: FIRST, 2: SECOND})


def test_lag_fill_and_backpressure_timeouts_of_a_stalled_reader(
    metered: tuple[BrokerProcess, int],
) -> None:
    broker, port = metered
    with Consumer("tight", broker.socket, name="stalled") as c, Producer(broker.socket) as p:
        sent = 0
        with pytest.raises(BackpressureTimeout):
            while True:
                p.publish("tight", b"x" * 500)
                sent += 1
        assert c.backlog == sent  # a property, right before the first receive

        def stale() -> Samples | None:
            s = scrape(port)
            lag_s = value(s, "mycelium_consumer_lag_seconds", topic="tight", consumer="stalled",
                          id=str(c.id), group=c.group)  # fmt: skip
            return s if lag_s >= 0.3 else None

        s = wait_for(stale, 10, "lag in seconds to grow")
        labels = {"topic": "tight", "consumer": "stalled", "id": str(c.id), "group": c.group}
        assert value(s, "mycelium_consumer_lag_messages", **labels) == sent
        (fill,) = matching(s, "mycelium_lane_fill_ratio", topic="tight").values()
        assert fill > 0.8
        assert value(s, "mycelium_backpressure_timeouts_total", topic="tight") == 1
        doc = status_json(broker)
        assert topic_stats(doc, "tight")["backpressure_timeouts"] == 1
        (entry,) = [x for x in doc["consumers"] if x["topic"] == "tight"]
        assert entry["name"] == "stalled" and entry["lag"] == sent
        (producer,) = doc["producers"]
        assert producer["name"].endswith(f"[{os.getpid()}]")  # program name and pid
        assert c.recv(timeout=1.0) == b"x" * 500
        assert c.backlog == sent - 1


def test_metrics_option_is_validated(tmp_path) -> None:
    out = mycelium("broker", "--socket", str(tmp_path / "b.sock"), "--metrics", "nonsense")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: --metrics: 'nonsense' is not HOST:PORT (for example 127.0.0.1:9464)"
    ]


def test_a_taken_metrics_port_is_one_clear_error(
    metered: tuple[BrokerProcess, int], tmp_path
) -> None:
    _, port = metered
    out = mycelium(
        "broker", "--socket", str(tmp_path / "other.sock"), "--metrics", f"127.0.0.1:{port}"
    )
    assert out.returncode == 1
    assert "metrics: cannot listen on" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "other.sock").exists()
    assert not (tmp_path / "other.sock.lock").exists()
