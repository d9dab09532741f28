"""What a bridged message carries besides its payload: headers and the JetStream message id.

The id ``<origin host>.<producer>.<sequence>`` is the same every time one local message
is sent, so JetStream's duplicate window drops what a reconnect or restart re-sends.
"""

from __future__ import annotations

import re

__all__ = [
    "MSG_ID",
    "ORIGIN",
    "PRODUCER",
    "PUBLISHED_NS",
    "SEQUENCE",
    "TOPIC",
    "HeaderBlock",
    "durable_name",
    "export_headers",
    "stream_name",
    "subject",
]

MSG_ID = "Nats-Msg-Id"
ORIGIN = "Mycelium-Origin"
TOPIC = "Mycelium-Topic"
PRODUCER = "Mycelium-Producer"
SEQUENCE = "Mycelium-Sequence"
PUBLISHED_NS = "Mycelium-Published-Ns"

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_-]")


def subject(prefix: str, topic: str) -> str:
    """The NATS subject a topic is bridged on: ``mycelium.market_data`` by default."""
    return f"{prefix}.{topic}"


def stream_name(prefix: str, topic: str) -> str:
    """The JetStream stream of a topic (stream names take no dots): ``MYCELIUM_market_data``."""
    return _NOT_IN_NAMES.sub("_", f"{prefix.upper()}_{topic}")


def durable_name(host: str, topic: str) -> str:
    """The durable pull consumer a host imports a topic through: one per host and topic."""
    return _NOT_IN_NAMES.sub("_", f"mycelium_{host}_{topic}")


def export_headers(
    host: str, topic: str, producer: str, sequence: int, published_ns: int
) -> dict[str, str]:
    """The headers of one exported message, its message id among them."""
    return {
        MSG_ID: f"{host}.{producer}.{sequence}",
        ORIGIN: host,
        TOPIC: topic,
        PRODUCER: producer,
        SEQUENCE: str(sequence),
        PUBLISHED_NS: str(published_ns),
    }


class HeaderBlock:
    """The headers of one exported topic as NATS puts them on the wire, encoded once: per
    message only the id, producer, sequence and publish time are filled in."""

    def __init__(self, host: str, topic: str) -> None:
        def raw(text: str) -> bytes:
            return text.encode().replace(b"%", b"%%")

        self._template = (
            b"NATS/1.0\r\n"
            + raw(f"{ORIGIN}: {host}\r\n{TOPIC}: {topic}\r\n{MSG_ID}: {host}.")
            + f"%b.%d\r\n{PRODUCER}: %b\r\n{SEQUENCE}: %d\r\n{PUBLISHED_NS}: %d\r\n\r\n".encode()
        )
        self._producer = ("", b"")

    def encode(self, producer: str, sequence: int, published_ns: int) -> bytes:
        """The header block of one message (the same fields as ``export_headers``)."""
        if self._producer[0] != producer:
            self._producer = (producer, producer.encode())
        p = self._producer[1]
        return self._template % (p, sequence, p, sequence, published_ns)
