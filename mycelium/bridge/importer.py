"""Import: a JetStream stream into the local topic, each message into the ring once.

How this works
--------------
A durable pull consumer per host and topic (``link.ensure_consumer``) hands out batches
in stream order, at most one unacknowledged batch at a time. For each batch the importer
drops what it has already put into the ring (stream sequence <= its cursor) and what this
host exported itself (origin header: no echo), publishes the rest into the ring (waiting
while the ring is full: nothing is acked before it is in the ring), then advances its
cursor and acks the batch cumulatively. The cursor is a word in a small mmap'd file in
the state directory, so it survives a SIGKILL of the bridge: a batch redelivered after a
crash is recognised and dropped. The one window left is between the ring publish and the
cursor store (a few bytecodes): a SIGKILL exactly there re-imports that batch.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import struct
from pathlib import Path

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from mycelium.aio import AsyncProducer
from mycelium.bridge import headers
from mycelium.bridge.figures import ImportFigures
from mycelium.bridge.source import LoopGuard
from mycelium.config import BridgeConfig
from mycelium.errors import BackpressureTimeout

__all__ = ["ImportCursor", "Importer"]

#: How long one fetch waits for messages before it asks again.
FETCH_WAIT_S = 1.0
#: After a fetch this small (a trickle), wait this long so the next one carries a batch:
#: a round trip per message would cap the rate at one per round trip.
SMALL_FETCH = 16
LINGER_S = 0.002
#: Backoff between tries while the local ring is full (seconds).
RING_RETRY_MIN_S = 50e-6
RING_RETRY_MAX_S = 5e-3

_CURSOR = struct.Struct("<Q")

log = logging.getLogger("mycelium.bridge")


class ImportCursor:
    """The last stream sequence put into the local ring, in an mmap'd 8-byte file."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _CURSOR.size:
                os.ftruncate(fd, _CURSOR.size)
            self._map = mmap.mmap(fd, _CURSOR.size)
        finally:
            os.close(fd)

    @property
    def value(self) -> int:
        return int(_CURSOR.unpack_from(self._map)[0])

    @value.setter
    def value(self, seq: int) -> None:
        _CURSOR.pack_into(self._map, 0, seq)  # the page cache keeps it through a SIGKILL

    def close(self) -> None:
        self._map.close()


class Importer:
    """One imported topic."""

    def __init__(
        self,
        cfg: BridgeConfig,
        host: str,
        topic: str,
        producer: AsyncProducer,
        cursor: ImportCursor,
        figures: ImportFigures,
        guard: LoopGuard | None,
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.topic = topic
        self.producer = producer
        self.cursor = cursor
        self.figures = figures
        self.guard = guard
        figures.last_stream_seq = cursor.value

    def _select(self, msgs: list[Msg]) -> tuple[list[bytes], Msg]:
        """The payloads of ``msgs`` still to go into the ring, and the message to ack.

        Anything at or below the highest sequence seen so far is a redelivery, even within
        one batch: a fetch can return late deliveries of an earlier request together with
        their redelivered copies (nats-py queues both). The stream delivers in order, and
        redelivers in order what it delivered, so nothing new hides below that mark.
        """
        done = self.cursor.value
        top = msgs[0]
        out = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            if seq <= done:
                self.figures.duplicates_dropped += 1
                continue
            done, top = seq, msg
            if (msg.headers or {}).get(headers.ORIGIN) == self.host:
                self.figures.own_dropped += 1
                continue
            if self.guard is not None:
                self.guard.note(msg.data)
            out.append(msg.data)
        return out, top

    async def _into_ring(self, payloads: list[bytes]) -> None:
        """Publish all of ``payloads``, waiting (on the loop) as long as the ring stays full.

        A batch cut short by the producer's backpressure bound says in ``published`` how
        much of it went in, so a retry carries on after it: nothing is published twice.
        """
        done = 0
        delay = RING_RETRY_MIN_S
        while done < len(payloads):
            try:
                done += await self.producer.publish_many(self.topic, payloads[done:])
            except BackpressureTimeout as exc:
                done += exc.published
                self.figures.ring_full_waits += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, RING_RETRY_MAX_S)

    async def run(self, js: JetStreamContext, stream: str, stopping: asyncio.Event) -> None:
        """Import until ``stopping`` is set; raises nats errors when the link fails."""
        durable = headers.durable_name(self.host, self.topic)
        info = await js.stream_info(stream)
        if info.state.last_seq < self.cursor.value:
            # The stream was deleted and made anew: its sequences start again.
            log.warning(
                "stream %s restarted at %d; import cursor reset", stream, info.state.last_seq
            )
            self.cursor.value = 0
        sub = await js.pull_subscribe_bind(durable, stream)
        try:
            while not stopping.is_set():
                try:
                    msgs = await sub.fetch(self.cfg.fetch_batch, timeout=FETCH_WAIT_S)
                except TimeoutError:  # nats-py raises both its own and asyncio's
                    continue
                if not msgs:
                    continue
                self.figures.acks_pending = len(msgs)
                payloads, top = self._select(msgs)
                await self._into_ring(payloads)
                last = top.metadata
                self.cursor.value = max(self.cursor.value, last.sequence.stream)
                await top.ack()  # cumulative: everything up to it
                self.figures.imported += len(payloads)
                self.figures.acks_pending = 0
                self.figures.lag = last.num_pending
                self.figures.last_stream_seq = self.cursor.value
                if len(msgs) < SMALL_FETCH and last.num_pending == 0:
                    await asyncio.sleep(LINGER_S)
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                pass  # the connection is gone already; the durable consumer stays
