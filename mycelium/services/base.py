"""The ``Service`` base: one loop, a stop event, counters, and a way to run it anywhere.

How this works
--------------
A service connects its handles in ``connect()``, then ``run()`` calls ``step()`` until
the stop event is set or the deadline passes, and ``disconnect()`` closes the handles.
Every ``step()`` is bounded: it handles one batch and waits on a consumer with a timeout
or on the stop event (pacing), never spins. ``start()``/``stop()`` run the same loop in a
thread; ``ServiceProcess`` runs it in a child process (``mycelium service NAME``) that
stops on SIGTERM/SIGINT and writes its counters to a JSON stats file, so a parent (the
demo, the tests) can read them while it runs and after it ended.

Counters: ``received`` (inputs read: feed lines, bus messages), ``published``,
``skipped_malformed`` (bad input, logged and dropped), ``ignored`` (valid input of no
interest: heartbeats, unknown pools) and ``errors`` (broker trouble, retried).

Publishing survives a broker restart: a publish refused because the broker is away is
retried with backoff until it succeeds or the service is stopped, so nothing is dropped.
Bus consumers of several topics share one ``Inbox``: it drains every topic without
blocking, and only when all are empty waits on one of them in turn, with a timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from mycelium.client import Consumer, Producer
from mycelium.errors import BackpressureTimeout, BrokerUnavailable, CorruptFrame
from mycelium.protocol import Message, ProtocolError, parse_message

__all__ = ["Counters", "Inbox", "Malformed", "Service", "ServiceProcess", "serve"]

log = logging.getLogger("mycelium.services")

#: How long a service waits for the broker when it starts.
CONNECT_WAIT_S = 10.0
#: A consumer's wait for the next batch before it checks the stop event again.
IDLE_WAIT_S = 0.05
#: Messages taken from a topic per step.
BATCH = 256
#: Retry bounds for a publish the broker cannot take right now.
RETRY_MIN_S = 0.01
RETRY_MAX_S = 0.5
#: How often a running service rewrites its stats file.
STATS_EVERY_S = 0.5
#: Consumer waits: a little spinning only; the machine has few cores and many services.
CONSUMER_WAIT = {"spins": 64, "yields": 8, "wait_for_broker": CONNECT_WAIT_S}


class Malformed(ValueError):
    """Input that cannot be what it claims to be (bad JSON, a field of the wrong type)."""


@dataclass(slots=True)
class Counters:
    """What a service did; written only by its own loop."""

    received: int = 0
    published: int = 0
    skipped_malformed: int = 0
    ignored: int = 0
    errors: int = 0


class Service:
    """Base of every service: subclasses give ``connect``, ``step`` and ``disconnect``."""

    name: ClassVar[str]

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        duration: float | None = None,
        stats_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.duration = duration
        self.stats_file = Path(stats_file) if stats_file else None
        self.counters = Counters()
        self.state = "created"
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._producer: Producer | None = None

    # -- what subclasses provide ------------------------------------------------------
    def connect(self) -> None:
        """Open the broker handles (called in the service's own thread)."""

    def step(self) -> None:
        """Handle one bounded batch of work, or wait (bounded) for some."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Close what ``connect`` opened."""

    def report(self) -> dict[str, Any]:
        """Service-specific figures for the stats file (positions, signals, ...)."""
        return {}

    # -- running ----------------------------------------------------------------------
    def run(self) -> None:
        """Run in the calling thread until stopped or ``duration`` passed."""
        deadline = None if self.duration is None else time.monotonic() + self.duration
        self.state = "connecting"
        failed = True
        try:
            self.connect()
            self.state = "running"
            self.ready.set()
            log.info("%s running", self.name)
            next_stats = 0.0
            while not self.stopping.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_stats:
                    self.write_stats()
                    next_stats = now + STATS_EVERY_S
                try:
                    self.step()
                except (BrokerUnavailable, CorruptFrame) as exc:
                    self.counters.errors += 1
                    log.warning("%s: %s: %s", self.name, type(exc).__name__, exc)
                    self.stopping.wait(RETRY_MIN_S)
            failed = False
        finally:
            self.state = "stopping"
            try:
                self.disconnect()
                if self._producer is not None:
                    self._producer.close()
            finally:
                self.state = "failed" if failed else "stopped"
                self.write_stats()
                log.info("%s stopped: %s", self.name, asdict(self.counters))

    def start(self) -> Self:
        """Run in a daemon thread; returns once connected (else RuntimeError from the cause)."""
        self._thread = threading.Thread(target=self._run_thread, name=self.name, daemon=True)
        self._thread.start()
        while not self.ready.wait(0.05):
            if not self._thread.is_alive():
                self._thread.join()
                raise RuntimeError(f"{self.name} did not start") from self._failure
        return self

    def _run_thread(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self._failure = exc
            log.exception("%s failed", self.name)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end and wait for it (thread mode); raises if it does not end."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self.name} did not stop within {timeout}s")
            if self._failure is not None:
                raise RuntimeError(f"{self.name} failed") from self._failure

    def snapshot(self) -> dict[str, Any]:
        """Counters, state and the service's own report, JSON-ready."""
        return {"service": self.name, "state": self.state, **asdict(self.counters), **self.report()}

    def write_stats(self) -> None:
        """Atomically replace the stats file (if any) with ``snapshot()``."""
        if self.stats_file is None:
            return
        tmp = self.stats_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot(), default=str))
        os.replace(tmp, self.stats_file)

    # -- helpers for subclasses -------------------------------------------------------
    @property
    def producer(self) -> Producer:
        """This service's producer, connected on first use."""
        if self._producer is None:
            self._producer = Producer(
                self.socket_path, name=self.name, wait_for_broker=CONNECT_WAIT_S
            )
        return self._producer

    def publish(self, message: bytes) -> bool:
        """Publish a Protocol V2 message, retrying while the broker is away or a ring is
        full; False only if the service was stopped first."""
        delay = RETRY_MIN_S
        while True:
            try:
                self.producer.publish_message(message)
                self.counters.published += 1
                return True
            except (BrokerUnavailable, BackpressureTimeout) as exc:
                self.counters.errors += 1
                log.warning("%s: publish retried: %s", self.name, exc)
                if self.stopping.wait(delay):
                    return False
                delay = min(delay * 2, RETRY_MAX_S)

    def consumer(self, topic: str, group: str | None = None) -> Consumer:
        return Consumer(topic, self.socket_path, group, name=self.name, **CONSUMER_WAIT)  # type: ignore[arg-type]


