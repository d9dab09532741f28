"""What an operator sees: JSON log lines for every control-plane event, validated log
options, ``status --json`` that is always JSON, ``status --config``, no lock file left."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from broker_helpers import BrokerProcess, Clients, Processes, mycelium, wait_for

from mycelium import Consumer, Producer
from mycelium.logs import LOG_LEVELS

JSON_KEYS = {"ts", "level", "logger", "event", "message"}


def json_lines(broker: BrokerProcess) -> list[dict[str, Any]]:
    """Every line the broker logged, each parsed as one JSON object with the stable keys."""
    lines = [json.loads(line) for line in broker.log().splitlines() if line.strip()]
    for line in lines:
        assert set(line) >= JSON_KEYS, line
    return lines


def events(broker: BrokerProcess, name: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(broker) if line["event"] == name]


def test_json_logs_name_every_control_plane_event(
    make_broker: Callable[..., BrokerProcess], procs: Processes
) -> None:
    broker = make_broker(args=["--log-format", "json", "--log-level", "DEBUG"])
    me = os.getpid()
    with (
        Consumer("market_data", broker.socket, name="app-reader") as c,
        Producer(broker.socket, name="app-writer") as p,
    ):
        p.publish("market_data", b"tick")
        assert c.recv(timeout=5.0) == b"tick"
    victim = Clients(procs).consumers(broker.socket, "signals", ["victim"])[0]
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: events(broker, "consumer_dead"), 10, "the dead consumer to be logged")
    assert mycelium("reload", "--socket", broker.socket).returncode == 0
    broker.kill()
    broker.start()
    wait_for(lambda: events(broker, "adopted"), 10, "the adoption to be logged")

    (sub,) = [e for e in events(broker, "subscribe") if e["client"] == "app-reader"]
    assert (sub["pid"], sub["topic"], sub["level"]) == (me, "market_data", "INFO")
    (reg,) = [e for e in events(broker, "register") if e["client"] == "app-writer"]
    assert (reg["pid"], reg["topic"]) == (me, "market_data")
    assert any(e["client"] == "app-reader" and e["pid"] == me for e in events(broker, "hello"))
    assert any(e["client"] == "app-reader" for e in events(broker, "unsubscribe"))
    assert any(e["pid"] == me for e in events(broker, "connect"))
    (created,) = [e for e in events(broker, "lane_created") if e["client"] == "app-writer"]
    assert created["topic"] == "market_data" and created["level"] == "DEBUG"
    assert any(e["lane"] == created["lane"] for e in events(broker, "lane_retired"))
    (dead,) = events(broker, "consumer_dead")
    assert (dead["pid"], dead["topic"], dead["level"]) == (victim.pid, "signals", "WARNING")
    assert events(broker, "reload") and len(events(broker, "started")) == 2


@pytest.mark.parametrize("command", ["broker", "service portfolio", "demo", "top"])
def test_a_bad_log_level_is_one_clear_line(command: str, tmp_path: Path) -> None:
    out = mycelium(*command.split(), "--socket", str(tmp_path / "none.sock"),
                   "--log-level", "LOUD") if command != "demo" else mycelium(
        "demo", "--log-level", "LOUD")  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: --log-level: unknown log level 'LOUD'; one of {', '.join(LOG_LEVELS)}"
    ]


def test_a_bad_log_format_is_one_clear_line(tmp_path: Path) -> None:
    out = mycelium("broker", "--socket", str(tmp_path / "b.sock"), "--log-format", "xml")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: --log-format: unknown log format 'xml'; one of text, json"
    ]


def test_status_json_is_json_even_when_no_broker_answers(tmp_path: Path) -> None:
    out = mycelium("status", "--socket", str(tmp_path / "none.sock"), "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["error"]["type"] == "BrokerUnavailable"
    assert "none.sock" in doc["error"]["message"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nmax_connections = -1\n")
    out = mycelium("status", "--config", str(bad), "--json")
    assert out.returncode == 2
    assert json.loads(out.stdout)["error"]["type"] == "ConfigError"


def test_status_config_finds_the_broker_of_a_config(
    make_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    sock = tmp_path / "b0.sock"  # where make_broker puts its first broker
    broker = make_broker(f'[server]\nsocket_path = "{sock}"\n[[topics]]\nname = "t"\n')
    assert broker.socket == str(sock) and broker.config is not None
    out = mycelium("status", "--config", str(broker.config), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["broker"]["socket"] == str(sock)


def test_the_lock_file_goes_with_the_broker(make_broker: Callable[..., BrokerProcess]) -> None:
    broker = make_broker()
    lock = Path(f"{broker.socket}.lock")
    assert lock.exists()
    assert broker.stop() == 0
    assert not lock.exists() and not Path(broker.socket).exists()


def test_clients_are_named_by_default_with_program_and_pid(
    broker: BrokerProcess, procs: Processes
) -> None:
    (worker,) = Clients(procs).consumers(broker.socket, "market_data", ["w"])
    (entry,) = [c for c in broker.stats()["consumers"] if c["pid"] == worker.pid]
    assert entry["name"] == f"python[{worker.pid}]"
    worker.go()
    worker.report("done")
