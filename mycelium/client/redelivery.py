"""Redelivery: a departed queue consumer's unread messages, handed to its group.

How this works
--------------
When a queue consumer leaves or dies, the producer reads its lane's unread frames back
(from the consumer's last stored cursor up to our write cursor), closes the lane, and
keeps the copies here per (topic, group) until a member of the group has room. Queue
lanes never gate their writer on their reader, so the frames are still intact when we
read them back. Older than anything published after, they go first: every publish
offers them before its own message. Delivery guarantees (acks, durable consumers,
redelivery lanes) build on this module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from mycelium.client.routes import QueueRoute
from mycelium.errors import MyceliumError
from mycelium.shm.consumer_state import ConsumerStateView
from mycelium.shm.layout import SLOT_CURSOR_Q
from mycelium.shm.recovery import unread_frames
from mycelium.shm.registry import LaneEntry
from mycelium.shm.writer import LaneWriter

__all__ = ["Redelivery"]

log = logging.getLogger("mycelium.client")


class Redelivery:
    """Messages of departed queue consumers, waiting for a member of their group."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], list[bytes]] = {}

    def __bool__(self) -> bool:
        return bool(self.pending)

    def __len__(self) -> int:
        return sum(len(v) for v in self.pending.values())

    def take_back(
        self, writer: LaneWriter, lane: LaneEntry, view: ConsumerStateView | None
    ) -> None:
        """The consumer of ``lane`` left: keep copies of what it did not read, close the lane."""
        start = 0
        if view is not None:
            base = view.find_slot(lane.uid)
            if base is not None:
                start = view.q[base + SLOT_CURSOR_Q]
        try:
            frames = unread_frames(writer.seg, start)
        except MyceliumError as exc:
            log.error("could not recover unread messages of lane %s: %s", lane.segment, exc)
            frames = []
        if frames:
            log.info(
                "re-dispatching %d unread messages of consumer %d on %s",
                len(frames),
                lane.consumer,
                lane.topic,
            )
            self.pending.setdefault((lane.topic, lane.group), []).extend(frames)
        writer.mark_closed()

    def offer(self, routes: Mapping[str, QueueRoute]) -> tuple[str, str] | None:
        """Hand on what fits now, oldest first; returns a (topic, group) whose member had
        no room (its messages stay), or None when nothing deliverable is left."""
        stuck = None
        for key, frames in list(self.pending.items()):
            route = routes.get(key[0])
            if route is None or not route.has_members(key[1]):
                continue  # the group has no member yet
            sent = 0
            for frame in frames:
                if not route.offer_to(key[1], frame):
                    stuck = key
                    break
                sent += 1
            del frames[:sent]
            if not frames:
                del self.pending[key]
        return stuck
