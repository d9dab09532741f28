"""Test-side helpers for the broker end-to-end tests: start workers, collect, check.

``Clients`` starts the workers of ``broker_workers`` through the ``procs`` fixture and
reads their reports; the ``expect_*`` helpers turn reports into exact assertions.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import queue
import subprocess
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from broker_workers import ConsumerPlan, ProducerPlan, consumer_main, producer_main

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def _root_conftest() -> ModuleType:
    """tests/conftest.py as a module. ``from conftest import`` is not reliable: pytest
    binds ``conftest`` in sys.modules to the last conftest it imported, and other test
    directories have their own."""
    for module in list(sys.modules.values()):
        if Path(getattr(module, "__file__", None) or "/").resolve() == ROOT_CONFTEST:
            return module
    spec = importlib.util.spec_from_file_location("mycelium_root_conftest", ROOT_CONFTEST)
    assert spec is not None and spec.loader is not None
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from conftest import BrokerProcess, Processes, wait_for
else:
    _root = _root_conftest()
    BrokerProcess, Processes, wait_for = _root.BrokerProcess, _root.Processes, _root.wait_for

#: How long a test waits for one worker report, and how often it looks at the others'.
REPORT_WAIT_S = 60.0
REPORT_POLL_S = 0.05
CLI_TIMEOUT_S = 30.0

Seqs = dict[int, list[int]]

#: Topics with small rings, so a reader that stops fills them at once.
SMALL_RINGS = """
[[topics]]
name = "quick"
routing = "fanout"
max_message_size = 1024
lane_bytes = 8192
backpressure_timeout_ms = 300

[[topics]]
name = "patient"
routing = "fanout"
max_message_size = 1024
lane_bytes = 16384
backpressure_timeout_ms = 10000

[[topics]]
name = "brief"
routing = "queue"
max_message_size = 1024
lane_bytes = 8192
backpressure_timeout_ms = 300

[[topics]]
name = "narrow"
routing = "queue"
max_message_size = 1024
lane_bytes = 8192
backpressure_timeout_ms = 3000
"""


class Worker:
    """A spawned client process with its own report and command queues.

    Each worker has queues of its own: a multiprocessing queue's writers share a lock,
    and a worker SIGSTOPped while holding it would silence every other one.
    """

    def __init__(self, clients: Clients, name: str, proc: Any, results: Any, commands: Any):
        self.clients = clients
        self.name = name
        self.proc = proc
        self.results = results
        self.commands = commands

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> None:
        """Let the worker go on (start, leave a pause, or stop reading)."""
        self.commands.put("go")

    def report(self, kind: str, timeout: float = REPORT_WAIT_S) -> Any:
        """The worker's next report of ``kind`` (``ready``, ``paused`` or ``done``)."""
        return self.clients.wait(kind, self, timeout)


class Clients:
    """The producer and consumer workers of one test."""

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self.workers: list[Worker] = []
        self._inbox: dict[tuple[str, str], list[Any]] = {}

    def _start(self, name: str, target: Any, plan: Any, progress: Any) -> Worker:
        results, commands = self.procs.queue(), self.procs.queue()
        proc = self.procs.start(target, plan, results, commands, progress)
        worker = Worker(self, name, proc, results, commands)
        self.workers.append(worker)
        return worker

    def producer(self, plan: ProducerPlan, progress: Any = None) -> Worker:
        return self._start(f"producer{plan.tag}", producer_main, plan, progress)

    def consumer(self, plan: ConsumerPlan, progress: Any = None) -> Worker:
        return self._start(plan.name, consumer_main, plan, progress)

    def counter(self) -> Any:
        """A shared counter a worker stores its progress in (survives its SIGKILL)."""
        return self.procs.ctx.Value("Q", 0, lock=False)

    def consumers(self, socket: str, topic: str, names: list[str], **kw: Any) -> list[Worker]:
        """Start consumers called ``names`` on ``topic`` and wait until all subscribed."""
        workers = [self.consumer(ConsumerPlan(socket, topic, name, **kw)) for name in names]
        for w in workers:
            w.report("ready")
        return workers

    def wait(self, kind: str, worker: Worker, timeout: float = REPORT_WAIT_S) -> Any:
        """The next ``kind`` report of ``worker``; fails at once on any worker's error."""
        deadline = time.monotonic() + timeout
        while not self._inbox.get((kind, worker.name)):
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {kind!r} report from {worker.name} within {timeout}s")
            self._collect(worker, min(left, REPORT_POLL_S))
            for other in self.workers:
                if other is not worker:
                    self._collect(other, 0.0)
        return self._inbox[(kind, worker.name)].pop(0)

    def _collect(self, worker: Worker, timeout: float) -> None:
        """Move ``worker``'s waiting reports to the inbox (blocking up to ``timeout``)."""
        try:
            item = worker.results.get(timeout=timeout) if timeout else worker.results.get_nowait()
            while True:
                kind, name, data = item
                if kind == "error":
                    pytest.fail(f"{name} failed:\n{data}")
                self._inbox.setdefault((kind, name), []).append(data)
                item = worker.results.get_nowait()
        except queue.Empty:
            return


