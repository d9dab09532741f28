"""Export: a local topic into its JetStream stream, at least once, in order, bounded.

How this works
--------------
``unacked`` holds what was sent and not yet acknowledged, oldest first, never more than
``max_in_flight``: when it is full the exporter stops reading the local topic, so a slow
or unreachable NATS backs up into the ring (a lossless topic's producers wait, a lossy
one counts its loss) and the bridge's memory stays bounded. Each batch read goes out in
one write (``publisher.BatchPublisher``, headers from a ``HeaderBlock``); acks come back
by reply token and are settled from the head. The local source is acknowledged only when
everything read from it is settled (its ack is cumulative: acking with sends still in
flight would let a SIGKILL lose them), at the latest every ``SOURCE_ACK_EVERY`` messages,
when the exporter stops reading until the window has drained. A failed or overdue ack
ends the session (``SessionLost``): the bridge reconnects and ``run`` re-sends every
unacked message, in order, with its original message id, so JetStream drops the ones it
already had and a producer's order is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from nats.aio.client import Client

from mycelium.bridge import headers
from mycelium.bridge.figures import ExportFigures
from mycelium.bridge.publisher import BatchPublisher, PubAck
from mycelium.bridge.source import ExportSource
from mycelium.client.envelope import Envelope
from mycelium.config import BridgeConfig

__all__ = ["Exporter", "SessionLost"]

#: How long one local read waits for a first message while nothing is in flight.
IDLE_READ_S = 0.05
#: Read at most this many messages (in multiples of the window) between two acks of the
#: local source: then the window drains once so that everything read is settled.
SOURCE_ACK_EVERY = 8


class SessionLost(Exception):
    """The NATS connection can no longer be trusted: reconnect and re-send."""


@dataclass(slots=True)
class _Sent:
    record: Envelope
    headers: bytes
    ack: PubAck | None = None
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
        self.subject = headers.subject(cfg.subject_prefix, topic).encode()
        self.header_block = headers.HeaderBlock(host, topic)
        self.source = source
        self.figures = figures
        self.unacked: deque[_Sent] = deque()
        self.ack_timeout_s = cfg.publish_ack_timeout_ms / 1000
        self._by_token: dict[int, _Sent] = {}
        self._next_token = 0
        self._progress = asyncio.Event()
        self._read_since_ack = 0

    def _on_ack(self, token: int, ack: PubAck) -> None:
        item = self._by_token.pop(token, None)
        if item is not None:  # else an ack of an earlier session's send
            item.ack = ack
            self._progress.set()

    async def _send(self, publisher: BatchPublisher, items: list[_Sent]) -> None:
        batch = []
        for item in items:
            self._next_token += 1
            self._by_token[self._next_token] = item
            batch.append((self._next_token, item.headers, item.record.payload))
        try:
            await publisher.send(self.subject, batch)
        except Exception as exc:  # nats-py raises several unrelated classes on a dead link
            raise SessionLost(f"publish on {self.subject.decode()}: {exc!r}") from exc
        now = time.monotonic()
        for item in items:
            item.sent_at = now

    def _settle(self) -> int:
        """Pop the acked head; returns how many. Raises SessionLost on a failed ack."""
        n = 0
        while self.unacked:
            ack = self.unacked[0].ack
            if ack is None:
                break
            if ack.error is not None:
                raise SessionLost(f"publish on {self.subject.decode()} refused: {ack.error}")
            if ack.duplicate:
                self.figures.duplicates += 1
            self.unacked.popleft()
            n += 1
        if n:
            self.figures.exported += n
        if not self.unacked and self._read_since_ack:
            self.source.ack()  # everything read so far is in JetStream
            self._read_since_ack = 0
        return n

    async def _wait_head(self) -> None:
        """Wait for the oldest ack; raises SessionLost when it is overdue."""
        head = self.unacked[0]
        while head.ack is None:
            left = head.sent_at + self.ack_timeout_s - time.monotonic()
            if left <= 0:
                raise SessionLost(
                    f"no publish ack on {self.subject.decode()} within {self.ack_timeout_s}s"
                )
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), left)
            except TimeoutError:
                pass

    async def run(self, nc: Client, stopping: asyncio.Event) -> None:
        """Export until ``stopping`` is set and nothing is in flight; raises SessionLost."""
        publisher = BatchPublisher(nc, self._on_ack)
        self._by_token = {}
        try:
            await publisher.open()
            await self._run(publisher, stopping)
        finally:
            await publisher.close()

    async def _run(self, publisher: BatchPublisher, stopping: asyncio.Event) -> None:
        if self.unacked:
            self.figures.resent += len(self.unacked)
            for item in self.unacked:
                item.ack = None
            await self._send(publisher, list(self.unacked))
        limit = self.cfg.max_in_flight
        while True:
            self._settle()  # with nothing left in flight, this acks the source
            if stopping.is_set() and not self.unacked:
                return
            room = limit - len(self.unacked)
            draining = self._read_since_ack >= SOURCE_ACK_EVERY * limit
            if stopping.is_set() or draining or room <= 0:
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
            encode = self.header_block.encode
            items = [_Sent(r, encode(r.producer, r.sequence, r.published_ns)) for r in batch]
            self.unacked.extend(items)
            self._read_since_ack += len(items)
            await self._send(publisher, items)

    def sync_figures(self) -> None:
        """Copy the figures kept elsewhere (for the status file and metrics)."""
        self.figures.in_flight = len(self.unacked)
        self.figures.echoes_dropped = self.source.echoes
