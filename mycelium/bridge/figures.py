"""The bridge's figures: counters per topic, a JSON status file and a Prometheus endpoint.

The coordinator has no hook for a client's own figures yet, so the bridge reports them
itself: ``status.json`` in its state directory (rewritten atomically every second) and, with
``--metrics HOST:PORT``, ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import msgspec

__all__ = ["BridgeFigures", "ExportFigures", "ImportFigures", "serve_metrics", "write_status"]

#: Seconds between two rewrites of the status file.
STATUS_INTERVAL_S = 1.0


class ExportFigures(msgspec.Struct):
    """One exported topic."""

    exported: int = 0  # acknowledged by JetStream
    in_flight: int = 0  # sent, ack not yet back
    resent: int = 0  # sent again on a new connection
    duplicates: int = 0  # JetStream said it already had it (duplicate window)
    echoes_dropped: int = 0  # imported here, so not exported again


class ImportFigures(msgspec.Struct):
    """One imported topic."""

    imported: int = 0  # in the local ring
    acks_pending: int = 0  # fetched, not yet acknowledged to JetStream
    duplicates_dropped: int = 0  # redelivered after they were already in the ring
    own_dropped: int = 0  # exported by this host itself
    lag: int = 0  # messages the stream holds for us beyond the last fetch
    last_stream_seq: int = 0
    ring_full_waits: int = 0  # times the local ring had no room (local consumers behind)
    gap_filled: int = 0  # read from the stream by sequence at a gap (a killed predecessor's batch)


class BridgeFigures(msgspec.Struct):
    """Everything the bridge reports."""

    name: str
    pid: int
    connected: bool = False
    server: str = ""
    reconnects: int = 0
    exports: dict[str, ExportFigures] = msgspec.field(default_factory=dict)
    imports: dict[str, ImportFigures] = msgspec.field(default_factory=dict)
    updated_ns: int = 0


def write_status(path: Path, figures: BridgeFigures) -> None:
    """Replace ``path`` with the figures as JSON (rename: a reader never sees half of it)."""
    figures.updated_ns = time.time_ns()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.encode(figures))
    os.replace(tmp, path)


def prometheus_text(figures: BridgeFigures) -> str:
    """The figures in the Prometheus text format (``mycelium_bridge_*``)."""
    lines = [
        f'mycelium_bridge_connected{{bridge="{figures.name}"}} {int(figures.connected)}',
        f'mycelium_bridge_reconnects_total{{bridge="{figures.name}"}} {figures.reconnects}',
    ]
    for kind, table in (("export", figures.exports), ("import", figures.imports)):
        for topic, fig in table.items():
            for key, value in msgspec.structs.asdict(fig).items():
                labels = f'bridge="{figures.name}",topic="{topic}"'
                lines.append(f"mycelium_bridge_{kind}_{key}{{{labels}}} {value}")
    return "\n".join(lines) + "\n"


async def serve_metrics(listen: str, figures: BridgeFigures) -> asyncio.Server:
    """Serve ``GET /metrics`` on ``HOST:PORT`` (one request per connection; raises OSError)."""
    host, _, port = listen.rpartition(":")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            ok = request.split(b" ")[1:2] == [b"/metrics"]
            body = prometheus_text(figures).encode() if ok else b"not found\n"
            status = b"200 OK" if ok else b"404 Not Found"
            writer.write(
                b"HTTP/1.0 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
        except (OSError, TimeoutError):
            pass  # the scraper went away
        finally:
            writer.close()

    return await asyncio.start_server(answer, host or "127.0.0.1", int(port))
