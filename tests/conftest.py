"""Shared fixtures: a real broker process, client processes, and leak checks.

``broker`` starts ``python -m mycelium broker`` on a socket in a temp dir and waits until
it answers. Its teardown stops it (SIGTERM; SIGKILL if it will not go), then fails the
test if any shared-memory object of that broker is left in /dev/shm, after removing
them so one leak does not cascade. ``procs`` starts functions in spawned processes and
kills whatever is still running at teardown, even when the test failed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from harness import Processes, wait_for

from mycelium.client.admin import admin_request
from mycelium.control.wire import StatsRequest
from mycelium.errors import MyceliumError
from mycelium.shm.segment import broker_id_for, list_segments, unlink_quietly

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


class BrokerProcess:
    """A coordinator running in its own process, with the means to stop, kill, restart."""

    def __init__(
        self, socket_path: str, config: Path | None, log_path: Path, args: Sequence[str] = ()
    ) -> None:
        self.socket = socket_path
        self.config = config
        self.log_path = log_path
        self.args = list(args)  # extra `mycelium broker` options (--log-format json, ...)
        self.broker_id = broker_id_for(socket_path)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> BrokerProcess:
        cmd = [sys.executable, "-m", "mycelium", "broker", "--socket", self.socket]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        cmd += self.args
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            wait_for(self.answers, START_TIMEOUT_S, f"broker on {self.socket}")
        return self

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"broker exited with {self.proc.returncode}:\n{self.log()}")
        try:
            admin_request(StatsRequest(), self.socket)
        except MyceliumError:
            return False
        return True

    def stats(self) -> dict[str, Any]:
        return admin_request(StatsRequest(), self.socket).stats  # type: ignore[union-attr]

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)
            pytest.fail(f"broker ignored SIGTERM for {STOP_TIMEOUT_S}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def leftovers(self) -> list[str]:
        return list_segments(self.broker_id)


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """Factory: ``make_broker(config_text=None, start=True, args=())`` -> a running
    BrokerProcess (``args``: extra broker options)."""
    brokers: list[BrokerProcess] = []

    def make(
        config_text: str | None = None, start: bool = True, args: Sequence[str] = ()
    ) -> BrokerProcess:
        n = len(brokers)
        config = None
        if config_text is not None:
            config = tmp_path / f"broker{n}.toml"
            config.write_text(config_text)
        b = BrokerProcess(str(tmp_path / f"b{n}.sock"), config, tmp_path / f"broker{n}.log", args)
        brokers.append(b)
        return b.start() if start else b

    yield make
    problems = []
    for b in brokers:
        b.stop()
        left = b.leftovers()
        for name in left:
            unlink_quietly(name)
        if left:
            problems.append(f"broker {b.broker_id} left {left}\n{b.log()[-3000:]}")
    if problems:
        pytest.fail("shared memory left behind:\n" + "\n".join(problems))


@pytest.fixture
def broker(make_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    """A broker on the embedded default config (market_data, signals fanout; execution queue)."""
    return make_broker()


@pytest.fixture
def procs(make_broker: Callable[..., BrokerProcess]) -> Iterator[Processes]:
    """Client processes; torn down before any broker, so the broker sees them gone."""
    p = Processes()
    try:
        yield p
    finally:
        p.kill_all()
