"""Liveness and garbage collection: dead clients, finished lanes, orphans.

``sweep()`` runs periodically: it marks clients whose process is gone as dead, retires
lanes once nothing is left to deliver from them, and unlinks what nobody needs.
"""

from __future__ import annotations

import logging

import psutil

from mycelium.coordinator.consumers import Consumers
from mycelium.coordinator.model import holds
from mycelium.logs import fields
from mycelium.shm.layout import (
    LANE_CLOSED_Q,
    LANE_COUNT_Q,
    LANE_TIMEOUTS_Q,
    LANE_WRITE_Q,
    SLOT_CURSOR_Q,
)
from mycelium.shm.segment import Segment, unlink_quietly
from mycelium.topology import ConsumerEntry, LaneEntry

__all__ = ["Sweeper"]

log = logging.getLogger("mycelium.coordinator")


def _alive(pid: int, started: float) -> bool:
    try:
        proc = psutil.Process(pid)
        if started and abs(proc.create_time() - started) > 0.01:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Sweeper(Consumers):
    """Notices dead clients and retires what nothing needs any more."""

    def sweep(self) -> bool:
        """Mark dead clients, retire finished lanes, unlink orphans. True if anything changed."""
        changed = False
        for p in list(self.topo.producers):
            if p.alive and not _alive(p.pid, p.started):
                log.warning(
                    "producer %d %s (pid %d) died; draining its lanes",
                    p.id,
                    p.name,
                    p.pid,
                    extra=fields("producer_dead", producer=p.id, client=p.name, pid=p.pid),
                )
                self.remove_producer(p.id)
                changed = True
        for c in list(self.topo.consumers):
            if c.alive and not _alive(c.pid, c.started):
                log.warning(
                    "consumer %d %s (pid %d) on %s died",
                    c.id,
                    c.name,
                    c.pid,
                    c.topic,
                    extra=fields(
                        "consumer_dead", consumer=c.id, client=c.name, pid=c.pid, topic=c.topic
                    ),
                )
                self.remove_consumer(c.id)
                changed = True
        changed |= self._settle_hand_overs()
        changed |= self._expire_durables()
        for lane in list(self.topo.lanes):
            if self._lane_finished(lane):
                self._retire_lane(lane)
                changed = True
        changed |= self._forget_finished_clients()
        for name in self._drop_unconfigured_topics():
            log.info("removed topic %s: no longer configured and its clients left", name)
            changed = True
        return changed

    def _lane_finished(self, lane: LaneEntry) -> bool:
        seg = self._lanes.get(lane.uid)
        if seg is None:
            return True
        if lane.consumer:  # queue lane: finished when nothing more comes and all is read
            producer = self.producer(lane.producer)
            if not seg.q[LANE_CLOSED_Q] and producer is not None and producer.alive:
                return False
            view = self._consumers.get(lane.consumer)
            base = view.find_slot(lane.uid) if view is not None else None
            read = lane.resume_pos if view is None or base is None else view.q[base + SLOT_CURSOR_Q]
            return read >= seg.q[LANE_WRITE_Q]
        if not lane.draining:
            return False
        return all(
            self._drained_by(lane, seg, c)
            for c in self.topo.consumers
            if c.topic == lane.topic and holds(c)
        )

    def _drained_by(self, lane: LaneEntry, seg: Segment, c: ConsumerEntry) -> bool:
        view = self._consumers.get(c.id)
        if view is None:
            return True
        base = view.find_slot(lane.uid)
        if base is None:
            # Not attached yet: a lane older than the consumer is read from its end (nothing
            # to drain); a newer one from its start.
            return lane.uid < c.id or seg.q[LANE_COUNT_Q] == 0
        return view.q[base + SLOT_CURSOR_Q] >= seg.q[LANE_WRITE_Q]

    def _retire_lane(self, lane: LaneEntry) -> None:
        seg = self._lanes.pop(lane.uid, None)
        if seg is not None:
            self.retired_published[lane.topic] = (
                self.retired_published.get(lane.topic, 0) + seg.q[LANE_COUNT_Q]
            )
            timeouts = self.topo.retired_timeouts
            timeouts[lane.topic] = timeouts.get(lane.topic, 0) + seg.q[LANE_TIMEOUTS_Q]
            seg.close()
        unlink_quietly(lane.segment)
        self.topo.lanes = [x for x in self.topo.lanes if x.uid != lane.uid]
        log.info(
            "retired lane %d of %s",
            lane.uid,
            lane.topic,
            extra=fields("lane_retired", lane=lane.uid, topic=lane.topic, producer=lane.producer),
        )

    def _forget_finished_clients(self) -> bool:
        """Drop dead consumers and producers that no lane refers to any more."""
        in_use_c = {c for lane in self.topo.lanes for c in (lane.consumer, lane.previous)}
        in_use_p = {lane.producer for lane in self.topo.lanes}
        changed = False
        for c in list(self.topo.consumers):
            if not holds(c) and c.id not in in_use_c:
                view = self._consumers.pop(c.id, None)
                if view is not None:
                    self.retired_delivered[c.topic] = (
                        self.retired_delivered.get(c.topic, 0) + view.received()
                    )
                    view.close()
                self.topo.consumers = [x for x in self.topo.consumers if x.id != c.id]
                self._drop_consumer_objects(c.segment, c.doorbell)
                changed = True
        for p in list(self.topo.producers):
            if not p.alive and p.id not in in_use_p:
                self.topo.producers = [x for x in self.topo.producers if x.id != p.id]
                changed = True
        return changed
