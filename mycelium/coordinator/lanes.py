"""Producers and their lanes: one lane per topic and producer, or per consumer (queue)."""

from __future__ import annotations

import logging

import msgspec

from mycelium.control.limits import LANES_PER_CONSUMER
from mycelium.coordinator.model import StateCore, holds, process_started
from mycelium.errors import LimitExceeded, SegmentError
from mycelium.logs import fields
from mycelium.shm.lane_header import create_lane_segment
from mycelium.shm.segment import Segment, fresh_token
from mycelium.topology import ConsumerEntry, LaneEntry, ProducerEntry, TopicEntry

__all__ = ["LaneBook"]

log = logging.getLogger("mycelium.coordinator")


class LaneBook(StateCore):
    """Producers join and leave; each topic they register gets its lanes."""

    def add_producer(self, pid: int, name: str, resume_id: int = 0) -> ProducerEntry:
        """A producer connects (or reconnects: ``resume_id`` names its old entry)."""
        old = self.producer(resume_id) if resume_id else None
        if old is not None and old.pid == pid and old.alive:
            return old
        entry = ProducerEntry(id=self._new_id(), pid=pid, started=process_started(pid), name=name)
        self.topo.producers.append(entry)
        return entry

    def register_topic(self, producer_id: int, topic: str) -> None:
        """The producer will publish on ``topic``: create its lanes. Raises UnknownTopic."""
        t = self.topic(topic)
        p = self.producer(producer_id)
        if p is None or not p.alive:
            raise SegmentError(f"producer {producer_id} is not registered")
        if topic in p.topics:
            return
        readers = [c for c in self.topo.consumers if c.topic == topic and holds(c)]
        if t.routing == "queue":
            for c in readers:
                self._check_lane_room(topic, c.id)
        else:
            self._check_lane_room(topic, 0)
        self._replace_producer(msgspec.structs.replace(p, topics=(*p.topics, topic)))
        if t.routing == "queue":
            for c in readers:
                self._add_lane(t, p, c)
        else:
            self._add_lane(t, p, None)

    def _check_lane_room(self, topic: str, consumer: int) -> None:
        """Refuse a lane that a consumer could not read: it has LANES_PER_CONSUMER slots.

        Fanout (``consumer`` 0): every consumer reads every lane of the topic, draining
        ones included. Queue: the consumer reads one lane per producer. Raises
        LimitExceeded before anything is created, so no consumer is affected.
        """
        lanes = sum(1 for x in self.topo.lanes if x.topic == topic and x.consumer == consumer)
        if lanes >= LANES_PER_CONSUMER:
            raise LimitExceeded(
                f"topic {topic!r} already has {lanes} lanes (producers) per consumer, "
                f"the most a consumer can read",
                limit="lanes_per_topic",
                maximum=LANES_PER_CONSUMER,
            )

    def _replace_producer(self, entry: ProducerEntry) -> None:
        self.topo.producers = [entry if p.id == entry.id else p for p in self.topo.producers]

    def _add_lane(self, t: TopicEntry, p: ProducerEntry, c: ConsumerEntry | None) -> None:
        uid = self._new_id()
        name = self._name("L", uid, fresh_token())
        seg = create_lane_segment(
            name,
            t.lane_bytes,
            t.max_message_size,
            uid,
            p.pid,
            lossy=t.lossy,
            mode=self.mode,
        )
        self._created.append(("lane", name))
        seg.close()
        self._lanes[uid] = Segment.attach_lane(name)
        log.debug(
            "created lane %d of %s for producer %d %s",
            uid,
            t.name,
            p.id,
            p.name,
            extra=fields("lane_created", lane=uid, topic=t.name, producer=p.id, client=p.name,
                         pid=p.pid),
        )  # fmt: skip
        self.topo.lanes.append(
            LaneEntry(
                uid=uid,
                topic=t.name,
                producer=p.id,
                segment=name,
                consumer=c.id if c else 0,
                group=c.group if c else "",
            )
        )

    def remove_producer(self, producer_id: int) -> None:
        """The producer left (cleanly or not): its lanes drain, then go."""
        p = self.producer(producer_id)
        if p is None or not p.alive:
            return
        self._replace_producer(msgspec.structs.replace(p, alive=False))
        self.topo.lanes = [
            msgspec.structs.replace(lane, draining=True) if lane.producer == producer_id else lane
            for lane in self.topo.lanes
        ]
