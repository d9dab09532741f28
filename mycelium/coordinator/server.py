"""The coordinator daemon: control socket, liveness sweeps, stats, reload, shutdown.

How this works
--------------
One asyncio loop serves the Unix control socket. Each connection is checked (peer
credentials against the allowed uids/gids, ``max_connections``), must say Hello within
``connection_timeout_ms``, and then exchanges typed request/reply frames; the session
table in ``mycelium.control.session`` decides what may come when. A malformed, oversized,
unknown or out-of-order frame, or a wrong protocol version, gets an ``Error`` reply and
the connection is closed; everyone else is unaffected. A request that is merely refused
(unknown topic) gets an ``Error`` and the connection stays open.

The coordinator is never on the data path: producers and consumers exchange messages
through the segments ``BrokerState`` created. A periodic sweep notices dead clients
(pid and process start time) and retires finished lanes. On SIGTERM/SIGINT it stops
serving; if clients are still alive their segments (and the registry) stay, so a new
coordinator adopts them and nothing in flight is lost. SIGHUP reloads the config.

One broker per socket (``socket_lock``). Connection handling lives in
``connections``, request dispatch in ``requests``; this file is the daemon's life.

With ``[metrics] listen`` (or ``--metrics``) a Prometheus endpoint serves the same
figures as ``stats`` (``mycelium.coordinator.metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from typing import Any

from mycelium.config import BrokerConfig
from mycelium.control.limits import MAX_REQUEST_FRAME_BYTES
from mycelium.coordinator.connections import ConnectionServer
from mycelium.coordinator.metrics import MetricsEndpoint
from mycelium.coordinator.requests import ClientConnection, bounded_stats_reply
from mycelium.coordinator.socket_lock import release_socket_lock, take_socket
from mycelium.coordinator.state_file import (
    forget_registry_name,
    read_registry_name,
    write_registry_name,
)
from mycelium.coordinator.stats import RateMeter
from mycelium.coordinator.topology import BrokerState
from mycelium.errors import ConfigError, MyceliumError, SegmentError
from mycelium.logs import fields
from mycelium.shm.registry import Registry
from mycelium.shm.segment import TRUST, broker_id_for, fresh_token, segment_name
from mycelium.topology import Topology

__all__ = ["Coordinator", "bounded_stats_reply", "registry_name_for", "run_broker"]

log = logging.getLogger("mycelium.coordinator")

SWEEP_INTERVAL_S = 0.1
#: A scrape waits this long for the loop to compute the figures.
SNAPSHOT_TIMEOUT_S = 5.0


def registry_name_for(broker_id: str) -> str:
    """A fresh, unpredictable registry name for a broker id (``/myc-<id>-R.<token>``)."""
    return segment_name(broker_id, "R", f".{fresh_token()}")


class Coordinator(ConnectionServer):
    """The broker daemon. ``await run()`` serves until ``stop()`` (or a signal)."""

    def __init__(
        self, config: BrokerConfig, socket_path: str, config_path: str | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.socket_path = os.path.abspath(socket_path)
        self.broker_id = broker_id_for(self.socket_path)
        self.state: BrokerState | None = None
        self._conns: set[ClientConnection] = set()
        self._next_session = 1
        self._stop = asyncio.Event()
        self._lock_fd: int | None = None
        self._rates = RateMeter()
        self._started_s = time.time()
        self._metrics: MetricsEndpoint | None = None

    async def run(self) -> None:
        """Serve until stopped. Raises BrokerUnavailable if the socket is taken."""
        self._lock_fd = take_socket(self.socket_path)
        TRUST.trust_broker(os.geteuid(), self.config.server.segment_mode)
        registry, adopted = self._open_registry()
        self.state = BrokerState(self.broker_id, self.config, registry, adopted)
        self.state.sweep()
        self.state.publish()
        # A backlog as deep as the connection limit: a burst of connects (a restart, a
        # crowd, a hostile flood) waits to be accepted rather than failing with EAGAIN.
        server = await asyncio.start_unix_server(
            self._serve,
            path=self.socket_path,
            limit=MAX_REQUEST_FRAME_BYTES,
            backlog=self.config.server.max_connections,
        )
        os.chmod(self.socket_path, self.config.server.socket_mode)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_from_signal)
        log.info(
            "broker %s serving on %s (pid %d, %d topics%s)",
            self.broker_id,
            self.socket_path,
            os.getpid(),
            len(self.state.topo.topics),
            ", adopted existing segments" if adopted else "",
            extra=fields("started", pid=os.getpid()),
        )
        sweeper = asyncio.create_task(self._sweep_loop())
        try:
            if self.config.metrics.listen:
                self._metrics = MetricsEndpoint.serve(
                    self.config.metrics.listen, functools.partial(self._snapshot, loop)
                )
            await self._stop.wait()
        finally:
            if self._metrics is not None:
                self._metrics.close()
            sweeper.cancel()
            server.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
            self._shutdown_state()
            if self._lock_fd is not None:
                release_socket_lock(self.socket_path, self._lock_fd)

    def _open_registry(self) -> tuple[Registry, Topology | None]:
        """Adopt the registry our predecessor named in the state file, else create one.

        The name comes only from the broker's own state file, never from recomputing it,
        and the segment must pass the owner and mode checks: a squatted or planted
        registry is refused (logged, counted) and a fresh one is made beside it.
        """
        name = read_registry_name(self.socket_path)
        if name is not None:
            try:
                return Registry.adopt(name)
            except SegmentError as exc:
                log.warning("not adopting registry %s: %s", name, exc)
        registry = Registry.create(
            registry_name_for(self.broker_id), self.config.server.segment_mode
        )
        write_registry_name(self.socket_path, registry.seg.name)
        return registry, None

    def _shutdown_state(self) -> None:
        state = self.state
        if state is None:
            return
        state.sweep()
        alive = state.live_clients()
        if alive:
            state.publish()
            log.info("stopping; %d clients still run, their segments stay for adoption", alive)
        else:
            log.info("stopping; no clients left, removing every segment")
            forget_registry_name(self.socket_path)
        self.state = None  # connection handlers cancelled after this must not touch it
        state.close(unlink=not alive)

    def _reload_from_signal(self) -> None:
        with contextlib.suppress(ConfigError):  # reload() logged why
            self.reload()

    async def _sweep_loop(self) -> None:
        assert self.state is not None
        stats_every = self.config.performance.stats_interval_ms / 1000
        next_stats = 0.0
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                if self.state.sweep() or not self.state.registry.intact():
                    self.state.publish()  # a change, or a scribbled registry to repair
                now = time.monotonic()
                if now >= next_stats:
                    self._rates.sample(self.state)
                    next_stats = now + stats_every
            except MyceliumError:
                log.exception("sweep failed; retrying on the next one")

    async def _stats_now(self) -> dict[str, Any] | None:
        return None if self.state is None else self._stats(self.state)

    def _snapshot(self, loop: asyncio.AbstractEventLoop) -> dict[str, Any] | None:
        """The stats document for a scrape, from the metrics thread: computed on the loop
        (the only thread that touches the state), from read-only loads of shared memory."""
        future = asyncio.run_coroutine_threadsafe(self._stats_now(), loop)
        return future.result(SNAPSHOT_TIMEOUT_S)


def run_broker(config: BrokerConfig, socket_path: str, config_path: str | None = None) -> None:
    """Run a coordinator in the foreground until SIGTERM/SIGINT or a Shutdown request."""
    asyncio.run(Coordinator(config, socket_path, config_path).run())
