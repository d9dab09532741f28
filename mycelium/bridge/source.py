"""The local side of an export: what the bridge reads from a topic, and what it acknowledges.

How this works
--------------
``open_export_source`` is the one place that knows which consumer API the bridge rides.
The exporter reads ``Outgoing`` records (payload, producer, sequence, publish time) and
calls ``ack()`` once JetStream has acknowledged everything it read so far.

PENDING issues 9 and 14: the intended source is
``Consumer(topic, ack="manual", durable=...)`` read with ``recv_envelope()``, acknowledged
with ``c.ack()`` only after JetStream acked, so a SIGKILLed bridge loses nothing and the
producer and sequence are the origin's own. Until those land this falls back to the
existing auto-acknowledging ``AsyncConsumer``: ``ack()`` does nothing, what the bridge has
read but JetStream has not acked lives only in the bridge (a SIGKILL loses it), the
producer is this bridge run (``<name>-<start ns>``, so ids never repeat across runs) and
the sequence is the bridge's own count; and an imported message is recognised by its
bytes (``LoopGuard``) instead of by the producer id of the bridge's import producer.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter, deque
from typing import NamedTuple

from mycelium.aio import AsyncConsumer

__all__ = ["ExportSource", "LoopGuard", "Outgoing", "open_export_source"]

#: Imported payloads remembered per topic for loop prevention (oldest forgotten first).
LOOP_GUARD_ENTRIES = 1 << 16


class Outgoing(NamedTuple):
    """One local message on its way to JetStream."""

    payload: bytes
    producer: str
    sequence: int
    published_ns: int


class LoopGuard:
    """Payloads this bridge imported into a topic it also exports, so it never re-exports them.

    The import side calls ``note`` before the frame goes into the ring; the export side
    calls ``is_echo`` on what it reads, which consumes one note. Byte-identical local and
    imported messages are interchangeable here: whichever is read first is kept back,
    and the other is exported, so the count of each payload sent is still right.
    """

    def __init__(self, capacity: int = LOOP_GUARD_ENTRIES) -> None:
        self.capacity = capacity
        self._counts: Counter[bytes] = Counter()
        self._order: deque[bytes] = deque()

    @staticmethod
    def _key(payload: bytes) -> bytes:
        return hashlib.blake2b(payload, digest_size=16).digest()

    def note(self, payload: bytes) -> None:
        key = self._key(payload)
        if len(self._order) >= self.capacity:
            old = self._order.popleft()
            self._counts[old] -= 1
            if self._counts[old] <= 0:
                del self._counts[old]
        self._order.append(key)
        self._counts[key] += 1

    def is_echo(self, payload: bytes) -> bool:
        key = self._key(payload)
        if not self._counts.get(key):
            return False
        self._counts[key] -= 1
        if not self._counts[key]:
            del self._counts[key]
        self._order.remove(key)
        return True

    def __len__(self) -> int:
        return len(self._order)


class ExportSource:
    """Reads a local topic for export, keeping back what this bridge imported itself."""

    def __init__(self, consumer: AsyncConsumer, producer: str, guard: LoopGuard | None) -> None:
        self.consumer = consumer
        self.producer = producer
        self.guard = guard
        self.sequence = 0
        self.echoes = 0

    async def read(self, max_n: int, timeout: float) -> list[Outgoing]:
        """Up to ``max_n`` records, waiting up to ``timeout`` s for the first; may be empty."""
        batch = await self.consumer.recv_many(max_n, timeout=timeout)
        now = time.time_ns()
        out = []
        for payload in batch:
            if self.guard is not None and self.guard.is_echo(payload):
                self.echoes += 1
                continue
            self.sequence += 1
            out.append(Outgoing(payload, self.producer, self.sequence, now))
        return out

    def ack(self) -> None:
        """JetStream acked everything read so far (a no-op until issue 9's ``c.ack()``)."""

    async def close(self) -> None:
        await self.consumer.close()


async def open_export_source(
    topic: str,
    socket_path: str | os.PathLike[str] | None,
    name: str,
    guard: LoopGuard | None,
    wait_for_broker_s: float,
) -> ExportSource:
    """The local consumer an export reads (see the module note: manual ack pending 9 and 14).

    Raises UnknownTopic, BrokerUnavailable.
    """
    consumer = AsyncConsumer(topic, socket_path, wait_for_broker=wait_for_broker_s)
    await consumer.connect()
    return ExportSource(consumer, f"{name}-{time.time_ns()}", guard)
