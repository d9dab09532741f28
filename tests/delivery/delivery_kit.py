"""Test-side helpers of the delivery tests: start numbered workers, read their reports.

Each worker reports on its own queue: a worker SIGKILLed right after a report may still
hold its queue's write lock, which would block every other writer of a shared queue.
"""

from __future__ import annotations

import os
import queue
import signal
from typing import Any

import pytest
from delivery_workers import ConsumerPlan, consume, produce

REPORT_WAIT_S = 60.0


class Worker:
    """One client process, its command and report queues and its progress counter."""

    def __init__(self, name: str, proc: Any, commands: Any, results: Any, progress: Any):
        self.name = name
        self.proc = proc
        self.commands = commands
        self.results = results
        self.progress = progress

    @property
    def count(self) -> int:
        return int(self.progress.value) if self.progress is not None else 0

    def tell(self, command: str) -> None:
        self.commands.put(command)

    def report(self, kind: str) -> Any:
        """The next report of ``kind`` (reports of other kinds before it are skipped)."""
        while True:
            try:
                got, _, value = self.results.get(timeout=REPORT_WAIT_S)
            except queue.Empty:
                pytest.fail(f"no {kind!r} report from {self.name} within {REPORT_WAIT_S}s")
            if got == "error":
                pytest.fail(f"{self.name} failed:\n{value}")
            if got == kind:
                return value

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(10)


class Clients:
    """Starts workers in spawned processes (through ``procs``, which reaps them)."""

    def __init__(self, procs: Any) -> None:
        self.procs = procs

    def producer(self, socket: str, topic: str, n: int, rate: int = 0) -> Worker:
        commands, results = self.procs.queue(), self.procs.queue()
        proc = self.procs.start(produce, socket, topic, n, results, commands, rate)
        return Worker("producer", proc, commands, results, None)

    def consumer(self, plan: ConsumerPlan, wait_ready: bool = True) -> Worker:
        commands, results = self.procs.queue(), self.procs.queue()
        progress = self.procs.ctx.Value("q", 0)
        proc = self.procs.start(consume, plan, results, commands, progress)
        worker = Worker(plan.name, proc, commands, results, progress)
        if wait_ready:
            worker.report("ready")
        return worker
