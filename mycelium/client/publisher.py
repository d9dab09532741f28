"""The per-topic publisher handle: ``pub = producer.topic("market_data"); pub.publish(b)``.

How this works
--------------
``Producer.publish(topic, b)`` looks the topic up in a dict on every call. A handle binds
the topic's fanout lane publish once and re-binds it only when the registry's generation
moves (the same 8-byte load ``publish`` does), so a call is the generation check and the
lane's own ``publish``: its thread check, size check and frame write. A full ring goes
to the producer's one backpressure policy, as ``publish``. A queue topic has no single
lane: its handle calls the route, still without the lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mycelium.errors import BackpressureTimeout
from mycelium.shm.payload import Payload

if TYPE_CHECKING:
    from mycelium.client.producer import Producer

__all__ = ["TopicPublisher"]


class TopicPublisher:
    """One topic of a ``Producer``, bound for the hot path (from ``Producer.topic``)."""

    __slots__ = ("_gen", "_lane", "_producer", "_q", "topic")

    def __init__(self, producer: Producer, topic: str) -> None:
        self.topic = topic
        self._producer = producer
        self._q = producer.watch.generation  # the registry's generation word
        self._gen = -1
        self._lane: Callable[[Payload], None] | None = None
        self._bind()

    def _bind(self) -> None:
        """Pick up a topology change (and open the topic: UnknownTopic if it has none)."""
        p = self._producer
        if p.needs_fetch(self.topic):
            p.apply(p.fetch(self.topic))
        self._gen = p.watch.gen
        self._lane = p.fanout_publish(self.topic)

    def publish(self, data: Payload) -> None:
        """As ``Producer.publish(topic, data)``; raises the same errors."""
        if self._q[0] != self._gen:
            self._bind()
        lane = self._lane
        if lane is None:  # a queue topic: its route, through the producer
            self._producer.publish(self.topic, data)
            return
        try:
            lane(data)  # the lane checks thread, size, and room before writing
        except BackpressureTimeout:  # full: nothing written; wait as publish does
            self._producer.publish(self.topic, data)

    def publish_many(self, items: Sequence[Payload]) -> int:
        """As ``Producer.publish_many(topic, items)``."""
        return self._producer.publish_many(self.topic, items)

    def publish_array(self, records: np.ndarray) -> int:
        """As ``Producer.publish_array(topic, records)``."""
        return self._producer.publish_array(self.topic, records)
