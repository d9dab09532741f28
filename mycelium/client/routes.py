"""Routes: what a topic does with a message, as a result and never as a wait.

How this works
--------------
A route writes a message into this producer's lanes of one topic, or reports "full"
and writes nothing; it never waits (the producer's drivers wait, with one backpressure
policy). The writers run with no wait of their own, so a full ring surfaces from the
lane once, at this boundary, and leaves it as a plain ``False`` or a count.

* fanout: the producer's one lane of the topic; every consumer of the topic gates it.
* queue: one lane per consumer; per consumer group, the message goes to the next lane in
  round-robin order that has room. Another group gets its own copy. A message is
  written only when every group has a lane with room now, so a refused publish writes
  nothing, and a group with one stuck member still takes messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mycelium.errors import BackpressureTimeout, MessageTooLarge
from mycelium.shm.layout import frame_bytes
from mycelium.shm.writer import LaneWriter

__all__ = ["FanoutRoute", "Payload", "QueueRoute", "Route"]

Payload = bytes | bytearray | memoryview


def room_for(size: int) -> int:
    """Ring bytes in which a ``size``-byte message surely fits without waiting: its frame
    plus the most a wrap can skip before it."""
    return 2 * frame_bytes(size)


class FanoutRoute:
    """Every consumer gets every message: one lane, gated by all of them."""

    __slots__ = ("_many", "_publish", "topic", "writer")

    def __init__(self, topic: str, writer: LaneWriter) -> None:
        self.topic = topic
        self.writer = writer
        self._publish = writer.publish
        self._many = writer.publish_many

    def offer(self, data: Payload) -> bool:
        """Write one message: True, or False (nothing written) if the ring is full.
        Raises MessageTooLarge (nothing written)."""
        try:
            self._publish(data)
        except BackpressureTimeout:
            return False
        return True

    def offer_many(self, items: Sequence[Payload]) -> int:
        """Write what fits of a batch with one cursor store; returns how many went."""
        try:
            return self._many(items)
        except BackpressureTimeout as exc:
            return exc.published

    def offer_rows(self, rows: np.ndarray) -> int:
        """Write what fits of a (k, n) uint8 array, one message per row, vectorised;
        returns how many went."""
        try:
            return self.writer.publish_array(rows)
        except BackpressureTimeout as exc:
            return exc.published

    def count_timeout(self) -> None:
        """Count a publish that ran out of its backpressure bound (stats, metrics)."""
        self.writer.count_timeout()

    def drop_dead_readers(self) -> None:
        """Stop gating on consumers whose process is gone (the coordinator may be down)."""
        w = self.writer
        w.set_readers([v for v in w.readers if v.holds()])


class QueueRoute:
    """Producer-side dispatch of a queue topic: one copy per group, one consumer each."""

    __slots__ = ("_next", "groups", "max_message_size", "topic")

    def __init__(self, topic: str, max_message_size: int) -> None:
        self.topic = topic
        self.max_message_size = max_message_size
        self.groups: dict[str, list[LaneWriter]] = {}
        self._next: dict[str, int] = {}

    def offer(self, data: Payload) -> bool:
        """One copy per group, all or none: False (nothing written) when some group has
        no lane with room now. Raises MessageTooLarge."""
        n = len(data)
        # Checked here, not left to the lanes: with no group to deliver to there is no
        # lane, and an oversize publish must be refused all the same.
        if n > self.max_message_size:
            raise MessageTooLarge(n, self.max_message_size, self.topic)
        need = room_for(n)
        targets = [self.pick(group, need) for group, ws in self.groups.items() if ws]
        if None in targets:
            return False
        for w in targets:
            w.publish(data)  # type: ignore[union-attr]
        return True

    def count_timeout(self) -> None:
        """Count a publish that ran out of its backpressure bound on one of our lanes
        (stats sum the lanes of a topic)."""
        for ws in self.groups.values():
            if ws:
                ws[0].count_timeout()
                return

    def offer_to(self, group: str, data: Payload) -> bool:
        """One message for ``group`` only (a departed member's); False if no room."""
        w = self.pick(group, room_for(len(data)))
        if w is None:
            return False
        w.publish(data)
        return True

    def offer_many(self, items: Sequence[Payload]) -> int:
        """A batch with one cursor store, when one group has a lane with room for all of
        it; else message by message. Returns how many went."""
        groups = [group for group, ws in self.groups.items() if ws]
        if len(groups) == 1 and items:
            need = sum(frame_bytes(len(x)) for x in items) + room_for(max(map(len, items)))
            w = self.pick(groups[0], need)
            if w is not None:
                return w.publish_many(items)
        for i, item in enumerate(items):
            if not self.offer(item):
                return i
        return len(items)

    def offer_rows(self, rows: np.ndarray) -> int:
        """As ``offer_many`` for the rows of a (k, n) uint8 array: vectorised when one
        group has a lane with room for all of them."""
        groups = [group for group, ws in self.groups.items() if ws]
        k, n = rows.shape
        if len(groups) == 1 and k:
            w = self.pick(groups[0], k * frame_bytes(n) + room_for(n))
            if w is not None:
                return w.publish_array(rows)
        return self.offer_many([row.data for row in rows])

    def pick(self, group: str, need: int) -> LaneWriter | None:
        """The next lane of ``group``, round-robin, with ``need`` ring bytes free now;
        None if it has none."""
        writers = self.groups.get(group) or []
        start = self._next.get(group, 0)
        n = len(writers)
        for k in range(n):
            w = writers[(start + k) % n]
            if w.has_room(need):
                self._next[group] = (start + k + 1) % n
                return w
        return None

    def has_members(self, group: str) -> bool:
        return bool(self.groups.get(group))

    def drop_dead_readers(self) -> None:
        """Queue lanes never wait on their reader: nothing to drop."""


Route = FanoutRoute | QueueRoute
