"""``mycelium demo``: a private broker, every service on the generated feeds, the dashboard.

How this works
--------------
Everything lives in a fresh temp directory: the broker's socket (never the user's default
one), the logs and the services' stats files. The broker and the services are child
processes in sessions of their own, so a Ctrl-C reaches only this process, which then
stops them in pipeline order: the feeds first, then (once the broker reports no lag) the
strategy, then the portfolio; the dashboard runs here, in a thread (and with ``http``,
its web page in another: ``mycelium.services.web``). Consumers start
before producers, so no message is published before its consumers exist. Every child is
stopped with SIGTERM, killed by PID after a timeout, and the broker's shared-memory
objects are checked for (and removed if a crash left any) before the directory goes.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mycelium.services.base import ServiceProcess
from mycelium.services.dashboard import Dashboard, broker_stats
from mycelium.services.top import run_top
from mycelium.services.web import WebServer
from mycelium.shm.segment import broker_id_for, list_segments, unlink_quietly

__all__ = ["run_demo"]

log = logging.getLogger("mycelium.services")

CONSUMERS = ("portfolio", "flash_arbitrage")  # started first, stopped last
FEEDS = ("kraken_collector", "polygon_adapter")
START_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
POLL_S = 0.05


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_S)


def _drained(socket_path: str) -> bool:
    stats = broker_stats(socket_path)
    return stats is not None and all(c["lag"] == 0 for c in stats["consumers"])


class _Broker:
    """The demo's own broker process."""

    def __init__(self, workdir: Path) -> None:
        self.socket = str(workdir / "broker.sock")
        self.log_path = workdir / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "mycelium", "broker", "--socket", self.socket,
               "--log-level", "WARNING"]  # fmt: skip
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait(self._answers, START_TIMEOUT_S, "the broker")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the broker exited with {self.proc.returncode}:\n"
                               f"{self.log_path.read_text(errors='replace')}")  # fmt: skip
        return broker_stats(self.socket) is not None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S * 2)
        except subprocess.TimeoutExpired:
            log.warning("the broker (pid %d) ignored SIGTERM; killing it", self.proc.pid)
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)


def run_demo(
    duration: float | None,
    *,
    quiet: bool = False,
    refresh: float = 1.0,
    console: Console | None = None,
    http: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline for ``duration`` seconds (None: until Ctrl-C); returns the
    per-service counts. ``quiet``: no live view (the dashboard still consumes). ``http``:
    (host, port) to serve the dashboard's web page on; its URL goes to stderr."""
    workdir = Path(tempfile.mkdtemp(prefix="mycelium-demo-"))
    broker = _Broker(workdir)
    children: dict[str, ServiceProcess] = {}
    dashboard: Dashboard | None = None
    page: WebServer | None = None
    result: dict[str, Any] = {
        "broker": {"id": broker_id_for(broker.socket), "socket": broker.socket}
    }
    try:
        broker.start()
        for name in CONSUMERS:
            children[name] = ServiceProcess(name, broker.socket, workdir).start()
        dashboard = Dashboard(broker.socket).start()
        if http is not None:
            page = WebServer(dashboard, broker.socket, *http).start()
            print(f"dashboard page: {page.url}", file=sys.stderr, flush=True)
        for name in CONSUMERS:
            _wait(children[name].is_ready, START_TIMEOUT_S, name)
        for name in FEEDS:
            children[name] = ServiceProcess(name, broker.socket, workdir).start()
        for name in FEEDS:
            _wait(children[name].is_ready, START_TIMEOUT_S, name)
        started = time.monotonic()
        _show(broker.socket, dashboard, duration, quiet, refresh, console)
        result["duration_s"] = round(time.monotonic() - started, 3)
        for name in FEEDS:
            children[name].stop(STOP_TIMEOUT_S)
        for name in reversed(CONSUMERS):
            with contextlib.suppress(RuntimeError):
                _wait(lambda: _drained(broker.socket), DRAIN_TIMEOUT_S, "consumers to catch up")
            children[name].stop(STOP_TIMEOUT_S)
        stats = broker_stats(broker.socket) or {"topics": []}
        result["topics"] = {t["name"]: {"published": t["published"], "delivered": t["delivered"]}
                            for t in stats["topics"]}  # fmt: skip
    finally:
        for child in children.values():
            child.stop(STOP_TIMEOUT_S)
        if page is not None:
            page.stop()
        if dashboard is not None:
            dashboard.stop()
        broker.stop()
        _remove_leftovers(broker.socket)
        result["services"] = {name: child.stats() for name, child in children.items()}
        if dashboard is not None:
            result["services"]["dashboard"] = dashboard.snapshot()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _show(
    socket: str, dashboard: Dashboard, duration: float | None, quiet: bool, refresh: float,
    console: Console | None,
) -> None:  # fmt: skip
    """Wait ``duration`` (or until Ctrl-C), drawing the dashboard unless ``quiet``."""
    stop = threading.Event()
    timer = threading.Timer(duration, stop.set) if duration is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        if quiet:
            while not stop.wait(1.0):
                pass
        else:
            run_top(socket, refresh, stop=stop, dashboard=dashboard, console=console)
    except KeyboardInterrupt:
        log.info("interrupted: stopping the demo")
    finally:
        if timer is not None:
            timer.cancel()


def _remove_leftovers(socket: str) -> None:
    leftovers = list_segments(broker_id_for(socket))
    for name in leftovers:
        unlink_quietly(name)
    if leftovers:
        log.warning("removed %d shared-memory objects the demo left: %s", len(leftovers), leftovers)
