"""Helpers of the bridge tests: bridge processes, numbered payloads, the producer worker,
and collecting what a host's consumers received."""

from __future__ import annotations

import hashlib
import json
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from harness import wait_for

from mycelium import Consumer, Producer

#: How long a test waits for every message to arrive.
DELIVERY_TIMEOUT_S = 120.0
BRIDGE_READY_S = 30.0

#: Bridge settings that keep the tests quick: a redelivered batch comes back after 2 s.
TEST_BRIDGE = """
ack_wait_ms = 2000
publish_ack_timeout_ms = 2000
reconnect_wait_min_ms = 50
reconnect_wait_max_ms = 500
"""

_SEQ = struct.Struct("<Q")


def make_payload(host: str, i: int) -> bytes:
    """Message ``i`` of ``host``: its number, then bytes that depend on both (checks identity)."""
    tag = host.encode()
    return _SEQ.pack(i) + tag + hashlib.blake2b(_SEQ.pack(i) + tag, digest_size=16).digest()


def number(payload: bytes) -> int:
    return int(_SEQ.unpack_from(payload)[0])


def host_config(bridge: str) -> str:
    """The embedded default broker config (market_data, signals, execution) plus ``[bridge]``."""
    text = resources.files("mycelium").joinpath("default_config.toml").read_text("utf-8")
    return text + "\n[bridge]\n" + bridge


class BridgeProcess:
    """``mycelium bridge`` in its own process; killed and reaped by PID."""

    def __init__(self, socket: str, config: Path, state_dir: Path) -> None:
        self.socket = socket
        self.config = config
        self.state_dir = state_dir
        self.log_path = state_dir.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> BridgeProcess:
        """Start it; with ``wait``, return once its status file says it is connected."""
        cmd = [sys.executable, "-m", "mycelium", "bridge", "--socket", self.socket]
        cmd += ["--config", str(self.config), "--state-dir", str(self.state_dir)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_connected()
        return self

    def wait_connected(self) -> dict[str, Any]:
        def connected() -> dict[str, Any]:
            status = self.status()
            return status if status.get("connected") else {}

        found: dict[str, Any] = wait_for(connected, BRIDGE_READY_S, "bridge connected")
        return found

    def status(self) -> dict[str, Any]:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"bridge exited {self.proc.returncode}:\n{self.log()}")
        try:
            doc: dict[str, Any] = json.loads((self.state_dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return doc if doc.get("pid") == self.proc.pid else {}  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"bridge ignored SIGTERM:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def produce(socket: str, topic: str, host: str, count: int, rate: float, start: int = 0) -> None:
    """Worker: publish ``count`` numbered messages in chunks of 100 at about ``rate`` msg/s
    (0: as fast as the ring takes them)."""
    chunk = 100
    with Producer(socket) as p:
        t0 = time.monotonic()
        for first in range(start, start + count, chunk):
            batch = [make_payload(host, i) for i in range(first, min(first + chunk, start + count))]
            done = 0
            while done < len(batch):
                done += p.publish_many(topic, batch[done:])
            if rate:
                ahead = t0 + (first + chunk - start) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)


def collect(
    consumers: list[Consumer],
    total: int,
    on_progress: Callable[[int], None] | None = None,
    timeout: float = DELIVERY_TIMEOUT_S,
) -> list[list[bytes]]:
    """What each consumer received, once ``total`` arrived between them (or the timeout)."""
    got: list[list[bytes]] = [[] for _ in consumers]
    deadline = time.monotonic() + timeout
    n = 0
    while n < total and time.monotonic() < deadline:
        for c, out in zip(consumers, got, strict=True):
            batch = c.recv_many(1000, timeout=0.02)
            out += batch
            n += len(batch)
            if batch and on_progress is not None:
                on_progress(n)
    return got


def check_exact(received: list[bytes], host: str, count: int, start: int = 0) -> None:
    """``received`` is messages start..start+count-1 of ``host``, each once, in order."""
    numbers = [number(p) for p in received]
    expected = list(range(start, start + count))
    if numbers != expected:
        seen = set(numbers)
        lost = [i for i in expected if i not in seen]
        dups = len(numbers) - len(seen)
        breaks = [(k, numbers[k - 1], numbers[k]) for k in range(1, len(numbers))
                  if numbers[k] != numbers[k - 1] + 1][:5]  # fmt: skip
        raise AssertionError(
            f"{len(numbers)} received of {count}: {len(lost)} lost (first {lost[:5]}), "
            f"{dups} duplicates; first breaks (index, before, after): {breaks}"
        )
    bad = [p for p in received if p != make_payload(host, number(p))]
    assert not bad, f"{len(bad)} payloads differ from what was published"
