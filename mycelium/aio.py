"""asyncio handles: ``AsyncProducer`` and ``AsyncConsumer``, over the same cores as the
sync ones.

How this works
--------------
Publishing and polling never block: they are the sync cores' non-blocking calls. When a
consumer has nothing to read, it first yields to the loop a few times, then waits for
the doorbell in a worker thread (``has_data`` is re-checked there after announcing
"sleeping", exactly as the sync wait does), so the event loop is never blocked. When a
ring is full, ``AsyncProducer.publish`` retries with ``asyncio.sleep`` backoff up to the
topic's bound instead of spinning in the loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import posix_ipc

from mycelium.client.consumer import ConsumerCore
from mycelium.client.producer import Payload, ProducerCore
from mycelium.errors import BackpressureTimeout
from mycelium.protocol import Message, parse_message
from mycelium.shm.ordering import BLOCK_SAFETY_S

__all__ = ["AsyncConsumer", "AsyncProducer"]

#: Event-loop turns a waiting consumer polls before it hands the wait to a thread.
LOOP_POLLS = 16
#: Backoff of a publisher waiting for ring space, between these bounds (seconds).
PUBLISH_RETRY_MIN_S = 50e-6
PUBLISH_RETRY_MAX_S = 5e-3
#: How long an async publish waits for ring space unless told otherwise.
PUBLISH_TIMEOUT_S = 5.0


class _Backoff:
    """Exponential asyncio.sleep backoff with a deadline, for a full ring."""

    def __init__(self, timeout: float | None) -> None:
        self.limit = PUBLISH_TIMEOUT_S if timeout is None else timeout
        self.deadline = time.monotonic() + self.limit
        self.delay = PUBLISH_RETRY_MIN_S

    async def wait(self) -> None:
        if time.monotonic() >= self.deadline:
            raise BackpressureTimeout(
                f"ring still full after {self.limit}s; nothing more written", waited_s=self.limit
            )
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, PUBLISH_RETRY_MAX_S)


class AsyncProducer:
    """``async with AsyncProducer() as p: await p.publish("market_data", b"...")``."""

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        self._socket_path = socket_path
        self._kwargs = kwargs
        self._core: ProducerCore | None = None

    async def connect(self) -> AsyncProducer:
        """Connect (in a thread: the control handshake is a blocking socket exchange)."""
        if self._core is None:
            self._core = await asyncio.to_thread(
                ProducerCore, self._socket_path, backpressure_timeout=0.0, **self._kwargs
            )
        return self

    @property
    def core(self) -> ProducerCore:
        if self._core is None:
            raise RuntimeError("AsyncProducer is not connected: use 'async with' or connect()")
        return self._core

    async def publish(self, topic: str, data: Payload, timeout: float | None = None) -> None:
        """Publish one message; waits (without blocking the loop) while the ring is full.

        Raises BackpressureTimeout after ``timeout`` seconds (default: 5 s), nothing written.
        """
        backoff = _Backoff(timeout)
        while True:
            try:
                self.core.publish(topic, data)
                return
            except BackpressureTimeout:
                await backoff.wait()

    async def publish_many(
        self, topic: str, items: Sequence[Payload], timeout: float | None = None
    ) -> int:
        """Publish a batch; returns the count published."""
        backoff = _Backoff(timeout)
        done = 0
        while True:
            try:
                return done + self.core.publish_many(topic, items[done:])
            except BackpressureTimeout as exc:
                done += getattr(exc, "published", 0)
                await backoff.wait()

    async def publish_message(self, message: Payload, timeout: float | None = None) -> None:
        """Publish a Protocol V2 message on the topic of its relay domain."""
        backoff = _Backoff(timeout)
        while True:
            try:
                self.core.publish_message(message)
                return
            except BackpressureTimeout:
                await backoff.wait()

    async def close(self) -> None:
        if self._core is not None:
            await asyncio.to_thread(self._core.close)

    async def __aenter__(self) -> AsyncProducer:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncConsumer:
    """``async with AsyncConsumer("signals") as c: msg = await c.recv(timeout=1.0)``;
    also ``async for payload in c``."""

    def __init__(
        self,
        topic: str,
        socket_path: str | os.PathLike[str] | None = None,
        group: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.topic = topic
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
        """The next message; raises TimeoutError if none came in ``timeout`` seconds."""
        core = self.core
        deadline = None if timeout is None else time.monotonic() + timeout
        polls = 0
        while True:
            data = core.poll()
            if data is not None:
                return data
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no message on {self.topic!r} within {timeout}s")
            polls += 1
            if polls <= LOOP_POLLS:
                await asyncio.sleep(0)
            else:
                await asyncio.to_thread(self._sleep_on_doorbell, remaining)

    def _sleep_on_doorbell(self, remaining: float | None) -> None:
        """In a worker thread: announce sleeping, re-check, wait one bounded doorbell."""
        core = self.core
        core.state.set_sleeping(True)
        try:
            if core.has_data():
                return
            timeout = BLOCK_SAFETY_S if remaining is None else min(BLOCK_SAFETY_S, remaining)
            try:
                core.state.doorbell.acquire(max(timeout, 0))
            except (posix_ipc.BusyError, posix_ipc.SignalError):
                pass  # timed out or interrupted: the loop polls again
        finally:
            core.state.set_sleeping(False)

    async def recv_many(self, max_n: int = 1000, timeout: float | None = 0.0) -> list[bytes]:
        """Up to ``max_n`` messages; waits up to ``timeout`` for the first; may be empty."""
        batch = self.core.poll_many(max_n)
        if batch is None and timeout != 0.0:
            try:
                first = await self.recv(timeout)
            except TimeoutError:
                return []
            return [first, *(self.core.poll_many(max_n - 1) or [])]
        return batch or []

    async def recv_message(self, timeout: float | None = None) -> Message:
        """The next message parsed as Protocol V2."""
        return parse_message(await self.recv(timeout))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self._core is not None and not self._core._closed:
            try:
                yield await self.recv(timeout=1.0)
            except TimeoutError:
                continue

    async def close(self) -> None:
        if self._core is not None:
            await asyncio.to_thread(self._core.close)

    async def __aenter__(self) -> AsyncConsumer:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
