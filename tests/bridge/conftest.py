"""Fixtures of the bridge tests: real nats-server processes (JetStream, file storage, in
the test's temp dir, free loopback ports, killed by PID at teardown), two brokers standing
for two hosts, and bridge processes between them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_kit import TEST_BRIDGE, BridgeProcess, host_config

from mycelium.bridge.natsd import NatsServer, free_port


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """Three clustered nats-server processes on loopback."""
    cluster_ports = [free_port() for _ in range(3)]
    servers = [
        NatsServer(
            tmp_path / "cluster",
            name=f"n{k}",
            cluster_port=cluster_ports[k],
            routes=tuple(p for j, p in enumerate(cluster_ports) if j != k),
        )
        for k in range(3)
    ]
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_listening()
        yield servers
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def hosts(make_broker: Callable[..., Any], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: ``hosts(urls, a="export = [...]", b="...")`` -> (broker A, broker B, start)
    where ``start(name)`` starts (or restarts) that host's bridge process. A key given in
    a host's section replaces the TEST_BRIDGE default."""
    bridges: list[BridgeProcess] = []

    def make(urls: list[str], **sections: str) -> tuple[Any, ...]:
        made = []
        starters = {}
        for name, section in sections.items():
            nats = ", ".join(f'"{u}"' for u in urls)
            given = {line.split("=")[0].strip() for line in section.splitlines() if "=" in line}
            defaults = "".join(
                f"{line}\n"
                for line in TEST_BRIDGE.splitlines()
                if line.split("=")[0].strip() not in given
            )
            text = host_config(f'name = "{name}"\nnats = [{nats}]\n{defaults}{section}\n')
            broker = make_broker(text)
            bridge = BridgeProcess(broker.socket, broker.config, tmp_path / f"bridge-{name}")
            bridges.append(bridge)
            starters[name] = bridge
            made.append(broker)
        return (*made, starters)

    try:
        yield make
    finally:
        for bridge in bridges:
            try:
                bridge.stop()
            finally:
                bridge.kill()
