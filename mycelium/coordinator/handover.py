"""Queue hand-over: a departed member's lanes go to a member of its group.

The heir reads on from the departed slot's cursor (see ``client/redelivery.py``); the
lane takes no new messages and is removed once read.
"""

from __future__ import annotations

import logging

import msgspec

from mycelium.coordinator.lanes import LaneBook
from mycelium.logs import fields
from mycelium.shm.layout import SLOT_COUNT_Q, SLOT_CURSOR_Q, SLOT_READ_COUNT_Q
from mycelium.topology import ConsumerEntry, LaneEntry

__all__ = ["HandOver"]

log = logging.getLogger("mycelium.coordinator")


class HandOver(LaneBook):
    """Hands a departed consumer's lanes to its group and settles them once claimed."""

    def _hand_over_lanes(self, c: ConsumerEntry) -> None:
        cid = c.id
        heirs = [
            x for x in self.topo.consumers if x.alive and (x.topic, x.group) == (c.topic, c.group)
        ]
        for lane in [x for x in self.topo.lanes if x.consumer == cid and heirs]:
            held = {h.id: 0 for h in heirs}
            for x in self.topo.lanes:
                if x.consumer in held:
                    held[x.consumer] += 1
            heir = min(heirs, key=lambda h: (held[h.id], h.id))
            self._hand_over(lane, heir)

    def _hand_over(self, lane: LaneEntry, heir: ConsumerEntry) -> None:
        """Give ``lane`` to ``heir``: it reads on from where the departed holder's slot
        stands (or, if that holder never claimed one, from where its predecessor's does).
        The lane takes no new messages (its producer closes it); it is removed once read."""
        view = self._consumers.get(lane.consumer)
        base = view.find_slot(lane.uid) if view is not None else None
        if view is not None and base is not None:
            q = view.q
            prev, pos, count = lane.consumer, q[base + SLOT_CURSOR_Q], q[base + SLOT_COUNT_Q]
            seen = max(count, q[base + SLOT_READ_COUNT_Q])
        elif lane.previous:
            prev, pos, count = lane.previous, lane.resume_pos, lane.resume_count
            seen = lane.resume_seen
        else:  # never attached: the lane was made for it, so everything in it is unread
            prev, pos, count, seen = lane.consumer, 0, 0, 0
        moved = msgspec.structs.replace(
            lane,
            consumer=heir.id,
            draining=True,
            previous=prev,
            resume_pos=pos,
            resume_count=count,
            resume_seen=seen,
        )
        self.topo.lanes = [moved if x.uid == lane.uid else x for x in self.topo.lanes]
        log.info(
            "handed lane %d of %s from consumer %d to %d at message %d",
            lane.uid,
            lane.topic,
            lane.consumer,
            heir.id,
            count,
            extra=fields("lane_handed_over", lane=lane.uid, topic=lane.topic, consumer=heir.id),
        )

    def _settle_hand_overs(self) -> bool:
        """Stop naming a lane's previous holder once the new one has claimed its slot."""
        changed = False
        for lane in list(self.topo.lanes):
            view = self._consumers.get(lane.consumer)
            if lane.previous and view is not None and view.find_slot(lane.uid) is not None:
                settled = msgspec.structs.replace(lane, previous=0)
                self.topo.lanes = [settled if x.uid == lane.uid else x for x in self.topo.lanes]
                changed = True
        return changed
