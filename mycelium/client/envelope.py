"""The envelope: a message with where it came from, as its lane's frame recorded it.

How this works
--------------
Every frame's header holds the lane's 1-based message number (``sequence``) and the
publish time (``published_ns``), stored by the writer; the lane's header holds the
writer's identity (``producer``). Nothing is derived from a reader's own counts, so the
same message read by another consumer, or again by a durable consumer after a restart,
carries the same ``(producer, sequence)``: a deduplication key (e.g. a JetStream
``Nats-Msg-Id``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Envelope"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One received message and its origin.

    ``producer`` is "name/id": the producer's name and a random id its lane recorded
    once (two producers of one name, or one producer's successive lanes, differ).
    ``sequence`` counts the lane's messages from 1, in publish order; with ``producer``
    it names the message uniquely. ``published_ns`` is CLOCK_REALTIME in ns at publish,
    or 0 when the producer does not store times (``timestamps`` off).
    """

    topic: str
    payload: bytes
    producer: str
    sequence: int
    published_ns: int
