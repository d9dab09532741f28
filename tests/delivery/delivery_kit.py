"""Test-side helpers of the delivery tests: start numbered workers, sort their reports."""

from __future__ import annotations

import os
import queue
import signal
from typing import Any

import pytest
from delivery_workers import ConsumerPlan, consume, produce

REPORT_WAIT_S = 60.0


class Worker:
    """One client process, its command queue and its progress counter."""

    def __init__(self, clients: Clients, name: str, proc: Any, commands: Any, progress: Any):
        self.clients = clients
        self.name = name
        self.proc = proc
        self.commands = commands
        self.progress = progress

    @property
    def count(self) -> int:
        return int(self.progress.value) if self.progress is not None else 0

    def tell(self, command: str) -> None:
        self.commands.put(command)

    def report(self, kind: str) -> Any:
        return self.clients.wait(self.name, kind)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(10)


class Clients:
    """Starts workers in spawned processes (through ``procs``) and sorts their reports."""

    def __init__(self, procs: Any) -> None:
        self.procs = procs
        self.results = procs.queue()
        self.seen: list[tuple[str, str, Any]] = []

    def producer(self, socket: str, topic: str, n: int) -> Worker:
        commands = self.procs.queue()
        proc = self.procs.start(produce, socket, topic, n, self.results, commands)
        return Worker(self, "producer", proc, commands, None)

    def consumer(self, plan: ConsumerPlan, wait_ready: bool = True) -> Worker:
        commands = self.procs.queue()
        progress = self.procs.ctx.Value("q", 0)
        proc = self.procs.start(consume, plan, self.results, commands, progress)
        worker = Worker(self, plan.name, proc, commands, progress)
        if wait_ready:
            worker.report("ready")
        return worker

    def wait(self, name: str, kind: str) -> Any:
        while True:
            for i, (k, n, value) in enumerate(self.seen):
                if n == name and k in (kind, "error"):
                    del self.seen[i]
                    if k == "error":
                        pytest.fail(f"{name} failed:\n{value}")
                    return value
            try:
                self.seen.append(self.results.get(timeout=REPORT_WAIT_S))
            except queue.Empty:
                pytest.fail(f"no {kind!r} report from {name} within {REPORT_WAIT_S}s")
