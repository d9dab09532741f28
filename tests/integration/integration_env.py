"""Test side of the migration validation suite: client processes, broker configs, stats.

The shared environment is the root conftest's: ``make_broker`` (a real broker process on
a socket in the test's temp dir, stopped at teardown, which fails the test if any of its
segments is left in /dev/shm) and ``procs`` (spawned processes, killed at teardown even
when the test failed, before the broker stops). ``Clients`` starts this suite's workers
(``integration_workers``) through ``procs`` and reads their reports with deadlines.
"""

from __future__ import annotations

import importlib.util
import queue
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from integration_workers import (
    ConsumerSpec,
    Link,
    ProducerSpec,
    consumer_main,
    corrupting_producer_main,
    producer_main,
)

__all__ = [
    "ORIGINAL_TOPICS",
    "BrokerProcess",
    "Client",
    "Clients",
    "Processes",
    "broker_config",
    "consumer_stats",
    "expect_whole_stream",
    "mycelium_cli",
    "producer_stats",
    "topic_stats",
    "wait_for",
]


def _root_conftest() -> ModuleType:
    """``tests/conftest.py``, loaded by path under a name of its own.

    ``from conftest import ...`` gets whichever ``conftest.py`` pytest imported last (it
    imports each directory's as ``conftest``), so it breaks as soon as a directory that
    sorts earlier has one. The fixtures stay pytest's; from this copy the suite takes
    only the plain helpers (``wait_for``) and the classes for annotations.
    """
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("mycelium_tests_root_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ROOT = _root_conftest()
BrokerProcess = _ROOT.BrokerProcess
Processes = _ROOT.Processes
wait_for = _ROOT.wait_for

#: How long a test waits for a worker's final report.
REPORT_WAIT_S = 90.0
#: How long a test waits for workers to connect (spawning many on 2 cores takes a while).
READY_WAIT_S = 60.0
CLI_TIMEOUT_S = 30.0

#: The original plan's three topics (the broker's embedded default config).
ORIGINAL_TOPICS: dict[str, dict[str, Any]] = {
    "market_data": {"routing": "fanout", "buffer_size": 100000, "max_message_size": 65536},
    "signals": {"routing": "fanout", "buffer_size": 50000, "max_message_size": 32768},
    "execution": {"routing": "queue", "buffer_size": 25000, "max_message_size": 16384},
}


class Client:
    """One worker process and its ``Link``."""

    def __init__(self, name: str, proc: Any, link: Link) -> None:
        self.name = name
        self.proc = proc
        self.link = link

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def count(self) -> int:
        """Messages published or received so far."""
        return self.link.count.value

    @property
    def events(self) -> int:
        """BackpressureTimeouts met (producer) or CorruptFrames met (consumer)."""
        return self.link.events.value

    @property
    def started(self) -> bool:
        """Running and about to connect (or connecting)."""
        return self.link.started.is_set()

    @property
    def ready(self) -> bool:
        return self.link.ready.is_set()

    def go(self) -> None:
        self.link.go.set()

    def stop(self) -> None:
        self.link.stop.set()

    def result(self, timeout: float = REPORT_WAIT_S) -> dict[str, Any]:
        """The worker's final report; fails the test on its error or silent exit."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = self.link.report.get(timeout=0.1)
                break
            except queue.Empty:
                if not self.proc.is_alive():
                    try:  # its last words may still be in the pipe
                        report = self.link.report.get(timeout=1.0)
                        break
                    except queue.Empty:
                        pytest.fail(f"{self.name} exited with {self.proc.exitcode}, no report")
                if time.monotonic() > deadline:
                    pytest.fail(f"{self.name} sent no report within {timeout}s")
        if "error" in report:
            pytest.fail(f"{self.name} failed:\n{report['error']}")
        self.proc.join(10)
        return report


class Clients:
    """Starts the suite's workers through the ``procs`` fixture."""

    def __init__(self, procs: Processes) -> None:
        self.procs = procs

    def _start(self, name: str, target: Any, *args: Any, link: Link) -> Client:
        return Client(name, self.procs.start(target, *args, link), link)

    def producer(self, spec: ProducerSpec, go: bool = True) -> Client:
        """A producer worker; it publishes once ``go`` is set (now, unless ``go=False``)."""
        link = Link.create(self.procs.ctx)
        if go:
            link.go.set()
        return self._start(f"producer{spec.tag}", producer_main, spec, link=link)

    def corrupting_producer(
        self, spec: ProducerSpec, reader: Client, good: int, how: str
    ) -> Client:
        """A producer that damages its own ring after ``good`` messages (see the worker)."""
        link = Link.create(self.procs.ctx)
        link.go.set()
        name = f"corrupting producer{spec.tag}"
        return self._start(name, corrupting_producer_main, spec, reader.link, good, how, link=link)

    def consumer(self, spec: ConsumerSpec, name: str = "") -> Client:
        link = Link.create(self.procs.ctx)
        return self._start(name or f"consumer of {spec.topic}", consumer_main, spec, link=link)

    @staticmethod
    def wait_ready(*clients: Client, timeout: float = READY_WAIT_S) -> None:
        """Wait until every client is connected (a consumer: subscribed)."""
        wait_for(lambda: all(c.ready for c in clients), timeout, "clients to connect")


def expect_whole_stream(
    report: dict[str, Any], tag: int, sent: int, joined_late: bool = False
) -> None:
    """The consumer got producer ``tag``'s whole stream (from where it joined, if it
    ``joined_late``), in order, intact, and nothing else."""
    first = report["first"][tag] if joined_late else 0
    assert report["counts"][tag] == sent - first, (report["counts"], sent, first)
    assert tag in report["ended"]
    assert report["gaps"] == [] and report["disorder"] == [] and report["damaged"] == []
    assert report["foreign"] == 0 and report["lost"] == 0 and report["corrupt"] == 0
    assert not report["timed_out"]


def broker_config(**overrides: dict[str, Any]) -> str:
    """Config text with the original three topics, each updated by ``overrides[name]``;
    an override naming a new topic adds it."""
    topics = {name: dict(table) for name, table in ORIGINAL_TOPICS.items()}
    for name, table in overrides.items():
        topics.setdefault(name, {}).update(table)
    lines = []
    for name, table in topics.items():
        lines += ["[[topics]]", f'name = "{name}"']
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def topic_stats(broker: BrokerProcess, name: str) -> dict[str, Any]:
    (entry,) = [t for t in broker.stats()["topics"] if t["name"] == name]
    return entry


def consumer_stats(broker: BrokerProcess, pid: int) -> list[dict[str, Any]]:
    return [c for c in broker.stats()["consumers"] if c["pid"] == pid]


def producer_stats(broker: BrokerProcess, pid: int) -> list[dict[str, Any]]:
    return [p for p in broker.stats()["producers"] if p["pid"] == pid]


def mycelium_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``mycelium`` command line (as ``python -m mycelium``)."""
    return subprocess.run(
        [sys.executable, "-m", "mycelium", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
