"""A bridge's figures in its broker's ``mycelium status`` (text and --json) and metrics,
carried by ReportFigures on the bridge's control connection; bad reports are refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from bridge_kit import (
    TEST_BRIDGE,
    BridgeProcess,
    check_exact,
    collect,
    host_config,
    make_payload,
)
from harness import wait_for

from mycelium import Consumer, Producer
from mycelium.bridge.natsd import NatsServer, free_port
from mycelium.client.admin import admin_request
from mycelium.client.control import ControlChannel
from mycelium.control.wire import ReportedTopic, ReportFigures, StatsRequest
from mycelium.errors import LimitExceeded

EXPORTED = 500
IMPORTED = 300


def _bridges(socket: str) -> list[dict[str, Any]]:
    doc = admin_request(StatsRequest(), socket).stats  # type: ignore[union-attr]
    found: list[dict[str, Any]] = doc["bridges"]
    return found


def _status_cli(socket: str, *args: str) -> str:
    cmd = [sys.executable, "-m", "mycelium", "status", "--socket", socket, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


async def _publish_to_nats(url: str, subject: str, payloads: list[bytes]) -> None:
    """What another host's bridge would put into the stream (no origin header here)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for payload in payloads:
            await js.publish(subject, payload)
    finally:
        await nc.close()


def test_bridge_figures_in_broker_status_and_metrics_until_the_bridge_dies(
    nats_server: NatsServer, make_broker: Callable[..., Any], tmp_path: Path
) -> None:
    port = free_port()
    section = f'name = "B"\nnats = ["{nats_server.url}"]\n{TEST_BRIDGE}'
    section += 'export = ["market_data"]\nimport = ["signals"]\n'
    broker = make_broker(host_config(section), args=("--metrics", f"127.0.0.1:{port}"))
    bridge = BridgeProcess(broker.socket, broker.config, tmp_path / "bridge-B")
    try:
        with Consumer("signals", broker.socket) as c:
            bridge.start()
            with Producer(broker.socket) as p:
                p.publish_many("market_data", [make_payload("B", i) for i in range(EXPORTED)])
            incoming = [make_payload("A", i) for i in range(IMPORTED)]
            asyncio.run(_publish_to_nats(nats_server.url, "mycelium.signals", incoming))
            (got,) = collect([c], IMPORTED)
        check_exact(got, "A", IMPORTED)

        def settled() -> dict[str, Any] | None:
            found = _bridges(broker.socket)
            if len(found) != 1:
                return None
            b = found[0]
            done = b["exports"]["market_data"]["exported"] == EXPORTED
            return b if done and b["imports"]["signals"]["imported"] == IMPORTED else None

        wait_for(settled, 30, "the bridge's figures in the broker's stats")
        (shown,) = json.loads(_status_cli(broker.socket, "--json"))["bridges"]
        assert (shown["name"], shown["pid"], shown["connected"]) == ("B", bridge.proc.pid, True)  # type: ignore[union-attr]
        assert shown["server"] == nats_server.url.removeprefix("nats://")
        assert shown["imports"]["signals"]["lag"] == 0
        assert shown["exports"]["market_data"]["in_flight"] == 0
        text = _status_cli(broker.socket)
        assert any(
            line.split()[:2] == ["B", str(bridge.proc.pid)] and "signals" in line.split()  # type: ignore[union-attr]
            for line in text.splitlines()
        ), text

        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            metrics = reply.read().decode()
        labels = 'bridge="B",topic="market_data"'
        assert f"mycelium_bridge_export_exported_total{{{labels}}} {EXPORTED}.0" in metrics
        labels = 'bridge="B",topic="signals"'
        assert f"mycelium_bridge_import_imported_total{{{labels}}} {IMPORTED}.0" in metrics
        assert f"mycelium_bridge_import_lag{{{labels}}} 0.0" in metrics
        assert 'mycelium_bridge_connected{bridge="B"} 1.0' in metrics

        bridge.kill()
        wait_for(lambda: _bridges(broker.socket) == [], 10, "the dead bridge gone from stats")
    finally:
        bridge.kill()


def _report(**changes: Any) -> ReportFigures:
    good = {
        "name": "B",
        "connected": True,
        "server": "127.0.0.1:4222",
        "reconnects": 0,
        "topics": [ReportedTopic("signals", "import", {"imported": 5})],
    }
    return ReportFigures(**(good | changes))


@pytest.mark.parametrize(
    ("bad", "limit"),
    [
        ({"name": "has space"}, "bridge_name_chars"),
        ({"server": "x" * 200}, "server_chars"),
        ({"reconnects": -1}, "figure_value"),
        ({"topics": [ReportedTopic("t", "export", {"Bad-Name": 1})]}, "figure_name_chars"),
        ({"topics": [ReportedTopic("t", "export", {"n": 1 << 63})]}, "figure_value"),
        ({"topics": [ReportedTopic("t", "export", {f"f{k}": 1 for k in range(17)})]},
         "reported_figures"),
        ({"topics": [ReportedTopic(f"t{k}", "export", {}) for k in range(65)]},
         "reported_topics"),
    ],
)  # fmt: skip
def test_a_bad_report_is_refused_and_the_last_good_one_stays(
    make_broker: Callable[..., Any], bad: dict[str, Any], limit: str
) -> None:
    broker = make_broker()
    channel = ControlChannel(broker.socket, "admin", name="bridge-B", wait_for_broker_s=10)
    try:
        channel.request(_report())
        with pytest.raises(LimitExceeded) as err:
            channel.request(_report(**bad))
        assert err.value.limit == limit
        (kept,) = _bridges(broker.socket)  # the connection stays; nothing changed
        assert kept["imports"] == {"signals": {"imported": 5}}
        channel.request(_report(reconnects=2))
        assert _bridges(broker.socket)[0]["reconnects"] == 2
    finally:
        channel.close()
