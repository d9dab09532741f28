"""The harness every test directory shares: spawned processes that are always reaped,
and polling for a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

JOIN_TIMEOUT_S = 60.0
POLL_S = 0.005


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_S)


class Processes:
    """Spawned client processes that are always reaped."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.started: list[multiprocessing.process.BaseProcess] = []

    def start(self, target: Callable[..., Any], *args: Any) -> multiprocessing.Process:
        proc = self.ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        self.started.append(proc)
        return proc

    def queue(self) -> Any:
        return self.ctx.Queue()

    def event(self) -> Any:
        return self.ctx.Event()

    def join(self, proc: multiprocessing.Process, timeout: float = JOIN_TIMEOUT_S) -> int:
        """Wait for ``proc``; fail if it is still running after ``timeout``. Its exit code."""
        proc.join(timeout)
        if proc.is_alive():
            pytest.fail(f"child {proc.name} (pid {proc.pid}) still running after {timeout}s")
        assert proc.exitcode is not None
        return proc.exitcode

    def join_all(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for proc in self.started:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                pytest.fail(f"process {proc.pid} still running after {timeout}s")

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(5)
