"""What every part of the coordinator's bookkeeping shares: the model and its changes.

How this works
--------------
``StateCore`` holds the ``Topology`` the coordinator publishes to the registry, the
segments behind it (lanes and consumer state segments, mapped read-only) and the
lookups and all-or-nothing ``change()`` that the producer, consumer, hand-over,
durable and sweep parts (``lanes.py`` .. ``sweep.py``) build on; ``BrokerState``
(``topology.py``) puts them together. Single-threaded by design.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil

from mycelium.config import BrokerConfig, TopicConfig
from mycelium.errors import UnknownTopic
from mycelium.shm.consumer_state import ConsumerStateView
from mycelium.shm.registry import Registry
from mycelium.shm.segment import Segment, segment_name, unlink_quietly
from mycelium.topology import ConsumerEntry, LaneEntry, ProducerEntry, TopicEntry, Topology

__all__ = ["DEFAULT_GROUP", "StateCore", "holds", "process_started", "topic_entry"]

DEFAULT_GROUP = "default"


def topic_entry(cfg: TopicConfig, lane_bytes: int) -> TopicEntry:
    """The registry's view of a configured topic."""
    return TopicEntry(
        name=cfg.name,
        routing=str(cfg.routing),
        max_message_size=cfg.max_message_size,
        lane_bytes=lane_bytes,
        lossy=cfg.lossy,
        backpressure_timeout_ms=cfg.backpressure_timeout_ms,
        timestamps=cfg.timestamps,
    )


def process_started(pid: int) -> float:
    """The create time of ``pid`` (0.0 if it does not exist): liveness proof against reuse."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def holds(c: ConsumerEntry) -> bool:
    """Whether producers must keep ``c``'s position: it is alive, or durable and away."""
    return c.alive or bool(c.durable)


class StateCore:
    """The topology, the segments behind it, lookups and the all-or-nothing change."""

    broker_id: str
    config: BrokerConfig
    registry: Registry
    mode: int
    topo: Topology
    _lanes: dict[int, Segment]
    _consumers: dict[int, ConsumerStateView]
    #: Messages counted on lanes that have since been removed, per topic (for stats);
    #: they live in the topology, so an adopting coordinator keeps counting on.
    retired_published: dict[str, int]
    retired_delivered: dict[str, int]
    #: Segments created since the current ``change()`` began: its rollback unlinks them.
    _created: list[tuple[str, str]]

    def _unconfigured(self, topic: str) -> bool:
        return all(t.name != topic for t in self.config.topics)

    def _drop_unconfigured_topics(self) -> list[str]:
        """Remove topics the config no longer names once nothing uses them; their names."""
        gone = [
            t.name
            for t in self.topo.topics
            if self._unconfigured(t.name)
            and not self._has_clients(t.name)
            and not any(lane.topic == t.name for lane in self.topo.lanes)
        ]
        self.topo.topics = [t for t in self.topo.topics if t.name not in gone]
        return gone

    def _has_clients(self, topic: str) -> bool:
        return any(c.topic == topic for c in self.topo.consumers) or any(
            topic in p.topics for p in self.topo.producers
        )

    def topic(self, name: str) -> TopicEntry:
        """The topic called ``name``; raises UnknownTopic."""
        entry = self.topo.topic(name)
        if entry is None:
            raise UnknownTopic(name, tuple(t.name for t in self.topo.topics))
        return entry

    def publish(self) -> int:
        """Publish the current topology to the registry; returns the generation.

        Raises LimitExceeded if it no longer fits the registry buffer.
        """
        self.topo.coordinator_pid = psutil.Process().pid
        return self.registry.publish(self.topo)

    @contextlib.contextmanager
    def change(self) -> Iterator[None]:
        """Apply one client request all or nothing, then publish it.

        If anything inside (or the publish: a topology too large for the registry)
        raises, the topology is put back as it was and every segment created meanwhile
        is unmapped and unlinked: a refused request leaves no entry and no segment.
        """
        topo = self.topo
        saved = (topo.next_id, list(topo.producers), list(topo.consumers), list(topo.lanes))
        self._created = []
        try:
            yield
            self.publish()
        except BaseException:
            topo.next_id, topo.producers, topo.consumers, topo.lanes = saved
            for kind, name in self._created:
                self._forget_created(kind, name)
            raise
        finally:
            self._created = []

    def _forget_created(self, kind: str, name: str) -> None:
        """Roll back one segment a failed change created."""
        if kind == "lane":
            for uid, seg in list(self._lanes.items()):
                if seg.name == name:
                    seg.close()
                    del self._lanes[uid]
            unlink_quietly(name)
            return
        for cid, view in list(self._consumers.items()):
            if view.seg.name == name:
                view.close()
                del self._consumers[cid]
        self._drop_consumer_objects(*name.split(" ", 1))

    def _drop_consumer_objects(self, segment: str, doorbell: str) -> None:
        """Unlink a consumer's segment, and its doorbell unless an entry still rings it
        (the subscriptions of a multi-topic consumer share one): call it once the entry
        is out of the topology."""
        unlink_quietly(segment)
        if not any(c.doorbell == doorbell for c in self.topo.consumers):
            unlink_quietly("sem:" + doorbell)

    def _new_id(self) -> int:
        uid = self.topo.next_id
        self.topo.next_id += 1
        return uid

    def _name(self, kind: str, uid: int, token: str) -> str:
        """An unpredictable name: the id for people, the token against squatters."""
        return segment_name(self.broker_id, kind, f"{uid}.{token}")

    def producer(self, pid: int) -> ProducerEntry | None:
        for p in self.topo.producers:
            if p.id == pid:
                return p
        return None

    def consumer(self, cid: int) -> ConsumerEntry | None:
        for c in self.topo.consumers:
            if c.id == cid:
                return c
        return None

    def live_clients(self) -> int:
        return sum(p.alive for p in self.topo.producers) + sum(c.alive for c in self.topo.consumers)

    def lane_segments(self) -> Iterator[tuple[LaneEntry, Segment]]:
        for lane in self.topo.lanes:
            seg = self._lanes.get(lane.uid)
            if seg is not None:
                yield lane, seg

    def consumer_views(self) -> Iterator[tuple[ConsumerEntry, ConsumerStateView]]:
        for c in self.topo.consumers:
            view = self._consumers.get(c.id)
            if view is not None:
                yield c, view
