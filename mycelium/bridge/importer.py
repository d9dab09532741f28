"""Import: a JetStream stream into the local topic, each message into the ring once.

How this works
--------------
A durable pull consumer per host and topic (``link.ensure_consumer``, AckPolicy.ALL)
delivers through a ``puller.Puller``, which keeps pull requests standing so the next
batch is on its way while this one is written. The importer takes what has arrived in
stream order (sorted, so a batch that mixes late deliveries with their redelivered copies
is put right), drops what it has already put into the ring (stream sequence <= its
cursor) and what this host exported itself (origin header: no echo), publishes the rest
into the ring in one batched write (waiting while the ring is full: nothing is acked
before it is in the ring; the cursor follows each write into the ring), then acks the
batch with one ack of its highest sequence, which under AckPolicy.ALL acks everything
before it too (valid because the importer writes in stream order, gaps filled first).
The ack is published, not waited for: one lost with a crash is a redelivery, which the
cursor drops. The cursor is a word in a small mmap'd file in the state directory, so it
survives a SIGKILL of the bridge: a batch redelivered after a crash is recognised and
dropped. The one window left is between a ring write and its cursor store (a few
bytecodes, no await): a SIGKILL exactly there re-imports what that write put in.

Gaps: messages a killed bridge had fetched and not acked are redelivered only after
``ack_wait``, and meanwhile the server hands newer ones to its successor. A cumulative ack
of a newer one would ack the missing ones too, and they would never come back (this lost
one in-flight batch in one restart of about four). So where a batch skips sequences the
importer reads them from the stream itself (``js.get_msg``: the next message of the
topic's subject after the cursor), imports them in order, and only then goes on with the
batch; one that holds nothing of the topic (deleted by the stream's limits, another
subject's) is passed over. The cursor never waits on the server's redelivery timing.
Waiting for the redelivery, as the importer once did, crawled at about one batch per
``ack_wait``: what it held beyond a gap filled ``max_ack_pending`` and came back in the
``ack_wait`` phase of its own delivery, so every fetch (redeliveries first, then newer
messages) skipped the sequences whose phase had not come yet, and the importer took only
the run before the first gap (a SIGKILL test once took 120 s and did not finish).
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mycelium.aio import AsyncProducer
from mycelium.bridge import headers
from mycelium.bridge.figures import ImportFigures
from mycelium.bridge.puller import Delivery, Puller
from mycelium.config import BridgeConfig
from mycelium.errors import BackpressureTimeout

__all__ = ["ImportCursor", "Importer"]

#: How long one pull request stands at the server (and the importer waits for a batch).
FETCH_WAIT_S = 1.0
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
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.topic = topic
        self.producer = producer
        self.cursor = cursor
        self.figures = figures
        self.subject = headers.subject(cfg.subject_prefix, topic)
        figures.last_stream_seq = cursor.value

    def _select(self, msgs: list[Delivery]) -> tuple[list[tuple[int, bytes]], Delivery | None, int]:
        """What of ``msgs`` goes into the ring next (stream sequence, payload), the delivery
        to ack after it (None: nothing to ack) and the lowest sequence beyond a gap (0: none).

        Anything at or below the cursor is a redelivery, and so is a second copy of one
        sequence within one batch: a redelivered copy can come beside or after the
        first. The ack goes to the highest sequence taken or dropped, and of two copies
        to the later delivery (the server ignores an ack older than its ack floor).
        """
        done = self.cursor.value
        top: Delivery | None = None
        out: list[tuple[int, bytes]] = []
        for msg in sorted(msgs, key=_delivery_order):
            seq = msg.seq
            if seq <= done:
                top = msg  # acked too: a batch of nothing but redeliveries must not stall
                self.figures.duplicates_dropped += 1
                continue
            if seq != done + 1:
                return out, top, seq
            done, top = seq, msg
            if msg.origin == self.host:
                self.figures.own_dropped += 1
                continue
            out.append((seq, msg.data))
        return out, top, 0

    async def _fill_gap(self, js: JetStreamContext, stream: str, beyond: int) -> None:
        """Import what the stream holds of the topic between the cursor and ``beyond``,
        read by sequence: the cursor then never waits on the server's redelivery timing.
        Afterwards the cursor is ``beyond - 1``. Raises nats API errors."""
        start = self.cursor.value
        at = start
        chunk: list[tuple[int, bytes]] = []
        found = 0
        while at + 1 < beyond:  # the last one found may close the gap: no request then
            try:
                nxt = await js.get_msg(stream, at + 1, subject=self.subject, next=True)
            except NotFoundError:
                break
            seq = nxt.seq or beyond
            if seq >= beyond:
                break
            at = seq
            found += 1
            if (nxt.headers or {}).get(headers.ORIGIN) == self.host:
                self.figures.own_dropped += 1
                continue
            chunk.append((seq, nxt.data or b""))
            if len(chunk) >= self.cfg.fetch_batch:
                await self._into_ring(chunk)
                self.figures.imported += len(chunk)
                chunk = []
        await self._into_ring(chunk)
        self.figures.imported += len(chunk)
        self.figures.gap_filled += found
        if found < beyond - 1 - start:
            log.info(
                "stream %s holds %d of %s in %d..%d (the rest deleted or not the topic's)",
                stream,
                found,
                self.subject,
                start + 1,
                beyond - 1,
            )
        self.cursor.value = beyond - 1

    async def _into_ring(self, run: list[tuple[int, bytes]]) -> None:
        """Publish all of ``run``, waiting (on the loop) as long as the ring stays full.

        Each write puts in what fits now (``timeout=0``: the producer does not wait with
        frames of the batch already in the ring) and the cursor follows it at once: a
        SIGKILL while the ring is full (local consumers behind, the usual state under a
        backlog) then re-imports nothing. Only the few bytecodes between a write and its
        cursor store remain a window.
        """
        payloads = [payload for _, payload in run]
        done = 0
        delay = RING_RETRY_MIN_S
        while done < len(payloads):
            try:
                n = await self.producer.publish_many(self.topic, payloads[done:], timeout=0)
            except BackpressureTimeout as exc:
                n = exc.published
                self.figures.ring_full_waits += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, RING_RETRY_MAX_S)
                if delay == RING_RETRY_MAX_S:
                    self.producer.core.drop_dead_readers()  # the coordinator may be down
            if n:
                done += n
                self.cursor.value = run[done - 1][0]

    async def run(
        self, nc: Client, js: JetStreamContext, stream: str, stopping: asyncio.Event
    ) -> None:
        """Import until ``stopping`` is set; raises nats errors and PullFailed when the
        link fails."""
        durable = headers.durable_name(self.host, self.topic)
        info = await js.stream_info(stream)
        if info.state.last_seq < self.cursor.value:
            # The stream was deleted and made anew: its sequences start again.
            log.warning(
                "stream %s restarted at %d; import cursor reset", stream, info.state.last_seq
            )
            self.cursor.value = 0
        # What the consumer acked is settled even when the cursor does not say so (a new
        # consumer that starts at the stream's end, a state directory made anew).
        floor = (await js.consumer_info(stream, durable)).ack_floor
        if floor is not None and floor.stream_seq > self.cursor.value:
            self.cursor.value = floor.stream_seq
        puller = Puller(nc, stream, durable, self.cfg.fetch_batch, FETCH_WAIT_S)
        await puller.open()
        try:
            while not stopping.is_set():
                await puller.top_up()
                msgs = await puller.take(self.cfg.fetch_batch, FETCH_WAIT_S)
                if msgs:
                    self.figures.acks_pending = len(msgs)
                    await self._take(js, stream, msgs, puller.ack)
        finally:
            await puller.close()  # the durable consumer stays

    async def _take(
        self,
        js: JetStreamContext,
        stream: str,
        msgs: list[Delivery],
        ack: Callable[[Delivery], Awaitable[None]],
    ) -> None:
        """Everything of one batch into the ring in stream order, gaps filled from the
        stream, then one cumulative ack up to the highest sequence of it."""
        ordered = sorted(msgs, key=_delivery_order)
        top: Delivery | None = None
        while True:
            run, last, gap = self._select(ordered)
            top = last or top
            if not gap:
                break
            await self._into_ring(run)
            self.figures.imported += len(run)
            if last is not None:
                self.cursor.value = max(self.cursor.value, last.seq)
            await self._fill_gap(js, stream, gap)
            ordered = [m for m in ordered if m.seq >= gap]
        if top is not None:
            await self._settle(run, top, ack)

    async def _settle(
        self,
        run: list[tuple[int, bytes]],
        top: Delivery,
        ack: Callable[[Delivery], Awaitable[None]],
    ) -> None:
        """Into the ring, then the cursor, then the cumulative ack up to ``top``."""
        await self._into_ring(run)
        self.cursor.value = max(self.cursor.value, top.seq)
        await ack(top)  # cumulative: everything up to it, the gaps filled included
        self.figures.imported += len(run)
        self.figures.acks_pending = 0
        self.figures.lag = top.pending
        self.figures.last_stream_seq = self.cursor.value


def _delivery_order(msg: Delivery) -> tuple[int, int]:
    """Stream sequence, then delivery (a redelivered copy after the first)."""
    return msg.seq, msg.delivery