class Inbox:
    """Parsed messages from several topics, for a service's ``step``."""

    def __init__(self, service: Service, consumers: list[Consumer]) -> None:
        self.service = service
        self.consumers = consumers
        self._turn = 0

    def messages(self) -> Iterator[Message]:
        """One batch: what is waiting on every topic, else what comes on one within
        ``IDLE_WAIT_S``. Undecodable payloads are counted, logged and skipped."""
        batch = [p for c in self.consumers for p in c.recv_many(BATCH, timeout=0.0)]
        if not batch:
            consumer = self.consumers[self._turn % len(self.consumers)]
            self._turn += 1
            batch = consumer.recv_many(BATCH, timeout=IDLE_WAIT_S)
        counters = self.service.counters
        for payload in batch:
            counters.received += 1
            try:
                yield parse_message(payload)
            except ProtocolError as exc:
                counters.skipped_malformed += 1
                log.warning("%s: skipped a malformed message: %s", self.service.name, exc)

    def close(self) -> None:
        for c in self.consumers:
            c.close()


def serve(service: Service) -> None:
    """Run ``service`` in the foreground of this process; SIGTERM and SIGINT stop it."""

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s: %s, stopping", service.name, signal.Signals(signum).name)
        service.stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    service.run()


class ServiceProcess:
    """A service in a child process (``python -m mycelium service NAME``), its stats file
    and log in ``workdir``."""

    def __init__(
        self, name: str, socket_path: str, workdir: str | os.PathLike[str], *args: str
    ) -> None:
        self.name = name
        self.workdir = Path(workdir)
        self.stats_path = self.workdir / f"{name}.stats.json"
        self.log_path = self.workdir / f"{name}.log"
        self.cmd = [
            sys.executable, "-m", "mycelium", "service", name, "--socket", socket_path,
            "--stats-file", str(self.stats_path), *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        # A session of its own: a Ctrl-C at the terminal reaches the parent only, which
        # then stops the children in order.
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stats(self) -> dict[str, Any]:
        """The last stats the service wrote ({} before its first write)."""
        try:
            stats: dict[str, Any] = json.loads(self.stats_path.read_text())
            return stats
        except (OSError, ValueError):
            return {}

    def is_ready(self) -> bool:
        """Connected and running; raises if the process already exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
        return self.stats().get("state") == "running"

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM; killing it", self.name, self.proc.pid)
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
