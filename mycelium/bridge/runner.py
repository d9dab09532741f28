"""The bridge process: local clients, NATS sessions with reconnect, figures, shutdown.

How this works
--------------
The local side (an export source per exported topic, one producer for the imported
ones, the import cursors) is opened once and outlives NATS sessions. A session is one
NATS connection: it makes sure the streams and durable consumers exist, then runs an
``Exporter`` and an ``Importer`` per topic until one fails or the connection drops;
then the bridge waits a capped, jittered backoff and starts a session on the next server
of the list. A Mycelium error (unknown topic, broker gone, message too large for the
local topic) is not NATS's fault and stops the bridge with a clear message instead.
SIGTERM/SIGINT stop reading the local topics, wait for the acks in flight, and exit.

Every second the figures go to the status file and, as a ``ReportFigures`` on the
bridge's own control connection, to the broker, whose ``mycelium status`` and metrics
show them until that connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client

from mycelium.aio import AsyncProducer
from mycelium.bridge import link
from mycelium.bridge.export import Exporter, SessionLost
from mycelium.bridge.figures import (
    STATUS_INTERVAL_S,
    BridgeFigures,
    ExportFigures,
    ImportFigures,
    serve_metrics,
    write_status,
)
from mycelium.bridge.importer import ImportCursor, Importer
from mycelium.bridge.source import ExportSource, import_producer_name, open_export_source
from mycelium.client.control import ControlChannel
from mycelium.config import BridgeConfig
from mycelium.control.wire import ReportedTopic, ReportFigures
from mycelium.errors import ConfigError, MyceliumError
from mycelium.paths import resolve_socket_path

__all__ = ["Bridge", "default_host", "run_bridge"]

log = logging.getLogger("mycelium.bridge")

#: How long the bridge waits for its local broker to answer at start.
BROKER_WAIT_S = 10.0
#: A session that lasted this long was healthy: the next reconnect backs off from the start.
SESSION_HEALTHY_S = 10.0


def default_host() -> str:
    """This machine's name in the form message ids and durable names take."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "host"


