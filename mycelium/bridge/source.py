"""The local side of an export: what the bridge reads from a topic, and what it acknowledges.

How this works
--------------
``open_export_source`` is the one place that knows which consumer API the bridge rides: a
durable consumer with manual acknowledgement (``AsyncConsumer(topic, ack="manual",
durable="bridge-<name>-<topic>")``) read as envelopes. The exporter reads the
envelopes themselves (payload, the origin lane's producer and sequence, publish time) and calls
``ack()`` only once JetStream has acknowledged everything read so far, so a SIGKILLed
bridge loses nothing: its successor resumes the durable consumer where the last ack
stood, and re-sends carry the same ``(producer, sequence)``, hence the same message id,
for JetStream's duplicate window to drop.

Loop prevention: this bridge's import producer is named ``import_producer_name(host)``;
a message whose envelope names that producer (this run's or an earlier one's) was
imported here and is never exported again.
"""

from __future__ import annotations

import os

from mycelium.aio import AsyncConsumer
from mycelium.client.envelope import Envelope

__all__ = ["ExportSource", "import_producer_name", "open_export_source"]


def import_producer_name(host: str) -> str:
    """The name of the producer a bridge imports through (its envelopes' producer prefix)."""
    return f"bridge-import-{host}"


class ExportSource:
    """Reads a local topic for export, keeping back what this bridge imported itself."""

    def __init__(self, consumer: AsyncConsumer, host: str) -> None:
        self.consumer = consumer
        self.own_prefix = import_producer_name(host) + "/"
        self.echoes = 0

    async def read(self, max_n: int, timeout: float) -> list[Envelope]:
        """Up to ``max_n`` envelopes, waiting up to ``timeout`` s for the first; may be empty."""
        try:
            first: Envelope | None = await self.consumer.recv_envelope(timeout=timeout)
        except TimeoutError:
            return []
        core = self.consumer.core
        out: list[Envelope] = []
        env = first
        while env is not None:
            if env.producer.startswith(self.own_prefix):
                self.echoes += 1
            else:
                out.append(env)
            if len(out) >= max_n:
                break
            env = core.poll_envelope()
        return out

    def ack(self) -> None:
        """JetStream acked everything read so far: the durable consumer moves on."""
        self.consumer.ack()

    async def close(self) -> None:
        await self.consumer.close()


async def open_export_source(
    topic: str,
    socket_path: str | os.PathLike[str] | None,
    host: str,
    wait_for_broker_s: float,
) -> ExportSource:
    """The durable, manually acknowledging consumer an export reads.

    Raises UnknownTopic, BrokerUnavailable, LimitExceeded (the durable name is in use).
    """
    consumer = AsyncConsumer(
        topic,
        socket_path,
        ack="manual",
        durable=f"bridge-{host}-{topic}",
        wait_for_broker=wait_for_broker_s,
    )
    await consumer.connect()
    return ExportSource(consumer, host)