def run_stream(consumers: list[Worker], producers: list[Worker]) -> list[dict[str, Any]]:
    """Let producers run to the end, then stop the consumers; their ``done`` reports."""
    for p in producers:
        p.go()
    for p in producers:
        p.report("done")
    return stop_consumers(consumers)


def stop_consumers(consumers: list[Worker]) -> list[dict[str, Any]]:
    """Tell consumers to finish (they drain first); their ``done`` reports."""
    for c in consumers:
        c.go()
    return [c.report("done") for c in consumers]


def seqs_of(report: dict[int, bytes]) -> Seqs:
    """A consumer's (tag -> sequences in arrival order) from its report."""
    return {tag: array("Q", raw).tolist() for tag, raw in report.items()}


def expect_everything(report: dict[str, Any], counts: dict[int, int]) -> None:
    """The consumer got every message of every producer once, in order, and nothing else."""
    seqs = seqs_of(report["seqs"])
    assert sorted(seqs) == sorted(counts), f"producers seen {sorted(seqs)}"
    for tag, n in counts.items():
        got = seqs[tag]
        assert len(got) == n, f"producer {tag}: {len(got)} of {n} messages"
        assert got == list(range(n)), f"producer {tag}: out of order or duplicated"
    assert report["corrupt"] == 0
    assert report["lost"] == 0


def expect_in_order(seqs: Seqs) -> None:
    """Per producer, the sequences a consumer got only grow (per-producer order)."""
    for tag, got in seqs.items():
        assert all(a < b for a, b in itertools.pairwise(got)), f"producer {tag}: out of order"


def delivery_counts(reports: list[Seqs]) -> Counter[tuple[int, int]]:
    """How often each (tag, seq) arrived across a group of consumers."""
    counts: Counter[tuple[int, int]] = Counter()
    for seqs in reports:
        for tag, got in seqs.items():
            counts.update((tag, s) for s in got)
    return counts


def expect_exactly_once(reports: list[dict[str, Any]], counts: dict[int, int]) -> None:
    """A queue group: each message went to exactly one member, in order within each."""
    all_seqs = [seqs_of(r["seqs"]) for r in reports]
    for seqs in all_seqs:
        expect_in_order(seqs)
    delivered = delivery_counts(all_seqs)
    wanted = {(tag, s) for tag, n in counts.items() for s in range(n)}
    assert set(delivered) == wanted, (
        f"missing {len(wanted - set(delivered))}, unexpected {len(set(delivered) - wanted)}"
    )
    dups = {k: v for k, v in delivered.items() if v > 1}
    assert not dups, f"{len(dups)} messages delivered more than once"


def mycelium(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run the ``mycelium`` CLI (``python -m mycelium``) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "mycelium", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status_json(broker: BrokerProcess) -> dict[str, Any]:
    """``mycelium status --json`` of ``broker``, parsed (fails the test if it fails)."""
    out = mycelium("status", "--socket", broker.socket, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def topic_stats(stats: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = [t for t in stats["topics"] if t["name"] == name]
    return entry
