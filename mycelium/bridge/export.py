"""Export: a local topic into its JetStream stream, at least once, in order, bounded.

How this works
--------------
``unacked`` holds what was sent and not yet acknowledged, oldest first, never more than
``max_in_flight``: when it is full the exporter stops reading the local topic, so a slow
or unreachable NATS backs up into the ring (a lossless topic's producers wait, a lossy
one counts its loss) and the bridge's memory stays bounded. Acks are settled from the
head; the local source is acknowledged only up to the last settled message. A failed or
overdue ack ends the session (``SessionLost``): the bridge reconnects and ``run`` re-sends
every unacked message, in order, with its original message id, so JetStream drops the
ones it already had and a producer's order is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import PubAck

from mycelium.bridge import headers
from mycelium.bridge.figures import ExportFigures
from mycelium.bridge.source import ExportSource, Outgoing
from mycelium.config import BridgeConfig

__all__ = ["Exporter", "SessionLost"]

#: How long one local read waits for a first message while nothing is in flight.
IDLE_READ_S = 0.05


class SessionLost(Exception):
    """The NATS connection can no longer be trusted: reconnect and re-send."""


@dataclass
class _Sent:
    record: Outgoing
    headers: dict[str, str]
    ack: asyncio.Future[PubAck] | None = None
    sent_at: float = 0.0


class Exporter:
    """One exported topic; its unacked messages outlive a NATS session."""

    def __init__(
        self,
        cfg: BridgeConfig,
        host: str,
        topic: str,
        source: ExportSource,
        figures: ExportFigures,
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.topic = topic
        self.subject = headers.subject(cfg.subject_prefix, topic)
        self.source = source
        self.figures = figures
        self.unacked: deque[_Sent] = deque()
        self.ack_timeout_s = cfg.publish_ack_timeout_ms / 1000

    async def _send(self, js: JetStreamContext, item: _Sent) -> None:
        try:
            item.ack = await js.publish_async(
                self.subject, item.record.payload, headers=item.headers
            )
        except Exception as exc:  # nats-py raises several unrelated classes on a dead link
            raise SessionLost(f"publish on {self.subject}: {exc!r}") from exc
        item.sent_at = time.monotonic()

    def _settle(self) -> int:
        """Pop the acked head; returns how many. Raises SessionLost on a failed ack."""
        n = 0
        while self.unacked:
            ack = self.unacked[0].ack
            if ack is None or not ack.done():
                break
            if ack.cancelled() or ack.exception() is not None:
                raise SessionLost(f"publish ack on {self.subject}: {ack!r}")
            if ack.result().duplicate:
                self.figures.duplicates += 1
            self.unacked.popleft()
            n += 1
        if n:
            self.figures.exported += n
            self.source.ack()
        return n

    async def _wait_head(self) -> None:
        """Wait for the oldest ack; raises SessionLost when it is overdue."""
        head = self.unacked[0]
        assert head.ack is not None
        left = head.sent_at + self.ack_timeout_s - time.monotonic()
        if left > 0:
            await asyncio.wait({head.ack}, timeout=left)
        if not head.ack.done():
            raise SessionLost(f"no publish ack on {self.subject} within {self.ack_timeout_s}s")

    async def run(self, js: JetStreamContext, stopping: asyncio.Event) -> None:
        """Export until ``stopping`` is set and nothing is in flight; raises SessionLost."""
        if self.unacked:
            self.figures.resent += len(self.unacked)
            for item in self.unacked:
                await self._send(js, item)
        limit = self.cfg.max_in_flight
        while True:
            self._settle()
            if stopping.is_set():
                if not self.unacked:
                    return
                await self._wait_head()
                continue
            room = limit - len(self.unacked)
            if room <= 0:
                await self._wait_head()
                continue
            timeout = 0.0 if self.unacked else IDLE_READ_S
            batch = await self.source.read(room, timeout)
            if not batch:
                if self.unacked:
                    await self._wait_head()
                continue
            # All of the batch is queued before any is sent: a send that fails leaves the
            # rest in ``unacked`` for the next session, never only in this frame.
            items = [_Sent(r, headers.export_headers(self.host, self.topic, *r[1:])) for r in batch]
            self.unacked.extend(items)
            for item in items:
                await self._send(js, item)

    def sync_figures(self) -> None:
        """Copy the figures kept elsewhere (for the status file and metrics)."""
        self.figures.in_flight = len(self.unacked)
        self.figures.echoes_dropped = self.source.echoes
