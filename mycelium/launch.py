"""Starting a broker from Python: ``run_broker`` in the foreground, ``Broker`` in a child.

How this works
--------------
Both take a ``BrokerConfig`` built in Python and check it exactly as a TOML file is
checked (``validate_config``), so a bad value fails here with the key's path, before any
process starts.

``run_broker`` runs the coordinator in the calling process until SIGTERM/SIGINT or a
``Shutdown`` request, as ``mycelium broker`` does; it needs the main thread (signals).

``Broker`` is for tests and notebooks: ``with Broker(config) as b:`` starts the real
coordinator in a child process (``python -c``, so no ``__main__`` guard is needed and the
coordinator keeps its own process, as DESIGN.md wants) on a private socket in a fresh
0700 directory, and waits until it answers. The child reads its config from a pipe and
keeps that pipe as a lifeline: when it reads EOF (the parent closed it, or died) it stops
itself, so a crashed notebook leaves no broker behind. Leaving the block stops it
(SIGTERM, SIGKILL after ``STOP_TIMEOUT_S``) and then removes every shared-memory object
of the private broker, even if the block raised or a client was left open: nothing of a
private broker outlives it. With an explicit ``socket_path`` only orphans are removed
(``mycelium cleanup``'s rule), so clients elsewhere keep what they use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import msgspec

from mycelium.client import Consumer, Producer
from mycelium.client.admin import admin_request
from mycelium.config import BrokerConfig, default_config, validate_config
from mycelium.control.wire import StatsReply, StatsRequest
from mycelium.coordinator import server
from mycelium.coordinator.cleanup import remove_orphans
from mycelium.errors import BrokerUnavailable, MyceliumError
from mycelium.paths import resolve_socket_path
from mycelium.shm.segment import broker_id_for, list_segments, unlink_quietly

__all__ = ["Broker", "run_broker"]

#: How long ``Broker.start`` waits for the child to answer on its socket.
START_TIMEOUT_S = 15.0
#: How long ``Broker.stop`` waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT_S = 10.0
#: Pause between two readiness probes of a starting child.
START_POLL_S = 0.01
#: The child's stderr kept in a failure message.
LOG_TAIL_CHARS = 2000
_CHILD = "from mycelium.launch import _child_main; _child_main()"


def run_broker(
    config: BrokerConfig | None = None,
    socket_path: str | os.PathLike[str] | None = None,
) -> None:
    """Run a coordinator in this process until SIGTERM/SIGINT or a Shutdown request.

    ``config``: None for the embedded default; a Python-built one is validated as TOML
    is. ``socket_path``: else the config's ``server.socket_path``, else the default.
    Call it from the main thread. Raises ConfigError (nothing started), BrokerUnavailable
    (another broker holds the socket), SegmentError.
    """
    cfg = default_config() if config is None else validate_config(config)
    server.run_broker(cfg, resolve_socket_path(socket_path or cfg.server.socket_path))


class Broker:
    """A real broker in a child process, stopped and cleaned up on exit::

        with Broker(BrokerConfig(topics=(TopicConfig(name="ticks"),))) as b:
            with b.consumer("ticks") as c, b.producer() as p:
                p.publish("ticks", b"x")
                assert c.recv(timeout=1.0) == b"x"

    Raises ConfigError at construction for a bad config, BrokerUnavailable from
    ``start`` if the child does not answer within ``start_timeout`` seconds.
    """

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        start_timeout: float = START_TIMEOUT_S,
        log_level: str = "warning",
    ) -> None:
        self.config = default_config() if config is None else validate_config(config)
        self._private = socket_path is None
        self._dir: str | None = None
        self._socket = os.fspath(socket_path) if socket_path is not None else ""
        self.start_timeout = start_timeout
        self.log_level = log_level
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def socket_path(self) -> str:
        """The control socket clients pass as ``socket_path`` (set once started)."""
        if not self._socket:
            raise BrokerUnavailable("the broker is not started: use 'with Broker(...)' or start()")
        return self._socket

    @property
    def pid(self) -> int | None:
        """The coordinator's process id while it runs, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the coordinator process is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Broker:
        """Start the coordinator and wait until it answers. Raises BrokerUnavailable
        (everything started is stopped and removed first)."""
        if self._proc is not None:
            raise BrokerUnavailable("this Broker was already started")
        if self._private:
            self._dir = tempfile.mkdtemp(prefix="mycelium-")
            self._socket = str(Path(self._dir) / "broker.sock")
        # Closed in stop(): the child writes to it for as long as it runs.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, self._socket, self.log_level],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,  # a Ctrl-C in the terminal is the parent's to handle
        )
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(msgspec.json.encode(self.config) + b"\n")
            self._proc.stdin.flush()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.running:
                raise BrokerUnavailable(f"the broker exited at start: {self._log_tail()}")
            if self._answers():
                return
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"no answer on {self._socket} within {self.start_timeout}s: {self._log_tail()}"
                )
            time.sleep(START_POLL_S)

    def _answers(self) -> bool:
        """Whether our child (not another broker on the same socket) serves the socket."""
        assert self._proc is not None
        try:
            reply = admin_request(StatsRequest(), self._socket)
        except MyceliumError:
            return False
        return isinstance(reply, StatsReply) and reply.stats["broker"]["pid"] == self._proc.pid

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        text: str = self._log.read().decode(errors="replace")
        return text[-LOG_TAIL_CHARS:].strip() or "(nothing logged)"

    def stop(self) -> None:
        """Stop the coordinator (SIGTERM, then SIGKILL) and remove what it leaves: every
        object of a private broker, the orphans of one on a given socket. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # the lifeline: the child stops on EOF too
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._socket:
            self._remove_leftovers()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _remove_leftovers(self) -> None:
        broker_id = broker_id_for(os.path.abspath(self._socket))
        remove_orphans(broker_id)
        if self._private:
            for name in list_segments(broker_id):
                unlink_quietly(name)
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def producer(self, **kwargs: Any) -> Producer:
        """A ``Producer`` on this broker (keyword arguments as ``Producer``'s)."""
        return Producer(self.socket_path, **kwargs)

    def consumer(self, topic: Any, group: str | None = None, **kwargs: Any) -> Consumer:
        """A ``Consumer`` of ``topic`` on this broker (other arguments as ``Consumer``'s)."""
        return Consumer(topic, self.socket_path, group, **kwargs)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _child_main() -> None:
    """The child of ``Broker``: argv is (socket path, log level), stdin the config line
    and then the lifeline."""
    socket_path, log_level = sys.argv[1], sys.argv[2]
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr)
    config = msgspec.json.decode(sys.stdin.buffer.readline(), type=BrokerConfig)

    def stop_on_eof() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
        os.kill(os.getpid(), signal.SIGTERM)  # the coordinator's graceful stop

    threading.Thread(target=stop_on_eof, daemon=True).start()
    try:
        server.run_broker(config, socket_path)
    except MyceliumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
