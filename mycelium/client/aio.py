"""The asyncio drivers: ``AsyncProducer`` and ``AsyncConsumer``, over the same cores and
the same wait and backpressure policies as the sync handles.

How this works
--------------
Nothing here blocks the event loop. The cores' blocking work runs in worker threads:
connecting (the control handshake), and every topology change (``fetch``: registering a
new topic, decoding the topology, mapping 16 MiB lanes with their pages pre-faulted);
the loop only applies the result (``apply``: cheap, and on the thread that publishes,
as single-writer lanes require). Publishing and polling are the cores' non-blocking
``offer`` and ``poll``. A full ring is waited out with the backpressure policy on
``asyncio.sleep``, checking readers' liveness as the sync producer does, up to a real
timeout. An empty consumer waits with its ``WaitStrategy`` through the shared wait
policy: loop turns for spinning and yielding, the doorbell acquire in a worker thread,
with the same "sleeping" fence and drain as the sync wait.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from mycelium.backoff import Backpressure
from mycelium.client.consumer import ConsumerCore
from mycelium.client.envelope import Envelope
from mycelium.client.producer import Payload, ProducerCore, record_rows, topic_of_message
from mycelium.client.subscriptions import topic_label
from mycelium.client.waiting import wait_async
from mycelium.errors import BackpressureTimeout, ReceiveTimeout
from mycelium.protocol import Message, parse_message
from mycelium.shm.reader import LaneReader

__all__ = ["AsyncConsumer", "AsyncProducer"]

#: How long an async publish waits for ring space unless told otherwise.
PUBLISH_TIMEOUT_S = 5.0


class AsyncProducer:
    """``async with AsyncProducer() as p: await p.publish("market_data", b"...")``."""

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        self._socket_path = socket_path
        self._kwargs = kwargs
        self._core: ProducerCore | None = None

    async def connect(self) -> AsyncProducer:
        """Connect (in a thread: the control handshake is a blocking socket exchange)."""
        if self._core is None:
            self._core = await asyncio.to_thread(ProducerCore, self._socket_path, **self._kwargs)
        return self

    @property
    def core(self) -> ProducerCore:
        if self._core is None:
            raise RuntimeError("AsyncProducer is not connected: use 'async with' or connect()")
        return self._core

    async def publish(self, topic: str, data: Payload, timeout: float | None = None) -> None:
        """Publish one message; waits (without blocking the loop) while the ring is full.

        Raises BackpressureTimeout after ``timeout`` seconds (default: 5 s), nothing
        written; UnknownTopic, MessageTooLarge, BrokerUnavailable as ``Producer.publish``.
        """
        core = self.core
        if core.needs_fetch(topic):
            await self._sync(topic)
        if not core.offer(topic, data):
            await self._wait(topic, timeout, lambda: core.offer(topic, data))

    async def publish_many(
        self, topic: str, items: Sequence[Payload], timeout: float | None = None
    ) -> int:
        """Publish a batch; returns the count published. BackpressureTimeout says in
        ``published`` how many went before it."""
        core = self.core
        if core.needs_fetch(topic):
            await self._sync(topic)
        done = core.offer_many(topic, items)
        k = len(items)
        if done < k:
            bp = self._backpressure(topic, timeout)
            while done < k:
                try:
                    await self._pause(bp)
                except BackpressureTimeout as exc:
                    exc.published = done
                    raise
                done += core.offer_many(topic, items[done:])
        return k

    async def publish_array(
        self, topic: str, records: np.ndarray, timeout: float | None = None
    ) -> int:
        """As ``Producer.publish_array``: one message per record, vectorised."""
        rows = record_rows(records)
        core = self.core
        await self._sync(topic)
        done = core.offer_array(topic, rows)
        if done < len(rows):
            bp = self._backpressure(topic, timeout)
            while done < len(rows):
                try:
                    await self._pause(bp)
                except BackpressureTimeout as exc:
                    exc.published = done
                    raise
                await self._sync()
                done += core.offer_array(topic, rows[done:])
        return len(rows)

    async def publish_message(self, message: Payload, timeout: float | None = None) -> None:
        """Publish a Protocol V2 message on the topic of its relay domain."""
        await self.publish(topic_of_message(message), message, timeout)

    async def close(self) -> None:
        """Close our lanes (in a thread: it unmaps) and leave the broker."""
        core = self._core
        if core is None or core._closed:
            return
        await asyncio.to_thread(core.close)

    async def _sync(self, topic: str | None = None) -> None:
        """A topology change: the blocking part in a thread, applied on the loop."""
        core = self.core
        new = topic if topic is not None and topic not in core.routes else None
        core.apply(await asyncio.to_thread(core.fetch, new))
        # Until it holds still: a change during the fetch would otherwise be read again
        # on the loop by the next offer.
        while core.needs_fetch():
            core.apply(await asyncio.to_thread(core.fetch))

    def _backpressure(self, topic: str, timeout: float | None) -> Backpressure:
        return self.core.backpressure(topic, PUBLISH_TIMEOUT_S if timeout is None else timeout)

    async def _wait(self, topic: str, timeout: float | None, attempt: Callable[[], bool]) -> None:
        bp = self._backpressure(topic, timeout)
        while True:
            await self._pause(bp)
            if attempt():
                return

    async def _pause(self, bp: Backpressure) -> None:
        delay = bp.pause()
        if delay >= 0:
            await asyncio.sleep(delay)  # 0: one loop turn, as a yield
        core = self.core
        if bp.liveness_due():
            core.drop_dead_readers()
        if core.needs_fetch():
            await self._sync()

    async def __aenter__(self) -> AsyncProducer:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncConsumer:
    """``async with AsyncConsumer("signals") as c: msg = await c.recv(timeout=1.0)``;
    also ``async for payload in c``; ``AsyncConsumer(["market_data", "signals"])`` reads
    both (as ``Consumer``)."""

    def __init__(
        self,
        topic: str | Sequence[str],
        socket_path: str | os.PathLike[str] | None = None,
        group: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.topic = topic_label(topic)  # refuses a bad topic list at once (ConfigError)
        self._args = (topic, socket_path, group)
        self._kwargs = kwargs
        self._core: ConsumerCore | None = None

    async def connect(self) -> AsyncConsumer:
        if self._core is None:
            self._core = await asyncio.to_thread(ConsumerCore, *self._args, **self._kwargs)
        return self

    @property
    def core(self) -> ConsumerCore:
        if self._core is None:
            raise RuntimeError("AsyncConsumer is not connected: use 'async with' or connect()")
        return self._core

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next message; raises ReceiveTimeout if none came in ``timeout`` seconds,
        CorruptFrame for a corrupt frame (skipped, counted)."""
        data = await self._poll()
        if data is None:
            core = self.core
            data = await wait_async(self._poll, core.state, core.plan(timeout))
            if data is None:
                raise ReceiveTimeout(self.topic, timeout)
        return data

    async def recv_envelope(self, timeout: float | None = None) -> Envelope:
        """The next message with its origin (see ``Consumer.recv_envelope``)."""
        core = self.core

        async def poll() -> Envelope | None:
            await self._sync()
            return core.poll_envelope()

        env = await poll()
        if env is None:
            env = await wait_async(poll, core.state, core.plan(timeout))
            if env is None:
                raise ReceiveTimeout(self.topic, timeout)
        return env

    @asynccontextmanager
    async def recv_view(self, timeout: float | None = None) -> AsyncIterator[memoryview]:
        """``async with c.recv_view(timeout=1.0) as view:`` as ``Consumer.recv_view``
        (refused on lossy topics; valid inside the block only)."""
        core = self.core
        if core._viewing:
            raise RuntimeError("a recv_view block is already open on this consumer")

        async def poll() -> tuple[LaneReader, memoryview] | None:
            await self._sync()
            return core.poll_view()

        got = await poll()
        if got is None:
            got = await wait_async(poll, core.state, core.plan(timeout))
            if got is None:
                raise ReceiveTimeout(self.topic, timeout)
        reader, view = got
        core._viewing = True
        try:
            yield view
        finally:
            core._viewing = False
            view.release()
            reader.release()

    async def envelopes(self) -> AsyncIterator[Envelope]:
        """``async for env in c.envelopes()``: envelopes until the consumer is closed."""
        while self._core is not None and not self._core._closed:
            try:
                yield await self.recv_envelope(timeout=1.0)
            except TimeoutError:
                continue

    async def recv_many(self, max_n: int = 1000, timeout: float | None = 0.0) -> list[bytes]:
        """Up to ``max_n`` messages; waits up to ``timeout`` for the first; may be empty."""
        core = self.core

        async def poll_many() -> list[bytes] | None:
            await self._sync()
            return core.poll_many(max_n)

        batch = await poll_many()
        if batch is None and timeout != 0.0:
            batch = await wait_async(poll_many, core.state, core.plan(timeout))
        return batch or []

    async def recv_array(
        self, dtype: npt.DTypeLike, max_n: int = 1000, timeout: float | None = 0.0
    ) -> np.ndarray:
        """As ``Consumer.recv_array``."""
        core, dt = self.core, np.dtype(dtype)

        async def poll() -> np.ndarray | None:
            await self._sync()
            return core.poll_array(dt, max_n)

        batch = await poll()
        if batch is None and timeout != 0.0:
            batch = await wait_async(poll, core.state, core.plan(timeout))
        return np.empty(0, dt) if batch is None else batch

    async def recv_message(self, timeout: float | None = None) -> Message:
        """The next message parsed as Protocol V2."""
        return parse_message(await self.recv(timeout))

    async def _poll(self) -> bytes | None:
        await self._sync()
        return self.core.poll()

    async def _sync(self) -> None:
        """A topology change: decode it and map new lanes in a thread, apply on the loop."""
        core = self.core
        while core.needs_fetch():  # until it holds still, as AsyncProducer._sync
            core.apply(await asyncio.to_thread(core.fetch))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self._core is not None and not self._core._closed:
            try:
                yield await self.recv(timeout=1.0)
            except TimeoutError:
                continue

    def ack(self) -> None:
        """Acknowledge every message received so far (cumulative; see ``Consumer.ack``)."""
        self.core.ack()

    @property
    def redelivered(self) -> int:
        """Messages this handle got that had been delivered (not acknowledged) before."""
        return self.core.redelivered

    async def close(self) -> None:
        if self._core is not None:
            await asyncio.to_thread(self._core.close)

    async def __aenter__(self) -> AsyncConsumer:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