class Bridge:
    """One host's bridge: ``await Bridge(cfg, socket).run()`` until SIGTERM."""

    def __init__(self, cfg: BridgeConfig, socket_path: str | os.PathLike[str] | None) -> None:
        if not cfg.export and not cfg.import_:
            raise ConfigError("nothing to bridge: give --export or --import", path="bridge")
        self.cfg = cfg
        self.socket_path = resolve_socket_path(socket_path)
        self.host = cfg.name or default_host()
        default_dir = Path(self.socket_path).parent / f"bridge-{self.host}"
        self.state_dir = Path(cfg.state_dir) if cfg.state_dir else default_dir
        self.status_path = self.state_dir / "status.json"
        self.figures = BridgeFigures(name=self.host, pid=os.getpid())
        self.stopping = asyncio.Event()
        self.exporters: list[Exporter] = []
        self.importers: list[Importer] = []
        self._sources: list[ExportSource] = []
        self._cursors: list[ImportCursor] = []
        self._producer: AsyncProducer | None = None
        self._control: ControlChannel | None = None

    async def _open_local(self) -> None:
        """The local clients and cursors. Raises MyceliumError, OSError."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._control = await asyncio.to_thread(
            ControlChannel,
            self.socket_path,
            "admin",
            name=f"bridge-{self.host}",
            wait_for_broker_s=BROKER_WAIT_S,
        )
        if self.cfg.import_:
            self._producer = AsyncProducer(
                self.socket_path,
                name=import_producer_name(self.host),
                wait_for_broker=BROKER_WAIT_S,
            )
            await self._producer.connect()
        for topic in dict.fromkeys(self.cfg.import_):
            cursor = ImportCursor(self.state_dir / f"import-{topic}.seq")
            self._cursors.append(cursor)
            imported = self.figures.imports.setdefault(topic, ImportFigures())
            assert self._producer is not None
            self.importers.append(
                Importer(self.cfg, self.host, topic, self._producer, cursor, imported)
            )
        for topic in dict.fromkeys(self.cfg.export):
            source = await open_export_source(topic, self.socket_path, self.host, BROKER_WAIT_S)
            self._sources.append(source)
            exported = self.figures.exports.setdefault(topic, ExportFigures())
            self.exporters.append(Exporter(self.cfg, self.host, topic, source, exported))

    async def _close_local(self) -> None:
        for source in self._sources:
            await source.close()
        if self._producer is not None:
            await self._producer.close()
        for cursor in self._cursors:
            cursor.close()
        if self._control is not None:
            await asyncio.to_thread(self._control.close)

    async def _session(self, nc: Client, lost: asyncio.Event) -> None:
        """Run every exporter and importer on one connection until it fails or we stop."""
        in_flight = self.cfg.max_in_flight * max(1, len(self.exporters)) + 16
        js = nc.jetstream(publish_async_max_pending=in_flight)
        streams = {}
        for topic in dict.fromkeys(self.cfg.export + self.cfg.import_):
            streams[topic] = await link.ensure_stream(js, self.cfg, topic)
        for imp in self.importers:
            await link.ensure_consumer(js, self.cfg, streams[imp.topic], self.host, imp.topic)
        work: list[Coroutine[Any, Any, None]] = [e.run(nc, self.stopping) for e in self.exporters]
        work += [i.run(nc, js, streams[i.topic], self.stopping) for i in self.importers]
        await _until_done_or_lost([asyncio.create_task(w) for w in work], lost)

    async def _sessions(self) -> None:
        """Sessions one after another until stopped. Each failure (a connect or a session)
        moves to the next server and doubles the jittered backoff; a session that lasted
        SESSION_HEALTHY_S starts the backoff afresh."""
        server = 0  # which URL of the list the next connect starts at
        failures = 0
        connected_before = False
        while True:
            lost = asyncio.Event()

            async def on_lost(lost: asyncio.Event = lost) -> None:
                lost.set()

            began = time.monotonic()
            try:
                nc = await link.connect(self.cfg, server, self.host, on_lost)
            except MyceliumError:
                raise
            except Exception as exc:
                nc = None
                log.warning("cannot reach NATS: %r", exc)
            if nc is not None:
                url = nc.connected_url
                server_at = f"{url.hostname}:{url.port}" if url else ""  # no credentials
                self.figures.connected, self.figures.server = True, server_at
                self.figures.reconnects += connected_before
                connected_before = True
                try:
                    await self._session(nc, lost)
                    return  # stopped, everything in flight settled
                except MyceliumError:
                    raise
                except Exception as exc:
                    log.warning("NATS session on %s ended: %r", self.figures.server, exc)
                finally:
                    self.figures.connected = False
                    await link.close_quietly(nc)
            if self.stopping.is_set():
                return
            server += 1
            failures = 0 if time.monotonic() - began >= SESSION_HEALTHY_S else failures + 1
            await asyncio.sleep(link.backoff_s(failures, self.cfg))

    def _write_status(self) -> None:
        for exporter in self.exporters:
            exporter.sync_figures()
        write_status(self.status_path, self.figures)

    async def _report(self) -> None:
        while True:
            self._write_status()
            await self._report_to_broker()
            await asyncio.sleep(STATUS_INTERVAL_S)

    async def _report_to_broker(self) -> None:
        """The figures to the broker; a broker that is restarting gets the next ones."""
        f = self.figures
        topics = [
            ReportedTopic(t, "export", msgspec.structs.asdict(e)) for t, e in f.exports.items()
        ]
        topics += [
            ReportedTopic(t, "import", msgspec.structs.asdict(i)) for t, i in f.imports.items()
        ]
        report = ReportFigures(f.name, f.connected, f.server, f.reconnects, topics)
        assert self._control is not None
        try:
            await asyncio.to_thread(self._control.request, report)
        except MyceliumError as exc:
            log.debug("figures not reported: %s", exc)

    async def run(self) -> None:
        """Bridge until SIGTERM/SIGINT. Raises MyceliumError (local side), OSError."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self._open_local()
        metrics = None
        if self.cfg.metrics:
            metrics = await serve_metrics(self.cfg.metrics, self.figures)
        reporter = asyncio.create_task(self._report())
        try:
            await self._sessions()
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            if metrics is not None:
                metrics.close()
            self._write_status()
            await self._close_local()


async def _until_done_or_lost(work: list[asyncio.Task[None]], lost: asyncio.Event) -> None:
    """Wait for every task; raise the first failure, or SessionLost when ``lost`` is set."""
    watch: asyncio.Task[Any] = asyncio.create_task(lost.wait())
    pending: set[asyncio.Task[Any]] = set(work)
    try:
        while pending:
            done, _ = await asyncio.wait(pending | {watch}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {watch}:
                pending.discard(task)
                task.result()
            if watch in done:
                raise SessionLost("the NATS connection dropped")
    finally:
        for task in [*work, watch]:
            task.cancel()
        await asyncio.gather(*work, watch, return_exceptions=True)


def run_bridge(cfg: BridgeConfig, socket_path: str | os.PathLike[str] | None) -> None:
    """Run a bridge in the foreground (the ``mycelium bridge`` command)."""
    asyncio.run(Bridge(cfg, socket_path).run())
